"""Audio I/O and shaping: read/write files with soundfile, resample, match channel counts."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import AudioFileError, InputError

WRITE_FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an audio file -> (Tensor[C, T] float32 in [-1, 1], sample_rate)."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioFileError(
            f"{path} could not be decoded as audio ({exc}); supported: WAV, FLAC, OGG/Vorbis, MP3"
        ) from exc
    if data.shape[0] == 0:
        raise AudioFileError(f"{path} holds no audio samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def write_audio(path: str | Path, audio: torch.Tensor, sample_rate: int, fmt: str | None = None,
                subtype: str | None = None) -> Path:
    """Write Tensor[C, T] atomically (temp file + rename): no partial file is ever left behind."""
    import soundfile as sf
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in WRITE_FORMATS:
        raise InputError(f"unknown audio format '{fmt}'; choose one of {sorted(WRITE_FORMATS)}")
    if audio.dim() != 2:
        raise InputError(f"write_audio expects Tensor[C, T], got shape {tuple(audio.shape)}")
    data = audio.detach().float().clamp(-1, 1).cpu().numpy().T
    if subtype is None and fmt in ("wav", "flac"):
        subtype = "PCM_16"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix="." + fmt, dir=str(path.parent))
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, format=WRITE_FORMATS[fmt], subtype=subtype)
        os.replace(tmp, path)
    except Exception as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, InputError):
            raise
        raise AudioFileError(f"could not write {path} as {fmt}: {exc}") from exc
    return path


def _sinc_kernels(up: int, down: int, zeros: int = 24, rolloff: float = 0.945) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc kernels, one per output phase, for resampling by up/down.

    Output sample k*up + p sits at input time k*down + p*down/up; its kernel samples a low-pass
    sinc (cutoff `rolloff` x the lower Nyquist) at the input offsets around that time.
    """
    cutoff = min(up, down) * rolloff
    width = math.ceil(zeros * down / cutoff)
    idx = torch.arange(-width, width + down, dtype=torch.float64)[None] / down
    phases = -torch.arange(up, dtype=torch.float64)[:, None] / up
    t = (phases + idx) * cutoff
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    kernels = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t)) * window
    kernels = kernels * cutoff / down
    return kernels.float(), width


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of Tensor[..., T] (windowed-sinc polyphase filter)."""
    if orig_rate == new_rate:
        return audio
    if orig_rate <= 0 or new_rate <= 0:
        raise InputError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    g = math.gcd(orig_rate, new_rate)
    down, up = orig_rate // g, new_rate // g
    kernels, width = _sinc_kernels(up, down)
    shape = audio.shape
    x = audio.reshape(-1, 1, shape[-1]).float()
    x = torch.nn.functional.pad(x, (width, width + down))
    y = torch.nn.functional.conv1d(x, kernels.to(x.device)[:, None, :], stride=down)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    out_len = math.ceil(up * shape[-1] / down)
    return y[..., :out_len].reshape(*shape[:-1], out_len).to(audio.dtype)


def set_channels(audio: torch.Tensor, channels: int) -> torch.Tensor:
    """Tensor[..., C, T] -> [..., channels, T]: mono is duplicated, surplus channels mixed down."""
    have = audio.shape[-2]
    if have == channels:
        return audio
    if have == 1:
        return audio.expand(*audio.shape[:-2], channels, audio.shape[-1]).contiguous()
    if channels == 1:
        return audio.mean(dim=-2, keepdim=True)
    if have > channels:
        return audio[..., :channels, :]
    raise InputError(f"cannot map {have} audio channels onto {channels}")


def fit_length(audio: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to `length` samples."""
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))


def prepare_audio(audio: torch.Tensor, sample_rate: int, target_rate: int, channels: int,
                  length: int | None = None) -> torch.Tensor:
    """Any Tensor[T], [C, T] or [B, C, T] -> Tensor[B, channels, length] at `target_rate`."""
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() == 2:
        audio = audio[None]
    if audio.dim() != 3:
        raise InputError(f"audio must be [T], [C, T] or [B, C, T], got shape {tuple(audio.shape)}")
    audio = set_channels(resample(audio.float(), sample_rate, target_rate), channels)
    return audio if length is None else fit_length(audio, length)
