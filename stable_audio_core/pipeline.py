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

from .acceleration import activation_dtype
from .audio import prepare_audio
from .errors import InputError
from .models.conditioners import Conditioning, MultiConditioner
from .models.stable_audio import ModelInputs, StableAudioModel, assemble_inputs
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
    """The objective's recommended settings, overridden by the config's optional top-level
    ``sampling_defaults`` (our extension: a small model's own steps / cfg_scale / sampler)."""
    settings = dict(DEFAULTS[model.objective])
    overrides = (getattr(model.config, "raw", None) or {}).get("sampling_defaults") or {}
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise InputError(f"model config sampling_defaults has unknown key(s) {unknown}; allowed: {sorted(settings)}")
    settings.update(overrides)
    return settings


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
    """Audio samples of the generation window, rounded up to a length the model accepts: whole
    latent frames, as many as the backbone needs (a U-Net: a multiple of its downsampling)."""
    size = int(sample_size or model.config.sample_size)
    if size <= 0:
        raise InputError(f"sample_size must be positive, got {size}")
    multiple = model.min_input_length
    return math.ceil(size / multiple) * multiple


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
    cfg_rescale: float | None = None,
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
    inputs: ModelInputs | None = None,
    negative_inputs: ModelInputs | None = None,
) -> GenerationResult:
    """Generate audio. Unset sampling arguments take the model's recommended defaults.

    Conditioning comes either from `prompt`/`seconds_start`/`seconds_total` or, for models with
    other conditioner ids, from explicit metadata dicts (`conditioning`, one dict or one per item).
    `init_audio` (sample_rate, Tensor[C, T]) or `init_latents` ([B, C, L]) start from existing
    audio at `init_noise_level` (sigma_max); `noise_mask` ([B or 1, 1, L] latents, 1 = regenerate,
    0 = keep the source) restricts what changes, for inpainting and continuation.
    `cfg_rescale` None applies what stable-audio-tools applies to the model's backbone (0 for the
    DiT, 0.4 for the U-Net).
    `inputs` / `negative_inputs` are conditioning already encoded (see `encode_conditioners` and
    `assemble_conditioning`), batch 1 or batch_size; then `prompt` and `conditioning` stay unset
    and `seconds_total` only sets the trim point and the window check.
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

    negative = None
    if inputs is not None:
        if any(v is not None for v in (prompt, conditioning, negative_prompt, negative_conditioning)):
            raise InputError("give encoded inputs or prompt/conditioning, not both")
        inputs = batch_inputs(inputs, batch_size)
        if negative_inputs is not None:
            negative = batch_inputs(negative_inputs, batch_size)
    else:
        if negative_inputs is not None:
            raise InputError("negative_inputs needs inputs; use negative_prompt otherwise")
        metadata = (_as_batch(conditioning, batch_size) if conditioning is not None
                    else _metadata(prompt, seconds_start, seconds_total, batch_size, None))
        inputs = model.condition(metadata)
        if negative_conditioning is not None or negative_prompt is not None:
            neg_meta = (_as_batch(negative_conditioning, batch_size) if negative_conditioning is not None
                        else _metadata(negative_prompt, seconds_start, seconds_total, batch_size, None))
            negative = model.condition(neg_meta)

    if init_audio is not None:
        if init_latents is not None:
            raise InputError("give init_audio or init_latents, not both")
        rate, audio = init_audio
        audio = prepare_audio(audio, rate, model.sample_rate, model.audio_channels, length).to(device)
        init_latents = model.autoencoder.encode(audio.to(activation_dtype(model.autoencoder)))
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
        ae_dtype = activation_dtype(model.autoencoder)
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


# --- conditioning in parts: text and timing encoded separately, then assembled -------------------
# (the node pack encodes text once in one node and timing in another; generate takes the result)

def conditioner_ids(model: StableAudioModel, types: tuple[str, ...] | None = None) -> list[str]:
    """Ids of the model's conditioners in config order, only those of config `types` if given."""
    return [spec.id for spec in model.config.conditioners if types is None or spec.type in types]


def encode_conditioners(model: StableAudioModel, metadata: list[dict[str, Any]],
                        ids: list[str]) -> Conditioning:
    """Run only the conditioners `ids` over metadata dicts (one per item) -> {id: (tokens, mask)}."""
    unknown = [i for i in ids if i not in model.conditioner.conditioners]
    if unknown:
        raise InputError(f"this model has no conditioner(s) {unknown}; it has "
                         f"{list(model.conditioner.conditioners)}")
    subset = MultiConditioner({i: model.conditioner.conditioners[i] for i in ids},
                              model.conditioner.default_keys)
    with torch.no_grad():
        return subset(metadata, model.device)


def assemble_conditioning(model: StableAudioModel, parts: Conditioning) -> ModelInputs:
    """Encoded parts of every conditioner the backbone reads -> its ModelInputs (model dtype)."""
    config = model.config
    used = dict.fromkeys(config.cross_attention_cond_ids + config.global_cond_ids
                         + config.input_concat_ids + config.prepend_cond_ids)
    missing = [i for i in used if i not in parts]
    if missing:
        raise InputError(f"conditioning lacks {missing}; this model reads {list(used)} "
                         f"(encode text with the model's text encoder, timing with seconds_start/"
                         f"seconds_total)")
    batches = {tokens.shape[0] for tokens, _ in parts.values()}
    if len(batches) > 1:
        raise InputError(f"conditioning parts have different batch sizes {sorted(batches)}")
    return assemble_inputs(parts, config).to(model.dtype)


def batch_inputs(inputs: ModelInputs, batch_size: int) -> ModelInputs:
    """Repeat batch-1 ModelInputs to batch_size; inputs already of batch_size pass unchanged."""
    fields = {}
    for name, value in inputs.__dict__.items():
        if value is not None and value.shape[0] != batch_size:
            if value.shape[0] != 1:
                raise InputError(f"conditioning has batch {value.shape[0]} ({name}) but the latents "
                                 f"have batch {batch_size}; use batch 1 or the same batch size")
            value = value.expand(batch_size, *value.shape[1:])
        fields[name] = value
    return ModelInputs(**fields)


# --- time <-> latent frames, and the denoise strength of audio-to-audio --------------------------

def seconds_to_frames(model: StableAudioModel, seconds: float, rounding: str = "round") -> int:
    """Latent frames covering `seconds` of audio at the model's rate ('round', 'ceil' or 'floor')."""
    exact = seconds * model.sample_rate / model.downsampling_ratio
    ops = {"round": round, "ceil": math.ceil, "floor": math.floor}
    if rounding not in ops:
        raise InputError(f"rounding must be one of {sorted(ops)}, got {rounding!r}")
    return int(ops[rounding](exact - 1e-9 if rounding == "ceil" else exact))


def denoise_to_noise_level(model: StableAudioModel, denoise: float, sigma_min: float | None = None,
                           sigma_max: float | None = None) -> float:
    """A denoise strength in (0, 1] -> the init_noise_level where audio-to-audio starts.

    v objective: log-linear between sigma_min and sigma_max (the spacing of the default
    polyexponential rho=1 schedule), so 1 starts from pure noise at sigma_max and small values
    keep more of the source. Rectified flow: the start time denoise * sigma_max (at most 1).
    """
    if not 0 < denoise <= 1:
        raise InputError(f"denoise must be in (0, 1], got {denoise}")
    settings = defaults_for(model)
    high = settings["sigma_max"] if sigma_max is None else float(sigma_max)
    if model.objective != "v":
        return min(1.0, high) * denoise
    low = settings["sigma_min"] if sigma_min is None else float(sigma_min)
    if not 0 < low < high:
        raise InputError(f"need 0 < sigma_min < sigma_max, got {low}, {high}")
    return math.exp(math.log(low) + denoise * (math.log(high) - math.log(low)))
