"""The loss log (``log.jsonl``, one JSON object per logged step) and its plot (``loss.png``).

The plot needs matplotlib, an optional dependency (``pip install 'stable-audio-toolkit[train]'``);
without it the log is still written and the plot is skipped with one message saying so.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from ..atomic_files import atomic_write, write_bytes

LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
NOT_PLOTTED = {"step", "lr", "time", "elapsed", "items_per_s", "steps_per_s", "epoch"}


class MetricsLog:
    """Appends records to ``out_dir/log.jsonl``; a disabled log (non-zero ranks) does nothing."""

    def __init__(self, out_dir: str | Path, enabled: bool = True):
        self.path = Path(out_dir) / LOG_FILE
        self.plot_path = Path(out_dir) / PLOT_FILE
        self.enabled = enabled
        self._warned = False
        self._plotted_at = -math.inf

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written by a run that died before its next checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in read_log(self.path) if line.get("step", 0) <= step]
        write_bytes(self.path, "".join(json.dumps(record) + "\n" for record in kept).encode())

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def plot(self, min_interval: float = 0.0) -> Path | None:
        """Redraw ``loss.png`` from the whole log, unless it was drawn less than ``min_interval``
        seconds ago; None when skipped or (after one message) without matplotlib."""
        if not self.enabled or not self.path.is_file():
            return None
        if time.monotonic() - self._plotted_at < min_interval:
            return None
        self._plotted_at = time.monotonic()
        try:
            return plot_log(self.path, self.plot_path)
        except ImportError:
            if not self._warned:
                print("note: loss.png not written: matplotlib is not installed "
                      "(pip install matplotlib, or the 'train' extra)", file=sys.stderr)
                self._warned = True
            return None


def read_log(path: str | Path) -> list[dict]:
    """The records of a log, skipping a torn last line (a process killed mid-write)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def plot_log(log_path: str | Path, png_path: str | Path) -> Path:
    """Loss curves (one per logged loss) and the learning rate against the step. Raises ImportError
    without matplotlib. Uses the Agg canvas directly, never pyplot, so a host's backend is untouched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_log(log_path)
    keys = sorted({key for record in records for key, value in record.items()
                   if key not in NOT_PLOTTED and not key.endswith("grad_norm")
                   and isinstance(value, (int, float))})
    figure = Figure(figsize=(9, 6), dpi=100)
    FigureCanvasAgg(figure)
    losses = figure.add_subplot(2, 1, 1)
    rate = figure.add_subplot(2, 1, 2, sharex=losses)
    for key in keys:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))
                  and math.isfinite(r[key])]
        if points:
            losses.plot(*zip(*points), label=key, linewidth=1)
    lr_points = [(r["step"], r["lr"]) for r in records if isinstance(r.get("lr"), (int, float))]
    if lr_points:
        rate.plot(*zip(*lr_points), color="tab:gray", linewidth=1)
    losses.set_ylabel("loss")
    if keys:
        losses.legend(fontsize="small", loc="upper right")
    losses.grid(alpha=0.3)
    rate.set_ylabel("learning rate")
    rate.set_xlabel("step")
    rate.grid(alpha=0.3)
    figure.tight_layout()
    png_path = Path(png_path)
    atomic_write(png_path, lambda temp: figure.savefig(temp, format="png"))
    return png_path
