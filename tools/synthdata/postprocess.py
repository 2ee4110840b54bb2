"""Shape a rendered or synthesised clip into what the dataset stores, and write it atomically.

Every clip is cut to exactly its duration (so `duration` is the audible content), faded out over a
few tens of milliseconds at the cut so it ends without a click, and scaled to a common loudness
(RMS target) with a peak ceiling, then stored as 16-bit PCM WAV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

FADE_OUT_SECONDS = 0.04
TARGET_RMS_DBFS = -20.0
PEAK_CEILING_DBFS = -1.0


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Tensor[T, C] -> Tensor[samples, C]: cut, or pad with silence when the render is short."""
    if audio.shape[0] >= samples:
        return audio[:samples]
    return np.concatenate([audio, np.zeros((samples - audio.shape[0], audio.shape[1]), audio.dtype)])


def fade_out(audio: np.ndarray, sample_rate: int, seconds: float = FADE_OUT_SECONDS) -> np.ndarray:
    """A half-cosine fade over the last `seconds` (the cut lands mid-note and must not click)."""
    n = min(audio.shape[0], int(round(seconds * sample_rate)))
    if n == 0:
        return audio
    ramp = 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, n, dtype=np.float64)))
    out = audio.copy()
    out[-n:] = (out[-n:] * ramp[:, None]).astype(audio.dtype)
    return out


def normalize(audio: np.ndarray, target_rms_dbfs: float = TARGET_RMS_DBFS,
              peak_ceiling_dbfs: float = PEAK_CEILING_DBFS) -> np.ndarray:
    """Scale to the target RMS, or less when that would push the peak over the ceiling."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if rms < 1e-9 or peak < 1e-9:
        return audio
    gain = min(10 ** (target_rms_dbfs / 20) / rms, 10 ** (peak_ceiling_dbfs / 20) / peak)
    return (audio * gain).astype(np.float32)


def finish_clip(audio: np.ndarray, samples: int, sample_rate: int) -> np.ndarray:
    """Tensor[T, 2] -> Tensor[samples, 2] float32: cut or pad, fade the end, normalise."""
    return normalize(fade_out(fit_length(audio.astype(np.float32), samples), sample_rate))


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so a file is whole or absent."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV, written to a temporary name first (PCM has no timestamps: same audio, same bytes)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
