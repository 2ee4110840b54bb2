"""The data that flows between nodes: type names, and checked access to ComfyUI's dicts.

AUDIO is ComfyUI's {"waveform": Tensor[B, C, T] float32, "sample_rate": int}; LATENT is
{"samples": Tensor[B, C, L], "type": "audio", "noise_mask"?: Tensor[B or 1, 1, L]} (1 =
regenerate), plus our optional "audio_samples": the audio length the latent stands for (whole
latent frames hold up to one frame more), so VAE Decode returns exactly that length. Our own types carry a prefix so they never meet ComfyUI's MODEL or CONDITIONING.
"""

from __future__ import annotations

import torch

from ..stable_audio_core.errors import InputError
from ..stable_audio_core.audio.postprocess import check_finite

CATEGORY = "audio/stable audio"
MODEL = "STABLE_AUDIO_MODEL"          # stable_audio_core StableAudioModel (DiT, VAE, conditioners)
TEXT = "STABLE_AUDIO_TEXT"            # encoded text: {"positive", "negative", "kind"}
CONDITIONING = "STABLE_AUDIO_CONDITIONING"  # {"positive", "negative" ModelInputs, seconds_*}
AUDIO = "AUDIO"
LATENT = "LATENT"
AUDIO_SAMPLES = "audio_samples"       # LATENT key: audio length at the model's rate (see above)


def make_audio(waveform: torch.Tensor, sample_rate: int) -> dict:
    return {"waveform": waveform.detach().float().cpu().contiguous(), "sample_rate": int(sample_rate)}


def audio_parts(audio, what: str = "the audio input") -> tuple[torch.Tensor, int]:
    """AUDIO dict -> (Tensor[B, C, T], sample_rate), with a clear error naming `what` for anything
    else (not AUDIO, a wrong shape, a non-positive rate, NaN/Inf samples)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(f"{what}: expected AUDIO, a dict with 'waveform' [B, C, T] and 'sample_rate'")
    waveform = audio["waveform"]
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 3:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise InputError(f"{what}: AUDIO waveform must be a Tensor[B, C, T], got {shape}")
    rate = audio["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0 or int(rate) != rate:
        raise InputError(f"{what}: sample_rate must be a positive whole number, got {rate!r}")
    check_finite(waveform, what, is_input=True)
    return waveform, int(rate)


def make_latent(samples: torch.Tensor, noise_mask: torch.Tensor | None = None, like: dict | None = None,
                audio_samples: int | None = None) -> dict:
    """A LATENT dict; `like` keeps the other keys of an input latent (as ComfyUI's samplers do),
    its audio length only when the frames are the same."""
    latent = {k: v for k, v in (like or {}).items() if k not in ("samples", "noise_mask")}
    if AUDIO_SAMPLES in latent and like["samples"].shape[-1] != samples.shape[-1]:
        del latent[AUDIO_SAMPLES]
    latent.update({"samples": samples.detach().float().cpu().contiguous(), "type": "audio"})
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask.detach().float().cpu().contiguous()
    if audio_samples is not None:
        latent[AUDIO_SAMPLES] = int(audio_samples)
    return latent


def audio_length(latent: dict, model) -> int:
    """Audio samples the latent stands for: its "audio_samples", else its whole frames."""
    frames = latent["samples"].shape[-1] * model.downsampling_ratio
    return min(int(latent.get(AUDIO_SAMPLES) or frames), frames)


def latent_parts(latent, model=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """LATENT dict -> (samples Tensor[B, C, L], noise_mask Tensor[B or 1, 1, L] or None)."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise InputError("expected LATENT, a dict with 'samples' [B, C, L]")
    samples = latent["samples"]
    if not isinstance(samples, torch.Tensor) or samples.dim() != 3:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InputError(f"this LATENT holds samples of shape {shape}; audio latents are [B, C, L] "
                         "(an image latent cannot be used here)")
    if model is not None and samples.shape[1] != model.io_channels:
        raise InputError(f"this LATENT has {samples.shape[1]} channels but the model's latents have "
                         f"{model.io_channels}; make it with this model's Empty Latent or VAE Encode")
    mask = latent.get("noise_mask")
    if mask is not None:
        mask = mask.float()
        if mask.dim() == 2:
            mask = mask[:, None]
        if mask.dim() != 3 or mask.shape[1] != 1 or mask.shape[-1] != samples.shape[-1] \
                or mask.shape[0] not in (1, samples.shape[0]):
            raise InputError(f"noise_mask has shape {tuple(mask.shape)}; expected "
                             f"[{samples.shape[0]} or 1, 1, {samples.shape[-1]}] for these latents")
    return samples, mask
