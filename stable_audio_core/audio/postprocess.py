"""After decoding: finite checks, the energy-based end detector and trimming to seconds_total."""

from __future__ import annotations

import torch

from ..errors import NonFiniteError


def check_finite(tensor: torch.Tensor, stage: str, *, is_input: bool = False) -> torch.Tensor:
    """Raise NonFiniteError naming the stage and dtype when `tensor` holds NaN or Inf.
    is_input=True says `stage` names an input (a file, a node input), not a computation."""
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        where = stage if is_input else f"the {stage} output"
        hint = ""
        if tensor.dtype in (torch.float16, torch.bfloat16) and not is_input:
            hint = f" The computation ran in {tensor.dtype}: retry in float32 (dtype=float32)."
        elif is_input:
            hint = " Audio inputs must hold finite samples; repair or replace the input."
        raise NonFiniteError(
            f"{bad} NaN/Inf value(s) in {where} ({tensor.dtype}, shape "
            f"{tuple(tensor.shape)}).{hint}"
        )
    return tensor


def frame_energy_db(audio: torch.Tensor, sample_rate: int, frame_seconds: float = 0.02) -> torch.Tensor:
    """Tensor[C, T] -> per-frame RMS level in dBFS over all channels, Tensor[frames]."""
    frame = max(1, int(round(frame_seconds * sample_rate)))
    frames = audio.shape[-1] // frame
    if frames == 0:
        return torch.full((1,), -float("inf"))
    power = audio[..., : frames * frame].float().pow(2).reshape(-1, frames, frame).mean(dim=(0, 2))
    return 10 * torch.log10(power.clamp_min(1e-20))


def detect_content_end(audio: torch.Tensor, sample_rate: int, threshold_db: float = -60.0,
                       frame_seconds: float = 0.02) -> float:
    """Seconds at which the last frame louder than `threshold_db` (dBFS) ends; 0.0 if all silent.

    This is the energy-based silence detector of the paper's timing experiment (sec. 6.3).
    """
    level = frame_energy_db(audio, sample_rate, frame_seconds)
    loud = torch.nonzero(level > threshold_db)
    if loud.numel() == 0:
        return 0.0
    frame = max(1, int(round(frame_seconds * sample_rate)))
    return (int(loud[-1]) + 1) * frame / sample_rate


def trim_silence(audio: torch.Tensor, sample_rate: int, seconds_total: float | None = None,
                 threshold_db: float = -60.0, frame_seconds: float = 0.02) -> torch.Tensor:
    """Cut the padding after the content: at `seconds_total` when known, else where the energy
    detector finds the last non-silent frame. Works on Tensor[..., T]."""
    if seconds_total is not None:
        end = int(round(seconds_total * sample_rate))
    else:
        flat = audio.reshape(-1, audio.shape[-1])
        end = int(round(detect_content_end(flat, sample_rate, threshold_db, frame_seconds) * sample_rate))
    end = max(1, min(end, audio.shape[-1]))
    return audio[..., :end]
