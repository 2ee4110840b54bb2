"""Evaluate a folder of generations against a reference folder (or saved reference statistics).

Metrics (stable-audio-metrics' settings): ``fd_openl3`` (stereo: 1 s windows at 0.5 s hop, L and R
embedded separately and concatenated to 1024-d; mono copied to both), ``kl_passt`` (files paired
by name with the reference), ``clap`` (needs prompts), ``timing`` (needs each file's requested
``seconds_total`` in the prompts file). Every embedding is cached per file under ``cache_dir``, keyed
on the file's path, size and modification time and the metric's settings, so adding files computes
only the new ones. ``save_reference_stats`` writes the reference side (OpenL3 mean and covariance
as ``mu_ref``/``sigma_ref`` like the reference's .npz, PaSST probabilities per file) for reuse.
``load_evaluators`` loads the networks from local weight files and ``write_reports`` writes
report.json / report.md / distributions.png: the CLI and the evaluation node share both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio.io import read_audio, resample
from ..atomic_files import atomic_write, write_bytes
from ..errors import InputError
from ..audio.postprocess import detect_content_end
from .metrics import (
    CLAP_RATE, OPENL3_RATE, PASST_RATE, clap_round_trip, cosine_scores, embedding_statistics, frechet_distance,
    kl_divergence, openl3_frames, passt_windows, peak_normalize,
)

METRICS = ("fd_openl3", "kl_passt", "clap", "timing")
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


@dataclass
class Evaluators:
    """The networks a run needs (None where the metric is not asked for)."""
    openl3: torch.nn.Module | None = None
    passt: torch.nn.Module | None = None
    clap: object | None = None  # clap_score.ClapScorer
    openl3_hop: float = 0.5
    batch_size: int = 16
    clap_seed: int = 0
    tag: str = ""  # names the weights in cache keys


@dataclass
class Prompt:
    text: str | None = None
    seconds_total: float | None = None


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    per_file: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def audio_files(folder: str | Path) -> dict[str, Path]:
    """Audio files in ``folder`` by stem (the id that pairs generations, references and prompts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder of audio files: {folder}")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES}
    if not files:
        raise InputError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in {folder}")
    return files


def read_prompts(path: str | Path) -> dict[str, Prompt]:
    """JSON object: {file stem: "prompt"} or {file stem: {"prompt": ..., "seconds_total": ...}}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"could not read prompts file {path} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object mapping file names (without extension) to prompts")
    out = {}
    for stem, value in data.items():
        if isinstance(value, str):
            out[stem] = Prompt(value)
        elif isinstance(value, dict):
            seconds = value.get("seconds_total")
            out[stem] = Prompt(value.get("prompt"), None if seconds is None else float(seconds))
        else:
            raise InputError(f"{path}: entry {stem!r} must be a string or an object with 'prompt'")
    return out


class EmbeddingCache:
    """One .npy per (file, metric settings) under ``folder``; None disables caching."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None

    def key(self, path: Path, settings: str) -> str:
        stat = path.stat()
        text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{settings}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, path: Path, settings: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if self.folder is None:
            return compute()
        target = self.folder / f"{path.stem}-{self.key(path, settings)}.npy"
        if target.is_file():
            return np.load(target)
        value = np.asarray(compute())
        atomic_write(target, lambda temp: _save_npy(temp, value))
        return value


def _load(path: Path) -> tuple[torch.Tensor, int]:
    audio, rate = read_audio(path)
    if audio.numel() == 0:
        raise InputError(f"{path} holds no samples")
    return audio.float(), rate


@torch.no_grad()
def openl3_embeddings(model: torch.nn.Module, audio: torch.Tensor, rate: int, hop: float = 0.5,
                      batch_size: int = 16) -> np.ndarray:
    """Tensor[C, T] -> [windows, 1024]: peak-normalised, each of L and R embedded at 48 kHz
    (mono copied to both sides), concatenated per window."""
    audio = peak_normalize(audio)
    sides = [audio[0], audio[0]] if audio.shape[0] == 1 else [audio[0], audio[1]]
    device = next(model.parameters()).device
    out = []
    for side in sides:
        frames = openl3_frames(resample(side, rate, OPENL3_RATE), hop)
        out.append(torch.cat([model(frames[i:i + batch_size].to(device)).cpu()
                              for i in range(0, frames.shape[0], batch_size)]))
    return torch.cat(out, dim=1).double().numpy()


@torch.no_grad()
def passt_probabilities(model: torch.nn.Module, audio: torch.Tensor, rate: int) -> np.ndarray:
    """Tensor[C, T] -> [527]: mono 32 kHz, peak-normalised, logits of the 10 s windows averaged, softmax."""
    mono = peak_normalize(resample(audio.mean(dim=0), rate, PASST_RATE))
    device = next(model.parameters()).device
    logits = torch.stack([model.logits(w[None].to(device))[0].cpu() for w in passt_windows(mono)])
    return torch.softmax(logits.mean(dim=0), dim=0).double().numpy()


def clap_audio_input(audio: torch.Tensor, rate: int) -> torch.Tensor:
    """Tensor[C, T] -> mono 48 kHz Tensor[T], peak-normalised, through int16 and back."""
    return clap_round_trip(peak_normalize(resample(audio.mean(dim=0), rate, CLAP_RATE)))


ProgressCallback = Callable[[str, int, int], None]  # (metric, files done, files in this pass)


def _progress(iterable, total: int, desc: str, show: bool, on_progress: ProgressCallback | None = None):
    if show:
        from tqdm import tqdm
        iterable = tqdm(iterable, total=total, desc=desc, unit="file")
    for done, item in enumerate(iterable, start=1):
        yield item
        if on_progress is not None:
            on_progress(desc, done, total)


def _embed_folder(files: dict[str, Path], metric: str, evaluators: Evaluators, cache: EmbeddingCache,
                  show_progress: bool, on_progress: ProgressCallback | None = None) -> dict[str, np.ndarray]:
    out = {}
    settings = f"{metric}|{evaluators.tag}|hop={evaluators.openl3_hop}"
    for stem, path in _progress(files.items(), len(files), metric, show_progress, on_progress):
        def compute(path=path):
            audio, rate = _load(path)
            if metric == "fd_openl3":
                return openl3_embeddings(evaluators.openl3, audio, rate, evaluators.openl3_hop, evaluators.batch_size)
            return passt_probabilities(evaluators.passt, audio, rate)
        out[stem] = cache.get(path, settings, compute)
    return out


def reference_stats(reference: str | Path, evaluators: Evaluators, metrics: list[str],
                    cache: EmbeddingCache, show_progress: bool = True,
                    on_progress: ProgressCallback | None = None) -> dict[str, np.ndarray]:
    """A reference folder (computed, cached) or a saved .npz -> {"mu_ref", "sigma_ref", "passt_ids",
    "passt_probs"} (the keys that are needed)."""
    reference = Path(reference)
    if reference.is_file():
        with np.load(reference, allow_pickle=False) as data:
            stats = {k: data[k] for k in data.files}
        if "fd_openl3" in metrics and "mu_ref" not in stats:
            raise InputError(f"{reference} has no OpenL3 statistics (mu_ref, sigma_ref); recompute it with fd_openl3")
        if "kl_passt" in metrics and "passt_probs" not in stats:
            raise InputError(f"{reference} has no PaSST probabilities; recompute it with kl_passt")
        return stats
    files = audio_files(reference)
    stats: dict[str, np.ndarray] = {}
    if "fd_openl3" in metrics:
        embeddings = _embed_folder(files, "fd_openl3", evaluators, cache, show_progress, on_progress)
        stats["mu_ref"], stats["sigma_ref"] = embedding_statistics(np.concatenate(list(embeddings.values())))
    if "kl_passt" in metrics:
        probs = _embed_folder(files, "kl_passt", evaluators, cache, show_progress, on_progress)
        stats["passt_ids"] = np.array(list(probs), dtype=str)
        stats["passt_probs"] = np.stack(list(probs.values()))
    return stats


def _save_npy(path: str, value: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to the temp name
        np.save(handle, value)


def save_reference_stats(stats: dict[str, np.ndarray], path: str | Path) -> Path:
    def write(temp: str) -> None:
        with open(temp, "wb") as handle:  # a handle: np.savez would append ".npz" to the temp name
            np.savez(handle, **stats)
    return atomic_write(path, write)


def evaluate(generated: str | Path, reference: str | Path | None, metrics: list[str], evaluators: Evaluators,
             prompts: dict[str, Prompt] | None = None, cache_dir: str | Path | None = None,
             show_progress: bool = True,
             on_progress: ProgressCallback | None = None) -> tuple[EvalResult, dict[str, np.ndarray]]:
    """Compute ``metrics`` for the files in ``generated``; returns the result and the reference stats.
    ``on_progress(metric, done, total)`` is called after each file of each pass."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise InputError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    needs_reference = [m for m in metrics if m in ("fd_openl3", "kl_passt")]
    if needs_reference and reference is None:
        raise InputError(f"{', '.join(needs_reference)} need --reference (a folder of audio or a saved .npz)")
    if any(m in metrics for m in ("clap", "timing")) and not prompts:
        raise InputError("clap and timing need --prompts (JSON: file name -> prompt / seconds_total)")
    files = audio_files(generated)
    result = EvalResult()
    per_file = {stem: {} for stem in files}
    stats = {}
    if needs_reference:
        ref_cache = EmbeddingCache(Path(cache_dir) / "reference" if cache_dir else None)
        stats = reference_stats(reference, evaluators, needs_reference, ref_cache, show_progress, on_progress)
    gen_cache = EmbeddingCache(Path(cache_dir) / "generated" if cache_dir else None)
    if "fd_openl3" in metrics:
        embeddings = _embed_folder(files, "fd_openl3", evaluators, gen_cache, show_progress, on_progress)
        mu, sigma = embedding_statistics(np.concatenate(list(embeddings.values())))
        result.metrics["fd_openl3"] = frechet_distance(mu, sigma, stats["mu_ref"], stats["sigma_ref"])
        result.counts["fd_openl3"] = len(embeddings)
        for stem, emb in embeddings.items():  # how far each file's mean sits from the reference mean
            per_file[stem]["openl3_mean_distance"] = float(np.linalg.norm(emb.mean(axis=0) - stats["mu_ref"]))
    if "kl_passt" in metrics:
        reference_probs = dict(zip(stats["passt_ids"].tolist(), stats["passt_probs"]))
        paired = {s: p for s, p in files.items() if s in reference_probs}
        if not paired:
            raise InputError("kl_passt pairs files by name, and no generated file has a reference of the same name")
        probs = _embed_folder(paired, "kl_passt", evaluators, gen_cache, show_progress, on_progress)
        values = kl_divergence(torch.from_numpy(np.stack(list(probs.values()))),
                               torch.from_numpy(np.stack([reference_probs[s] for s in probs])))
        for stem, value in zip(probs, values.tolist()):
            per_file[stem]["kl_passt"] = value
        result.metrics["kl_passt"] = float(values.mean())
        result.counts["kl_passt"] = len(probs)
    if "clap" in metrics:
        scorer = evaluators.clap
        with_text = [s for s in files if prompts.get(s) and prompts[s].text]
        if not with_text:
            raise InputError("clap: no generated file has a prompt in the prompts file")
        texts = scorer.text_embeddings([prompts[s].text for s in with_text])
        for index, stem in enumerate(_progress(with_text, len(with_text), "clap", show_progress,
                                                             on_progress)):
            audio, rate = _load(files[stem])
            sound = scorer.audio_embeddings([clap_audio_input(audio, rate)], CLAP_RATE, seed=evaluators.clap_seed)
            per_file[stem]["clap"] = float(cosine_scores(sound.cpu(), texts[index:index + 1].cpu())[0])
        result.metrics["clap"] = float(np.mean([per_file[s]["clap"] for s in with_text]))
        result.counts["clap"] = len(with_text)
    if "timing" in metrics:
        timed = [s for s in files if prompts.get(s) and prompts[s].seconds_total is not None]
        if not timed:
            raise InputError("timing: no entry of the prompts file gives seconds_total")
        for stem in timed:
            audio, rate = _load(files[stem])
            detected = detect_content_end(audio, rate)
            per_file[stem]["timing_error"] = detected - prompts[stem].seconds_total
        errors = [abs(per_file[s]["timing_error"]) for s in timed]
        result.metrics["timing_mae"] = float(np.mean(errors))
        result.counts["timing_mae"] = len(timed)
    result.per_file = {s: v for s, v in per_file.items() if v}
    return result, stats


def load_evaluators(metrics: list[str], openl3_weights: str | Path | None = None,
                    passt_weights: str | Path | None = None, clap: str | Path | None = None,
                    clap_tokenizer: str | Path | None = None, device: torch.device | str = "cpu",
                    openl3_hop: float = 0.5, clap_seed: int = 0) -> Evaluators:
    """The networks ``metrics`` need, from local weight files (nothing is downloaded); the
    OpenL3 and PaSST files' paths and modification times name the cache entries."""
    evaluators = Evaluators(openl3_hop=openl3_hop, clap_seed=clap_seed)
    needed = {"fd_openl3": ("openl3_weights", openl3_weights), "kl_passt": ("passt_weights", passt_weights),
              "clap": ("clap", clap)}
    missing = [f"{metric} needs {name}" for metric, (name, path) in needed.items() if metric in metrics and not path]
    if missing:
        raise InputError("; ".join(missing) + " (a local weight file; nothing is downloaded)")
    tags = []
    if "fd_openl3" in metrics:
        from .openl3 import load_openl3
        evaluators.openl3 = load_openl3(openl3_weights, device)
        tags.append(f"openl3={Path(openl3_weights).resolve()}:{Path(openl3_weights).stat().st_mtime_ns}")
    if "kl_passt" in metrics:
        from .passt import load_passt
        evaluators.passt = load_passt(passt_weights, device)
        tags.append(f"passt={Path(passt_weights).resolve()}:{Path(passt_weights).stat().st_mtime_ns}")
    if "clap" in metrics:
        from .clap_score import ClapScorer
        evaluators.clap = ClapScorer.load(clap, clap_tokenizer, device=device)
    evaluators.tag = ";".join(tags)
    return evaluators


def write_reports(result: EvalResult, output: str | Path, header: dict) -> dict:
    """report.json (``header`` + metrics, counts, per-file values), report.md and, with
    matplotlib, distributions.png in ``output``; returns the JSON report."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    report = {**header, "metrics": result.metrics, "counts": result.counts, "per_file": result.per_file}
    write_bytes(output / "report.json", json.dumps(report, indent=2).encode())
    write_bytes(output / "report.md", markdown_report(result).encode())
    plot_distributions(result, output / "distributions.png")
    return report


def markdown_report(result: EvalResult, title: str = "Evaluation") -> str:
    names = {"fd_openl3": "FD_openl3 (lower is better)", "kl_passt": "KL_passt (lower is better)",
             "clap": "CLAP score (higher is better)", "timing_mae": "timing mean absolute error, s"}
    lines = [f"# {title}", "", "| metric | value | files |", "| --- | ---: | ---: |"]
    for key, value in result.metrics.items():
        lines.append(f"| {names.get(key, key)} | {value:.4f} | {result.counts.get(key, '')} |")
    return "\n".join(lines) + "\n"


def plot_distributions(result: EvalResult, path: str | Path) -> Path | None:
    """Histograms of the per-file values (one panel per quantity); None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    keys = sorted({k for values in result.per_file.values() for k in values})
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.hist([v[key] for v in result.per_file.values() if key in v], bins=20)
        ax.set_title(key)
        ax.set_ylabel("files")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda temp: fig.savefig(temp, dpi=100, format="png"))
    finally:
        plt.close(fig)
