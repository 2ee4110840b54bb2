"""Text (and timing) to audio: conditioning, initial noise, guided sampling, VAE decode, trimming.

`generate` mirrors stable-audio-tools' `generate_diffusion_cond` (same seed -> same initial noise
on the CPU, same sampler maths), plus per-item seeds, latent noise masks and progress callbacks.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .audio import prepare_audio
from .errors import InputError
from .models.stable_audio import StableAudioModel
from .postprocess import check_finite, trim_silence

# The reference's recommended settings for each objective (SAO 1.0 model card / SAO Small card).
DEFAULTS = {
    "v": {"steps": 100, "cfg_scale": 7.0, "sampler": "dpmpp-3m-sde", "sigma_min": 0.3, "sigma_max": 500.0},
    "rectified_flow": {"steps": 50, "cfg_scale": 7.0, "sampler": "euler", "sigma_min": None, "sigma_max": 1.0},
    "rf_denoiser": {"steps": 8, "cfg_scale": 1.0, "sampler": "pingpong", "sigma_min": None, "sigma_max": 1.0},
}

ProgressCallback = Callable[[dict], None]


@dataclass
class GenerationResult:
    audio: torch.Tensor | None          # [B, C, T] float32, trimmed when requested
    latents: torch.Tensor                # [B, io_channels, L] before decoding
    sample_rate: int
    seeds: list[int]                     # the seed that reproduces each item (see seed_per_item)
    initial_noise: torch.Tensor = field(repr=False, default=None)


def defaults_for(model: StableAudioModel) -> dict:
    return dict(DEFAULTS[model.objective])


def resolve_seed(seed: int | None) -> int:
    """-1 or None picks a random seed (reported back, so any result can be reproduced)."""
    if seed is None or seed < 0:
        return random.randrange(0, 2**32 - 1)
    if seed >= 2**64:
        raise InputError(f"seed must be below 2**64, got {seed}")
    return int(seed)


def initial_noise(shape: tuple[int, ...], seed: int, seed_per_item: bool,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian noise [B, C, L] drawn on the CPU so a seed gives the same noise on every device.

    seed_per_item=False draws the whole batch from `seed` (stable-audio-tools' and ComfyUI's
    semantics); True draws item i from `seed + i`, so each item can be regenerated alone.
    """
    if seed_per_item:
        items = [torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(seed + i))
                 for i in range(shape[0])]
        noise = torch.cat(items)
    else:
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return noise.to(device)


def window_length(model: StableAudioModel, sample_size: int | None) -> int:
    """Audio samples of the generation window, rounded up to whole latent frames."""
    size = int(sample_size or model.config.sample_size)
    if size <= 0:
        raise InputError(f"sample_size must be positive, got {size}")
    ratio = model.downsampling_ratio
    return math.ceil(size / ratio) * ratio


def _metadata(prompt, seconds_start, seconds_total, batch_size, extra: dict | None) -> list[dict]:
    item = {"prompt": prompt, "seconds_start": seconds_start, "seconds_total": seconds_total}
    item.update(extra or {})
    return [dict(item) for _ in range(batch_size)]


def _as_batch(conditioning: dict | list[dict], batch_size: int) -> list[dict]:
    if isinstance(conditioning, dict):
        return [dict(conditioning) for _ in range(batch_size)]
    if len(conditioning) != batch_size:
        raise InputError(f"got {len(conditioning)} conditioning dicts for batch_size {batch_size}")
    return [dict(c) for c in conditioning]


@torch.inference_mode()
def generate(
    model: StableAudioModel,
    prompt: str | None = None,
    *,
    negative_prompt: str | None = None,
    seconds_start: float = 0.0,
    seconds_total: float | None = None,
    conditioning: dict | list[dict] | None = None,
    negative_conditioning: dict | list[dict] | None = None,
    steps: int | None = None,
    cfg_scale: float | None = None,
    cfg_rescale: float = 0.0,
    sampler: str | None = None,
    schedule: str = "polyexponential",
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 1.0,
    seed: int | None = -1,
    seed_per_item: bool = False,
    batch_size: int = 1,
    sample_size: int | None = None,
    init_audio: tuple[int, torch.Tensor] | None = None,
    init_latents: torch.Tensor | None = None,
    init_noise_level: float | None = None,
    noise_mask: torch.Tensor | None = None,
    callback: ProgressCallback | None = None,
    decode: bool = True,
    trim: bool = True,
) -> GenerationResult:
    """Generate audio. Unset sampling arguments take the model's recommended defaults.

    Conditioning comes either from `prompt`/`seconds_start`/`seconds_total` or, for models with
    other conditioner ids, from explicit metadata dicts (`conditioning`, one dict or one per item).
    `init_audio` (sample_rate, Tensor[C, T]) or `init_latents` ([B, C, L]) start from existing
    audio at `init_noise_level` (sigma_max); `noise_mask` ([B or 1, 1, L] latents, 1 = regenerate,
    0 = keep the source) restricts what changes, for inpainting and continuation.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    settings = defaults_for(model)
    steps = settings["steps"] if steps is None else int(steps)
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    cfg_scale = settings["cfg_scale"] if cfg_scale is None else float(cfg_scale)
    sampler = sampler or settings["sampler"]
    length = window_length(model, sample_size)
    window_seconds = length / model.sample_rate
    if seconds_total is None:
        seconds_total = window_seconds
    if not 0 < seconds_total or seconds_start < 0:
        raise InputError(
            f"impossible duration: seconds_start={seconds_start}, seconds_total={seconds_total}; "
            "seconds_total must be positive and seconds_start non-negative"
        )
    if seconds_total > window_seconds + 1e-6:
        raise InputError(
            f"seconds_total={seconds_total} is longer than the generation window of "
            f"{window_seconds:.2f} s; raise sample_size or lower seconds_total"
        )

    device, dtype = model.device, model.dtype
    latent_length = length // model.downsampling_ratio
    seed = resolve_seed(seed)
    noise = initial_noise((batch_size, model.io_channels, latent_length), seed, seed_per_item, device)
    seeds = [seed + i for i in range(batch_size)] if seed_per_item else [seed] * batch_size

    metadata = (_as_batch(conditioning, batch_size) if conditioning is not None
                else _metadata(prompt, seconds_start, seconds_total, batch_size, None))
    inputs = model.condition(metadata)
    negative = None
    if negative_conditioning is not None or negative_prompt is not None:
        neg_meta = (_as_batch(negative_conditioning, batch_size) if negative_conditioning is not None
                    else _metadata(negative_prompt, seconds_start, seconds_total, batch_size, None))
        negative = model.condition(neg_meta)

    if init_audio is not None:
        if init_latents is not None:
            raise InputError("give init_audio or init_latents, not both")
        rate, audio = init_audio
        audio = prepare_audio(audio, rate, model.sample_rate, model.audio_channels, length).to(device)
        init_latents = model.autoencoder.encode(audio.to(next(model.autoencoder.parameters()).dtype))
    if init_latents is not None:
        init_latents = init_latents.to(device, dtype)
        if init_latents.shape[1:] != noise.shape[1:]:
            raise InputError(
                f"init latents have shape {tuple(init_latents.shape)}, expected [B, "
                f"{model.io_channels}, {latent_length}] for this window"
            )
        if init_latents.shape[0] == 1 and batch_size > 1:
            init_latents = init_latents.expand(batch_size, -1, -1)
    if noise_mask is not None:
        if init_latents is None:
            raise InputError("noise_mask needs the source to keep: pass init_audio or init_latents")
        noise_mask = noise_mask.to(device, dtype)
        if noise_mask.shape[-1] != latent_length:
            raise InputError(f"noise_mask has {noise_mask.shape[-1]} frames, the latents {latent_length}")

    model_fn = model.model_fn(inputs, cfg_scale, negative, cfg_rescale)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    latents = _run_sampler(model, model_fn, noise.to(dtype), steps, sampler, schedule, sigma_min,
                           sigma_max, rho, init_latents, init_noise_level, noise_mask, generator, callback)
    check_finite(latents, "sampler")

    audio = None
    if decode and model.autoencoder is not None:
        ae_dtype = next(model.autoencoder.parameters()).dtype
        audio = check_finite(model.autoencoder.decode(latents.to(ae_dtype)).float(), "VAE decoder")
        if trim:
            audio = trim_silence(audio, model.sample_rate, seconds_total)
    return GenerationResult(audio=audio, latents=latents, sample_rate=model.sample_rate,
                            seeds=seeds, initial_noise=noise)


def _run_sampler(model, model_fn, noise, steps, sampler, schedule, sigma_min, sigma_max, rho,
                 init_latents, init_noise_level, noise_mask, generator, callback) -> torch.Tensor:
    from .sampling import loop

    settings = defaults_for(model)
    if init_latents is not None and init_noise_level is not None:
        sigma_max = init_noise_level  # the reference starts audio-to-audio at the init noise level
    if model.objective == "v":
        return loop.sample_v(
            model_fn, noise, steps=steps, sampler=sampler, schedule=schedule,
            sigma_min=settings["sigma_min"] if sigma_min is None else sigma_min,
            sigma_max=settings["sigma_max"] if sigma_max is None else sigma_max, rho=rho,
            init_latents=init_latents, noise_mask=noise_mask, generator=generator, callback=callback,
        )
    return loop.sample_rf(
        model_fn, noise, steps=steps, sampler=sampler,
        sigma_max=settings["sigma_max"] if sigma_max is None else sigma_max,
        init_latents=init_latents, noise_mask=noise_mask, generator=generator, callback=callback,
    )
