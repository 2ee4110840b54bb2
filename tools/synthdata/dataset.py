"""Plan, make and index a dataset: DIR/audio/<id>.wav + <id>.json, DIR/midi/<id>.mid,
DIR/manifest.jsonl, DIR/split.json and DIR/dataset.json (the parameters it was made with).

Clip i depends only on (dataset seed, i) and the generation parameters, never on the count, so a
larger count extends a dataset and an interrupted run resumes where it stopped: a clip whose .json
sidecar exists (written last, atomically, after its .wav) is skipped.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .captions import music_metadata, sfx_metadata
from .compose import compose_song
from .midi import song_to_midi
from .postprocess import finish_clip, write_atomic, write_wav_atomic
from .render import SAMPLE_RATE, check_requirements, fluidsynth_version, render_song
from .rng import ClipRandom, derive_seed, hash_fraction
from .sfx import synthesize_sfx

FORMAT_VERSION = 1
SOUNDFONT_LICENSE = "FluidR3_GM by Frank Wen, MIT licence (Debian package fluid-soundfont-gm)"
PARAMETERS = ("seed", "sfx_fraction", "min_seconds", "max_seconds", "sample_rate", "solo_fraction")  # must match to resume
PARAMETER_DEFAULTS = {"solo_fraction": 0.0}  # for datasets made before the parameter existed


@dataclass(frozen=True)
class ClipPlan:
    index: int
    id: str
    kind: str  # "music" | "sfx"
    duration: float  # seconds, a multiple of 0.01 (a whole number of samples at 44.1 kHz)
    seed: int  # the clip's own seed: content and caption follow from it
    solo: bool = False  # music only: one melody instrument, no other part


def clip_id(index: int) -> str:
    return f"{index:06d}"


def plan_clip(dataset_seed: int, index: int, sfx_fraction: float, min_seconds: float,
              max_seconds: float, solo_fraction: float = 0.0) -> ClipPlan:
    """Kind and duration of clip `index`: duration uniform over the window in 10 ms steps; a music
    clip is a solo with probability `solo_fraction` (drawn last, so 0 keeps older plans as they were)."""
    seed = derive_seed(dataset_seed, "clip", index)
    rng = ClipRandom(derive_seed(seed, "plan"))
    kind = "sfx" if rng.unit() < sfx_fraction else "music"
    centiseconds = rng.integer(int(round(min_seconds * 100)), int(round(max_seconds * 100)))
    solo = kind == "music" and solo_fraction > 0 and rng.unit() < solo_fraction
    return ClipPlan(index, clip_id(index), kind, centiseconds / 100.0, seed, solo)


def plan_dataset(seed: int, count: int, sfx_fraction: float = 0.2, min_seconds: float = 1.0,
                 max_seconds: float = 10.0, solo_fraction: float = 0.0) -> list[ClipPlan]:
    return [plan_clip(seed, i, sfx_fraction, min_seconds, max_seconds, solo_fraction) for i in range(count)]


def make_clip(plan: ClipPlan, soundfont: str | Path | None) -> tuple[np.ndarray, dict, bytes | None]:
    """(audio float32 [samples, 2] ready to store, sidecar metadata, MIDI bytes or None for sfx)."""
    samples = int(round(plan.duration * SAMPLE_RATE))
    if plan.kind == "music":
        song = compose_song(plan.seed, plan.duration, plan.solo)
        metadata, midi = music_metadata(plan.id, plan.seed, song), song_to_midi(song)
        audio = render_song(song, soundfont)
    else:
        audio, info = synthesize_sfx(plan.seed, plan.duration, SAMPLE_RATE)
        metadata, midi = sfx_metadata(plan.id, plan.seed, plan.duration, info), None
    return finish_clip(audio, samples, SAMPLE_RATE), metadata, midi


def compose_metadata(plan: ClipPlan) -> dict:
    """The sidecar a clip will have, without rendering (sound effects are cheap to synthesise)."""
    if plan.kind == "music":
        return music_metadata(plan.id, plan.seed, compose_song(plan.seed, plan.duration, plan.solo))
    return sfx_metadata(plan.id, plan.seed, plan.duration, synthesize_sfx(plan.seed, plan.duration)[1])


def sidecar_path(out_dir: Path, clip: str) -> Path:
    return out_dir / "audio" / f"{clip}.json"


def is_done(out_dir: Path, plan: ClipPlan) -> bool:
    return sidecar_path(out_dir, plan.id).is_file() and (out_dir / "audio" / f"{plan.id}.wav").is_file()


def write_clip(out_dir: Path, plan: ClipPlan, soundfont: str | Path | None) -> dict:
    """Make one clip and store it; the sidecar goes last, so its presence means the clip is whole."""
    audio, metadata, midi = make_clip(plan, soundfont)
    if midi is not None:
        write_atomic(out_dir / "midi" / f"{plan.id}.mid", midi)
    write_wav_atomic(out_dir / "audio" / f"{plan.id}.wav", audio, SAMPLE_RATE)
    write_atomic(sidecar_path(out_dir, plan.id), (json.dumps(metadata, indent=1) + "\n").encode("utf-8"))
    return metadata


def _write_clip_job(job: tuple[Path, ClipPlan, str | None]) -> dict:
    return write_clip(*job)


def split_ids(ids: list[str], seed: int, held_out_fraction: float) -> dict:
    """Held-out membership by a hash of (seed, id): stable when the dataset grows; at least one
    held-out clip once there are two."""
    held_out = [i for i in ids if hash_fraction(seed, "split", i) < held_out_fraction]
    if not held_out and len(ids) >= 2 and held_out_fraction > 0:
        held_out = [min(ids, key=lambda i: hash_fraction(seed, "split", i))]
    chosen = set(held_out)
    return {"seed": seed, "held_out_fraction": held_out_fraction,
            "train": [i for i in ids if i not in chosen], "held_out": held_out}


def write_index(out_dir: Path, plans: list[ClipPlan], seed: int, held_out_fraction: float) -> int:
    """manifest.jsonl (one sidecar per line, plus "path" relative to DIR) and split.json."""
    lines, ids = [], []
    for plan in plans:
        path = sidecar_path(out_dir, plan.id)
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        record["path"] = f"audio/{plan.id}.wav"
        lines.append(json.dumps(record))
        ids.append(plan.id)
    write_atomic(out_dir / "manifest.jsonl", ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
    split = split_ids(ids, seed, held_out_fraction)
    write_atomic(out_dir / "split.json", (json.dumps(split, indent=1) + "\n").encode("utf-8"))
    return len(ids)


def _check_parameters(out_dir: Path, parameters: dict) -> None:
    existing_path = out_dir / "dataset.json"
    if not existing_path.is_file():
        return
    existing = json.loads(existing_path.read_text())
    before = {k: existing.get(k, PARAMETER_DEFAULTS.get(k)) for k in PARAMETERS}
    different = {k: (before[k], parameters[k]) for k in PARAMETERS if before[k] != parameters[k]}
    if different:
        listed = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in different.items())
        raise ValueError(f"{out_dir} holds a dataset made with other parameters ({listed}); "
                         "use a fresh --out folder or the same parameters (the count may differ)")


def generate_dataset(out_dir: str | Path, count: int, seed: int, sfx_fraction: float = 0.2,
                     min_seconds: float = 1.0, max_seconds: float = 10.0, workers: int = 1,
                     soundfont: str | Path | None = None, held_out_fraction: float = 0.05,
                     solo_fraction: float = 0.0, log: Callable[[str], None] = print) -> dict:
    """Make (or complete) the dataset in `out_dir`; returns a summary with timings."""
    if count < 1 or workers < 1:
        raise ValueError(f"count and workers must be at least 1 (got count={count}, workers={workers})")
    if not (0.0 <= sfx_fraction <= 1.0 and 0.0 <= solo_fraction <= 1.0 and 0.0 <= held_out_fraction < 1.0):
        raise ValueError(f"sfx_fraction and solo_fraction must be in [0, 1] and held_out_fraction in [0, 1) "
                         f"(got {sfx_fraction}, {solo_fraction}, {held_out_fraction})")
    if not 0.05 <= min_seconds <= max_seconds:
        raise ValueError(f"need 0.05 <= min_seconds <= max_seconds (got {min_seconds}, {max_seconds})")
    out_dir = Path(out_dir)
    plans = plan_dataset(seed, count, sfx_fraction, min_seconds, max_seconds, solo_fraction)
    needs_music = any(p.kind == "music" for p in plans)
    soundfont_path = check_requirements(soundfont) if needs_music else None

    parameters = {"seed": seed, "sfx_fraction": sfx_fraction, "min_seconds": min_seconds,
                  "max_seconds": max_seconds, "sample_rate": SAMPLE_RATE, "solo_fraction": solo_fraction}
    _check_parameters(out_dir, parameters)
    for sub in ("audio", "midi"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / sub).glob(".*.tmp"):  # left by an interrupted run
            stale.unlink()
    description = {"format_version": FORMAT_VERSION, **parameters, "count": count,
                   "held_out_fraction": held_out_fraction, "channels": 2, "subtype": "PCM_16",
                   "soundfont": str(soundfont_path) if soundfont_path else None,
                   "soundfont_license": SOUNDFONT_LICENSE,
                   "fluidsynth": fluidsynth_version() if needs_music else None,
                   "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    write_atomic(out_dir / "dataset.json", (json.dumps(description, indent=1) + "\n").encode("utf-8"))

    pending = [p for p in plans if not is_done(out_dir, p)]
    log(f"{count} clips in {out_dir}: {count - len(pending)} already made, {len(pending)} to make "
        f"with {workers} worker(s)")
    started, audio_seconds = time.monotonic(), 0.0
    jobs = [(out_dir, p, str(soundfont_path) if soundfont_path else None) for p in pending]
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap_unordered(_write_clip_job, jobs) if pool else map(_write_clip_job, jobs)
        for done, metadata in enumerate(results, start=1):
            audio_seconds += metadata["duration"]
            elapsed = time.monotonic() - started
            rate = done / elapsed if elapsed > 0 else 0.0
            eta = (len(jobs) - done) / rate if rate > 0 else 0.0
            log(f"[{done}/{len(jobs)}] {metadata['id']} {metadata['kind']:5s} {metadata['duration']:5.2f}s  "
                f"{rate:.2f} clips/s, {audio_seconds / max(elapsed, 1e-9):.1f}x real time, "
                f"eta {eta / 60:.1f} min  | {metadata['description']}")
    finally:
        if pool:
            pool.close()
            pool.join()
    elapsed = time.monotonic() - started
    indexed = write_index(out_dir, plans, seed, held_out_fraction)
    summary = {"clips": indexed, "made": len(jobs), "seconds": round(elapsed, 2),
               "audio_seconds": round(audio_seconds, 2)}
    log(f"done: {len(jobs)} clips made in {elapsed:.1f} s ({audio_seconds:.0f} s of audio); "
        f"{indexed} clips in manifest.jsonl")
    return summary
