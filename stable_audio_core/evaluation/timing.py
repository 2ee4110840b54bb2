"""The paper's timing experiment (section 6.3): does the audio end where it was asked to?

For each requested duration the model generates a full window (no trimming); the energy-based
silence detector of `postprocess.detect_content_end` finds where the content ends, and the error is
that end minus the request. The summary is the mean absolute error in seconds, overall and per
duration bin, as a Markdown table and a scatter plot of detected against requested end.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..atomic_files import atomic_write
from ..errors import InputError
from ..audio.postprocess import detect_content_end


@dataclass(frozen=True)
class TimingRow:
    prompt: str
    requested: float
    detected: float
    seed: int

    @property
    def error(self) -> float:
        return self.detected - self.requested

    def as_dict(self) -> dict:
        return {**asdict(self), "error": self.error}


@dataclass(frozen=True)
class TimingSummary:
    count: int
    mean_absolute_error: float
    median_absolute_error: float
    mean_error: float
    bins: list[dict]   # {"from", "to", "count", "mae", "mean_error"} per requested-duration bin


def spread_durations(count: int, shortest: float, longest: float) -> list[float]:
    """`count` requested durations evenly spread over [shortest, longest], rounded to 0.1 s."""
    if count < 1:
        raise InputError(f"the timing experiment needs at least one generation, got count={count}")
    if not 0 < shortest <= longest:
        raise InputError(f"durations must satisfy 0 < shortest <= longest, got {shortest} and {longest}")
    if count == 1:
        return [round(longest, 1)]
    step = (longest - shortest) / (count - 1)
    return [round(shortest + i * step, 1) for i in range(count)]


def measure_timing(
    generate_window: Callable[[str, float, int], tuple[torch.Tensor, int]],
    prompts: Sequence[str],
    durations: Sequence[float],
    *,
    seed: int = 0,
    threshold_db: float = -60.0,
    progress: Callable[[int, int], None] | None = None,
) -> list[TimingRow]:
    """Run one generation per duration (prompts taken in turn) and detect where each ends.

    `generate_window(prompt, seconds_total, seed)` returns the untrimmed audio Tensor[C, T] and its
    sample rate.
    """
    if not prompts:
        raise InputError("the timing experiment needs at least one prompt")
    rows = []
    for index, requested in enumerate(durations):
        prompt = prompts[index % len(prompts)]
        item_seed = seed + index
        audio, sample_rate = generate_window(prompt, float(requested), item_seed)
        detected = detect_content_end(audio, sample_rate, threshold_db=threshold_db)
        rows.append(TimingRow(prompt=prompt, requested=float(requested), detected=detected, seed=item_seed))
        if progress is not None:
            progress(index + 1, len(durations))
    return rows


def summarise(rows: Sequence[TimingRow], bin_seconds: float = 1.0) -> TimingSummary:
    """Mean/median absolute error overall, and per bin of requested duration."""
    if not rows:
        raise InputError("no timing rows to summarise")
    errors = torch.tensor([row.error for row in rows], dtype=torch.float64)
    bins: dict[int, list[TimingRow]] = {}
    for row in rows:
        bins.setdefault(int(math.floor(row.requested / bin_seconds)), []).append(row)
    table = []
    for key in sorted(bins):
        members = torch.tensor([row.error for row in bins[key]], dtype=torch.float64)
        table.append({
            "from": key * bin_seconds, "to": (key + 1) * bin_seconds, "count": len(bins[key]),
            "mae": float(members.abs().mean()), "mean_error": float(members.mean()),
        })
    return TimingSummary(
        count=len(rows),
        mean_absolute_error=float(errors.abs().mean()),
        median_absolute_error=float(errors.abs().median()),
        mean_error=float(errors.mean()),
        bins=table,
    )


def markdown_table(summary: TimingSummary) -> str:
    """The per-bin table and the overall line, as Markdown."""
    lines = [
        "| requested (s) | generations | mean abs error (s) | mean error (s) |",
        "|---|---|---|---|",
    ]
    for row in summary.bins:
        lines.append(f"| {row['from']:.0f}-{row['to']:.0f} | {row['count']} | {row['mae']:.2f} | "
                     f"{row['mean_error']:+.2f} |")
    lines.append(f"| **all** | **{summary.count}** | **{summary.mean_absolute_error:.2f}** | "
                 f"**{summary.mean_error:+.2f}** |")
    return "\n".join(lines)


def plot_timing(rows: Sequence[TimingRow], path: str | Path, title: str = "Timing accuracy") -> Path:
    """Scatter of detected against requested end, with the identity line, as a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise InputError("plotting needs matplotlib: pip install matplotlib") from error
    path = Path(path)
    requested = [row.requested for row in rows]
    detected = [row.detected for row in rows]
    top = max(requested + detected) * 1.05
    figure, axes = plt.subplots(figsize=(5, 5), dpi=120)
    axes.plot([0, top], [0, top], color="0.6", linestyle="--", label="ideal")
    axes.scatter(requested, detected, s=14, alpha=0.8, label="generations")
    axes.set_xlabel("requested seconds_total (s)")
    axes.set_ylabel("detected end of audio (s)")
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_title(title)
    axes.legend(loc="upper left")
    figure.tight_layout()
    try:
        atomic_write(path, lambda temp: figure.savefig(temp, format="png"))
    finally:
        plt.close(figure)
    return path
