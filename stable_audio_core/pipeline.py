"""Text (and timing) to audio: conditioning, initial noise, guided sampling, VAE decode, trimming.

`generate` mirrors stable-audio-tools' `generate_diffusion_cond` (same seed -> same initial noise
on the CPU, same sampler maths), plus per-item seeds, latent noise masks and progress callbacks.
It runs named steps: `resolve_sampling` (the settings, once), `build_conditioning`,
`prepare_source` (audio-to-audio, inpainting), `sample_latents` (which the sampler node calls
too), then `decode_latents` and `trim_silence`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .autoencoding import decode_latents, encode_audio
from .errors import InputError
from .models.conditioners import Conditioning, MultiConditioner
from .text.conditioners import TextConditioner
from .models.stable_audio import ModelInputs, StableAudioModel, assemble_inputs
from .audio.postprocess import check_finite, trim_silence
from .sampling import loop, sa3

# The reference's recommended settings for each objective (SAO 1.0 model card / SAO Small card).
DEFAULTS = {
    "v": {"steps": 100, "cfg_scale": 7.0, "sampler": "dpmpp-3m-sde", "sigma_min": 0.3, "sigma_max": 500.0},
    "rectified_flow": {"steps": 50, "cfg_scale": 7.0, "sampler": "euler", "sigma_min": None, "sigma_max": 1.0},
    "rf_denoiser": {"steps": 8, "cfg_scale": 1.0, "sampler": "pingpong", "sigma_min": None, "sigma_max": 1.0},
}

ProgressCallback = Callable[[dict], None]

# Documented limits of one request (the sampler node's widgets have the same ones): beyond them a
# typo would run for hours or exhaust memory.
MAX_STEPS = 10000          # ComfyUI's KSampler maximum
MAX_BATCH_SIZE = 64
SEED_MAX = 2**64 - 2       # the sampler's own noise uses seed + 1, which must fit 64 bits


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


def resolve_seed(seed: int | None, batch_size: int = 1, seed_per_item: bool = False) -> int:
    """-1 or None picks a random seed (reported back, so any result can be reproduced); otherwise
    0..SEED_MAX (with seed_per_item, the last item's seed too)."""
    if seed is None or (_is_integer(seed) and seed == -1):
        return random.randrange(0, 2**32 - 1)
    if not _is_integer(seed):
        raise InputError(f"seed must be a whole number, got {seed!r}")
    last = int(seed) + (batch_size - 1 if seed_per_item else 0)
    if seed < 0 or last > SEED_MAX:
        raise InputError(f"seed must be -1 (random) or in 0..{SEED_MAX}"
                         + (f" (item seeds run to seed + {batch_size - 1})" if seed_per_item else "")
                         + f", got {seed}")
    return int(seed)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, name: str) -> float:
    """`value` as a finite float; InputError naming `name` for text, None, NaN or Inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_request(*, steps: Any = None, cfg_scale: Any = None, cfg_rescale: Any = None,
                  sigma_min: Any = None, sigma_max: Any = None, batch_size: Any = 1,
                  seconds_start: Any = 0.0, seconds_total: Any = None,
                  init_noise_level: Any = None) -> None:
    """Types and ranges of one request's values that need no model: the same checks for the
    command line, the nodes and the Python API, before any work. None means "the default"."""
    if steps is not None and (not _is_integer(steps) or not 1 <= steps <= MAX_STEPS):
        raise InputError(f"steps must be at least 1 and at most {MAX_STEPS} (a whole number), got {steps!r}")
    if not _is_integer(batch_size) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InputError(f"batch_size must be a whole number in 1..{MAX_BATCH_SIZE}, got {batch_size!r}")
    if cfg_scale is not None:
        _number(cfg_scale, "cfg_scale")
    if cfg_rescale is not None and not 0.0 <= _number(cfg_rescale, "cfg_rescale") <= 1.0:
        raise InputError(f"cfg_rescale must be in [0, 1] (0: off), got {cfg_rescale}")
    low = None if sigma_min is None else _number(sigma_min, "sigma_min")
    high = None if sigma_max is None else _number(sigma_max, "sigma_max")
    if (low is not None and low <= 0) or (high is not None and high <= 0):
        raise InputError(f"sigma_min and sigma_max must be positive, got {sigma_min}, {sigma_max}")
    if low is not None and high is not None and low >= high:
        raise InputError(f"sigma_min must be below sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if _number(seconds_start, "seconds_start") < 0:
        raise InputError(f"impossible duration: seconds_start must be 0 or more, got {seconds_start}")
    if seconds_total is not None and _number(seconds_total, "seconds_total") <= 0:
        raise InputError(f"impossible duration: seconds_total must be positive, got {seconds_total}")
    if init_noise_level is not None and _number(init_noise_level, "init_noise_level") <= 0:
        raise InputError(f"init_noise_level must be positive, got {init_noise_level}")


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


def _metadata(prompt, seconds_start, seconds_total, batch_size) -> list[dict]:
    item = {"prompt": prompt, "seconds_start": seconds_start, "seconds_total": seconds_total}
    return [dict(item) for _ in range(batch_size)]


def _as_batch(conditioning: dict | list[dict], batch_size: int) -> list[dict]:
    if isinstance(conditioning, dict):
        return [dict(conditioning) for _ in range(batch_size)]
    if len(conditioning) != batch_size:
        raise InputError(f"got {len(conditioning)} conditioning dicts for batch_size {batch_size}")
    return [dict(c) for c in conditioning]


@dataclass(frozen=True)
class SamplingSettings:
    """One request's sampler settings, unset ones replaced by the model's (`resolve_sampling`)."""

    steps: int
    cfg_scale: float
    cfg_rescale: float | None   # None: what stable-audio-tools applies to the backbone
    sampler: str
    schedule: str               # v objective only
    sigma_min: float | None     # v objective only (rectified flow has no lower level)
    sigma_max: float            # where sampling starts: a sigma, or a time (rectified flow)
    rho: float


def resolve_sampling(model: StableAudioModel, *, steps: int | None = None,
                     cfg_scale: float | None = None, cfg_rescale: float | None = None,
                     sampler: str | None = None, schedule: str = "polyexponential",
                     sigma_min: float | None = None, sigma_max: float | None = None,
                     rho: float = 1.0) -> SamplingSettings:
    """The sampling settings of one request; None takes the model's default (`defaults_for`)."""
    check_request(steps=steps, cfg_scale=cfg_scale, cfg_rescale=cfg_rescale, sigma_min=sigma_min,
                  sigma_max=sigma_max)
    defaults = defaults_for(model)
    steps = defaults["steps"] if steps is None else int(steps)
    sigma_min = defaults["sigma_min"] if sigma_min is None else sigma_min
    sigma_max = defaults["sigma_max"] if sigma_max is None else sigma_max
    if sigma_min is not None and sigma_min >= sigma_max:
        raise InputError(f"sigma_min must be below sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return SamplingSettings(
        steps=steps, cfg_scale=defaults["cfg_scale"] if cfg_scale is None else float(cfg_scale),
        cfg_rescale=cfg_rescale, sampler=sampler or defaults["sampler"], schedule=schedule,
        sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
    )


@dataclass
class SourceLatents:
    """What audio-to-audio and inpainting start from.

    `latents` [B or 1, C, L] are noised to the start level: `noise_level` (a sigma, or a
    rectified-flow time) when given, else the level of the `denoise` strength (1: the settings'
    sigma_max, as from pure noise). `noise_mask` [B or 1, 1, L] regenerates where it is 1 and
    keeps the source where it is 0.
    """

    latents: torch.Tensor | None = None
    noise_mask: torch.Tensor | None = None
    noise_level: float | None = None
    denoise: float = 1.0


@torch.inference_mode()
def generate(
    model: StableAudioModel, prompt: str | None = None, *, negative_prompt: str | None = None,
    seconds_start: float = 0.0, seconds_total: float | None = None,
    conditioning: dict | list[dict] | None = None, negative_conditioning: dict | list[dict] | None = None,
    steps: int | None = None, cfg_scale: float | None = None, cfg_rescale: float | None = None,
    sampler: str | None = None, schedule: str = "polyexponential", sigma_min: float | None = None,
    sigma_max: float | None = None, rho: float = 1.0, seed: int | None = -1,
    seed_per_item: bool = False, batch_size: int = 1, sample_size: int | None = None,
    init_audio: tuple[int, torch.Tensor] | None = None, init_latents: torch.Tensor | None = None,
    init_noise_level: float | None = None, noise_mask: torch.Tensor | None = None,
    callback: ProgressCallback | None = None, decode: bool = True, trim: bool = True,
    inputs: ModelInputs | None = None, negative_inputs: ModelInputs | None = None,
    duration: float | None = None, apg_scale: float = 1.0, inpaint: tuple | list | None = None,
) -> GenerationResult:
    """Generate audio. Unset sampling arguments take the model's recommended defaults.

    Conditioning comes either from `prompt`/`seconds_start`/`seconds_total` or, for models with
    other conditioner ids, from explicit metadata dicts (`conditioning`, one dict or one per item).
    `init_audio` (sample_rate, Tensor[C, T]) or `init_latents` ([B, C, L]) start from existing
    audio at `init_noise_level` (sigma_max); `noise_mask` ([B or 1, 1, L] latents, 1 = regenerate,
    0 = keep the source) restricts what changes, for inpainting and continuation.
    `cfg_rescale` None applies what stable-audio-tools applies to the backbone (DiT 0, U-Net 0.4).
    `inputs` / `negative_inputs` are conditioning already encoded (see `encode_conditioners` and
    `assemble_conditioning`), batch 1 or batch_size; then `prompt` and `conditioning` stay unset
    and `seconds_total` only sets the trim point and the window check.
    SA3 models: `duration` (= seconds_total) sets the window, `apg_scale` 1 is APG, 0 plain CFG;
    `init_audio` is the audio-to-audio source or, with `inpaint` ((start, end) seconds or a list;
    past the source's end extends it), the inpainting source.
    """
    seconds_total = seconds_total if duration is None else duration
    check_request(batch_size=batch_size, seconds_start=seconds_start, seconds_total=seconds_total,
                  init_noise_level=init_noise_level)
    seed = resolve_seed(seed, batch_size, seed_per_item)
    settings = resolve_sampling(model, steps=steps, cfg_scale=cfg_scale, cfg_rescale=cfg_rescale,
                                sampler=sampler, schedule=schedule, sigma_min=sigma_min,
                                sigma_max=sigma_max, rho=rho)
    length, seconds_total, seconds = generation_window(model, sample_size, seconds_start, seconds_total,
                                                       conditioning, batch_size)
    positive, negative = build_conditioning(
        model, batch_size, prompt=prompt, negative_prompt=negative_prompt, seconds_start=seconds_start,
        seconds_total=seconds_total, conditioning=conditioning, negative_conditioning=negative_conditioning,
        inputs=inputs, negative_inputs=negative_inputs)
    if model.is_sa3:
        _check_sa3_arguments(seed_per_item, noise_mask)
        source = prepare_sa3_source(model, length, seconds, init_audio, init_latents, init_noise_level,
                                    inpaint)
        latents, noise, audio = sample_sa3(model, positive, negative, settings, seed=seed, seconds=seconds,
                                           source=source, apg_scale=apg_scale, callback=callback, decode=decode)
    else:
        source = prepare_source(model, length, init_audio, init_latents, init_noise_level, noise_mask)
        latents, noise = sample_latents(model, positive, negative, settings, seed=seed, batch_size=batch_size,
                                        frames=length // model.downsampling_ratio, seed_per_item=seed_per_item,
                                        source=source, callback=callback)
        audio = _decode(model, latents, seconds_total, decode, trim)
    seeds = [seed + i for i in range(batch_size)] if seed_per_item else [seed] * batch_size
    return GenerationResult(audio=audio, latents=latents, sample_rate=model.sample_rate, seeds=seeds,
                            initial_noise=noise)


def generation_window(model: StableAudioModel, sample_size: int | None, seconds_start: float,
                      seconds_total: float | None, conditioning: dict | list[dict] | None,
                      batch_size: int) -> tuple[int, float, list[float] | None]:
    """(window in audio samples, seconds_total, each item's seconds for SA3 models or None)."""
    if model.is_sa3:
        seconds = sa3_seconds(seconds_total, conditioning, batch_size)
        return sa3_window(model, seconds, sample_size), max(seconds), seconds
    length = window_length(model, sample_size)
    frames = length // model.downsampling_ratio
    return length, check_duration(model, frames, seconds_start, seconds_total), None


def _check_sa3_arguments(seed_per_item: bool, noise_mask: torch.Tensor | None) -> None:
    if seed_per_item or noise_mask is not None:
        raise InputError("Stable Audio 3 models take inpaint=(start, end) instead of noise_mask, "
                         "and one seed for the batch (seed_per_item=False)")


def _decode(model: StableAudioModel, latents: torch.Tensor, seconds_total: float, decode: bool,
            trim: bool) -> torch.Tensor | None:
    if not decode or model.autoencoder is None:
        return None
    audio = decode_latents(model, latents)
    return trim_silence(audio, model.sample_rate, seconds_total) if trim else audio


def check_duration(model: StableAudioModel, frames: int, seconds_start: float,
                   seconds_total: float | None,
                   remedy: str = "raise sample_size or lower seconds_total") -> float:
    """seconds_total (None: the whole window) checked against the window that holds `frames`
    latent frames; returns it. `remedy` says what the caller's user can change."""
    window_seconds = window_frames(model, frames) * model.downsampling_ratio / model.sample_rate
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
            f"{window_seconds:.2f} s; {remedy}"
        )
    return seconds_total


def build_conditioning(model: StableAudioModel, batch_size: int, *, prompt: str | None = None,
                       negative_prompt: str | None = None, seconds_start: float = 0.0,
                       seconds_total: float, conditioning: dict | list[dict] | None = None,
                       negative_conditioning: dict | list[dict] | None = None,
                       inputs: ModelInputs | None = None,
                       negative_inputs: ModelInputs | None = None,
                       ) -> tuple[ModelInputs, ModelInputs | None]:
    """(positive, negative or None) ModelInputs for guidance, from encoded `inputs` or from a
    prompt / metadata dicts run through the model's conditioners (see `generate`)."""
    if inputs is not None:
        if any(v is not None for v in (prompt, conditioning, negative_prompt, negative_conditioning)):
            raise InputError("give encoded inputs or prompt/conditioning, not both")
        return inputs, negative_inputs
    if negative_inputs is not None:
        raise InputError("negative_inputs needs inputs; use negative_prompt otherwise")

    def metadata(explicit, text) -> list[dict]:
        if explicit is not None:
            return _as_batch(explicit, batch_size)
        return _metadata(text, seconds_start, seconds_total, batch_size)

    positive = model.condition(metadata(conditioning, prompt))
    if negative_conditioning is None and negative_prompt is None:
        return positive, None
    return positive, model.condition(metadata(negative_conditioning, negative_prompt))


def prepare_source(model: StableAudioModel, length: int,
                   init_audio: tuple[int, torch.Tensor] | None = None,
                   init_latents: torch.Tensor | None = None, init_noise_level: float | None = None,
                   noise_mask: torch.Tensor | None = None) -> SourceLatents:
    """generate's audio-to-audio and inpainting arguments -> SourceLatents for a window of
    `length` audio samples (init audio is encoded to that length)."""
    if init_audio is not None:
        if init_latents is not None:
            raise InputError("give init_audio or init_latents, not both")
        rate, audio = init_audio
        check_finite(audio, "init_audio", is_input=True)
        init_latents = encode_audio(model, audio, rate, length=length)
    return SourceLatents(latents=init_latents, noise_mask=noise_mask, noise_level=init_noise_level)


@torch.inference_mode()
def sample_latents(model: StableAudioModel, positive: ModelInputs, negative: ModelInputs | None,
                   settings: SamplingSettings, *, seed: int, batch_size: int, frames: int,
                   seed_per_item: bool = False, source: SourceLatents | None = None,
                   callback: ProgressCallback | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided sampling of `batch_size` latent clips of `frames` frames.

    positive / negative: conditioning of batch 1 or batch_size (negative None: the
    unconditional side). A backbone that takes only whole multiples of frames samples a window
    padded to one (the padding regenerated, as unknown audio), cropped back to `frames`.
    Returns (latents Tensor[B, C, frames], the initial noise Tensor[B, C, window]).
    """
    seed = resolve_seed(seed, batch_size, seed_per_item)
    window = window_frames(model, frames)
    noise = initial_noise((batch_size, model.io_channels, window), seed, seed_per_item, model.device)
    source = _fit_source(model, source or SourceLatents(), batch_size, frames, window)
    negative = None if negative is None else batch_inputs(negative, batch_size)
    model_fn = model.model_fn(batch_inputs(positive, batch_size), settings.cfg_scale, negative,
                              settings.cfg_rescale)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    latents = _run_sampler(model, model_fn, noise.to(model.dtype), settings, source, generator, callback)
    return check_finite(latents, "sampler")[..., :frames], noise


def window_frames(model: StableAudioModel, frames: int) -> int:
    """Latent frames of the smallest window the backbone accepts that holds `frames`."""
    ratio = model.downsampling_ratio
    return window_length(model, frames * ratio) // ratio


def _fit_source(model: StableAudioModel, source: SourceLatents, batch_size: int, frames: int,
                window: int) -> SourceLatents:
    """The source checked against `frames`, on the model's device and dtype, padded to `window`."""
    if source.latents is None:
        if source.noise_mask is not None:
            raise InputError("noise_mask needs the source to keep: pass init_audio or init_latents")
        return source
    latents = source.latents.to(model.device, model.dtype)
    if latents.shape[1:] != (model.io_channels, frames):
        raise InputError(f"init latents have shape {tuple(latents.shape)}, expected [B, "
                         f"{model.io_channels}, {frames}] for this window")
    if latents.shape[0] == 1 and batch_size > 1:
        latents = latents.expand(batch_size, -1, -1)
    mask = source.noise_mask
    if mask is not None:
        mask = mask.to(model.device, model.dtype)
        if mask.shape[-1] != frames:
            raise InputError(f"noise_mask has {mask.shape[-1]} frames, the latents {frames}")
    if window > frames:
        latents = F.pad(latents, (0, window - frames))
        mask = None if mask is None else F.pad(mask, (0, window - frames), value=1.0)
    return replace(source, latents=latents, noise_mask=mask)


def _run_sampler(model: StableAudioModel, model_fn, noise: torch.Tensor, settings: SamplingSettings,
                 source: SourceLatents, generator: torch.Generator,
                 callback: ProgressCallback | None) -> torch.Tensor:
    start = _start_level(model, settings, source)
    if model.objective == "v":
        return loop.sample_v(
            model_fn, noise, steps=settings.steps, sampler=settings.sampler, schedule=settings.schedule,
            sigma_min=settings.sigma_min, sigma_max=start, rho=settings.rho,
            init_latents=source.latents, noise_mask=source.noise_mask, generator=generator,
            callback=callback,
        )
    return loop.sample_rf(
        model_fn, noise, steps=settings.steps, sampler=settings.sampler, sigma_max=start,
        init_latents=source.latents, noise_mask=source.noise_mask, generator=generator,
        callback=callback,
    )


def _start_level(model: StableAudioModel, settings: SamplingSettings, source: SourceLatents) -> float:
    """The noise level sampling starts from; audio-to-audio starts lower to keep the source."""
    if source.latents is None:
        return settings.sigma_max
    if source.noise_level is not None:
        return source.noise_level
    if source.denoise < 1:
        return _denoise_level(model.objective, settings, source.denoise)
    return settings.sigma_max


# --- conditioning in parts: text and timing encoded separately, then assembled -------------------
# (the node pack encodes text once in one node and timing in another; generate takes the result)

def conditioner_ids(model: StableAudioModel, types: tuple[str, ...] | None = None) -> list[str]:
    """Ids of the model's conditioners in config order, only those of config `types` if given."""
    return [spec.id for spec in model.config.conditioners if types is None or spec.type in types]


def text_conditioner_ids(model: StableAudioModel) -> list[str]:
    """Ids of the model's text conditioners (those fed by a text encoder), in config order."""
    return [i for i, conditioner in model.conditioner.conditioners.items()
            if isinstance(conditioner, TextConditioner)]


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

def window_seconds(model: StableAudioModel) -> float:
    """The length the model was trained to generate (its config's sample_size), in seconds: the
    longest duration it conditions on well."""
    return model.config.sample_size / model.sample_rate


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
    settings = resolve_sampling(model, sigma_min=sigma_min, sigma_max=sigma_max)
    return _denoise_level(model.objective, settings, denoise)


def _denoise_level(objective: str, settings: SamplingSettings, denoise: float) -> float:
    if not 0 < denoise <= 1:
        raise InputError(f"denoise must be in (0, 1], got {denoise}")
    high = float(settings.sigma_max)
    if objective != "v":
        return min(1.0, high) * denoise
    low = float(settings.sigma_min)
    if not 0 < low < high:
        raise InputError(f"need 0 < sigma_min < sigma_max, got {low}, {high}")
    return math.exp(math.log(low) + denoise * (math.log(high) - math.log(low)))


# --- Stable Audio 3: window from the duration, inpainting / audio-to-audio source, sampling --------

@dataclass
class SA3Source:
    """What an SA3 generation starts from: `init_latents` [1, C, L] for audio-to-audio (started
    at `sigma_max`), and the DiT's `local_add_cond` [1 or B, 1 + C, L] = [keep mask, masked
    source latents] (zeros for text-to-audio). `paste_kept` puts the source's latents back on the
    kept frames after sampling (see sa3.paste_kept)."""

    local_add_cond: torch.Tensor | None = None
    init_latents: torch.Tensor | None = None
    sigma_max: float = 1.0
    paste_kept: bool = False


def sa3_seconds(seconds_total: float | None, conditioning: dict | list[dict] | None,
                batch_size: int) -> list[float]:
    """Each item's seconds_total: from the conditioning dicts when given, else `seconds_total`."""
    if conditioning is not None:
        values = [c.get("seconds_total") for c in _as_batch(conditioning, batch_size)]
    else:
        values = [seconds_total] * batch_size
    if any(v is None for v in values):
        raise InputError("Stable Audio 3 models need a duration: pass duration= (seconds) or "
                         "seconds_total in every conditioning dict")
    values = [float(v) for v in values]
    if min(values) <= 0:
        raise InputError(f"durations must be positive, got {values}")
    return values


def sa3_window(model: StableAudioModel, seconds: list[float], sample_size: int | None = None) -> int:
    """Audio samples SA3 generates for these durations: the longest + 6 s, rounded up to the
    SAME alignment (as the reference); a duration beyond the model's maximum (sample_size, by
    default the config's) is an InputError naming the limit."""
    encoder = model.config.pretransform["config"]["encoder"]["config"]
    return sa3.audio_length_for_duration(
        seconds, max_samples=int(sample_size or model.config.sample_size), sample_rate=model.sample_rate,
        downsampling_ratio=model.downsampling_ratio, align=sa3.latent_align(encoder))


def sa3_inpaint_condition(model: StableAudioModel, source: tuple[int, torch.Tensor],
                          regions: tuple[float, float] | list[tuple[float, float]], length: int,
                          seconds_total: float) -> torch.Tensor:
    """The inpainting/outpainting condition, Tensor[1, 1 + C, L]: source audio (sample_rate,
    Tensor[C, T]) encoded at `length` samples, kept outside the `regions` (seconds; a region past
    the source's end extends it) and before seconds_total."""
    regions = [regions] if isinstance(regions[0], (int, float)) else list(regions)
    rate, audio = source
    latents = encode_audio(model, audio, rate, length=length)
    mask = sa3.inpaint_mask_from_seconds(regions, length, seconds_total=seconds_total,
                                         sample_rate=model.sample_rate)
    mask = sa3.latent_inpaint_mask(mask, latents.shape[-1]).to(latents.device, latents.dtype)
    return sa3.local_add_cond(1, latents.shape[1], latents.shape[-1], mask=mask, source_latents=latents)


def prepare_sa3_source(model: StableAudioModel, length: int, seconds: list[float],
                       init_audio: tuple[int, torch.Tensor] | None = None,
                       init_latents: torch.Tensor | None = None, init_noise_level: float | None = None,
                       inpaint=None) -> SA3Source:
    """generate's SA3 audio arguments -> SA3Source for a window of `length` samples."""
    if inpaint is not None:
        if init_audio is None:
            raise InputError("inpaint needs the source audio: pass init_audio=(sample_rate, waveform)")
        local = sa3_inpaint_condition(model, init_audio, inpaint, length, max(seconds))
        if init_noise_level is None:
            return SA3Source(local_add_cond=local)
    if init_audio is not None and init_latents is None:
        init_latents = encode_audio(model, init_audio[1], init_audio[0], length=length)
    if init_latents is None:
        return SA3Source()
    level = 1.0 if init_noise_level is None else float(init_noise_level)
    return SA3Source(local_add_cond=local if inpaint is not None else None, init_latents=init_latents,
                     sigma_max=level)


def sa3_schedule(model: StableAudioModel, steps: int, seconds: list[float], frames: int,
                 sigma_max: float = 1.0) -> torch.Tensor:
    """The per-item flow-time schedule Tensor[B, steps + 1] of an SA3 generation (the config's
    sampling shift over each item's effective length)."""
    diffusion = model.config.raw["model"]["diffusion"]
    return sa3.time_schedule(
        steps, len(seconds), sigma_max=sigma_max,
        shift=sa3.sampling_shift_from_config(diffusion.get("sampling_distribution_shift_options")),
        lengths=sa3.effective_lengths(seconds, sample_rate=model.sample_rate,
                                      downsampling_ratio=model.downsampling_ratio), fallback_length=frames)


def sa3_step_net(model: StableAudioModel):
    """The SA3 backbone call the samplers use, running model.step_hooks(t) first (LoRA switching)."""
    backbone = model.backbone

    def net(x: torch.Tensor, t: torch.Tensor, **inputs) -> torch.Tensor:
        for hook in model.step_hooks:
            hook(t)
        return backbone(x, t, **inputs)

    return net


@torch.inference_mode()
def sample_sa3(model: StableAudioModel, positive: ModelInputs, negative: ModelInputs | None,
               settings: SamplingSettings, *, seed: int, seconds: list[float], source: SA3Source,
               apg_scale: float = 1.0, callback: ProgressCallback | None = None, decode: bool = True,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stable Audio 3 sampling as the reference's generate: one generator seeded with `seed` draws
    the initial noise, each sampler step's noise, then the SAME decode noise. Returns (latents
    [B, C, L], initial noise, audio [B, 2, int(duration * sr)] or None)."""
    batch, length = len(seconds), sa3_window(model, seconds, model.config.sample_size)
    frames = length // model.downsampling_ratio
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = sa3.initial_noise(batch, model.io_channels, frames, generator=generator, device=model.device,
                              dtype=model.dtype)
    padding_mask = sa3.padding_mask_from_seconds(seconds, frames, sample_rate=model.sample_rate,
                                                 downsampling_ratio=model.downsampling_ratio).to(model.device)
    times = sa3_schedule(model, settings.steps, seconds, frames, sigma_max=source.sigma_max)
    local = source.local_add_cond
    if local is None:
        local = sa3.local_add_cond(batch, model.io_channels, frames)
    positive, negative = batch_inputs(positive, batch), None if negative is None else batch_inputs(negative, batch)
    model_fn = sa3.guided_velocity(
        sa3_step_net(model), cross_attn_cond=positive.cross_attn_cond, global_embed=positive.global_embed,
        local_add_cond=local.expand(batch, -1, -1).to(model.device, model.dtype), padding_mask=padding_mask,
        negative_cross_attn_cond=None if negative is None else negative.cross_attn_cond,
        negative_cross_attn_mask=None if negative is None else negative.cross_attn_mask,
        cfg_scale=settings.cfg_scale, apg_scale=apg_scale)
    init = None if source.init_latents is None else source.init_latents.to(model.device, model.dtype).expand(batch, -1, -1)
    latents = sa3.sample(model_fn, noise, times, sampler=settings.sampler, sigma_max=source.sigma_max,
                         init_latents=init, generator=generator, callback=callback)
    latents = check_finite(latents, "sampler")
    if source.paste_kept and source.local_add_cond is not None:
        latents = sa3.paste_kept(latents, local)
    audio = decode_sa3_latents(model, latents, padding_mask, seconds, generator) if decode else None
    return latents, noise, audio


def sample_sa3_window(model: StableAudioModel, positive: ModelInputs, negative: ModelInputs | None,
                      settings: SamplingSettings, *, seed: int, seconds_total: float, batch_size: int = 1,
                      latents: torch.Tensor | None = None, denoise: float = 1.0,
                      inpaint: dict | None = None, apg_scale: float = 1.0,
                      callback: ProgressCallback | None = None) -> torch.Tensor:
    """The sampler node's SA3 path: latents [B, C, L] for the window of `seconds_total`.

    `latents` with `denoise` < 1 is the audio-to-audio source (cropped, or zero-padded past its
    end, to the window); `inpaint` is an `sa3_inpaint_condition` result as {"local_add_cond",
    "paste_kept"} made for this seconds_total."""
    seconds = sa3_seconds(seconds_total, None, batch_size)
    frames = sa3_window(model, seconds) // model.downsampling_ratio
    local = None if inpaint is None else inpaint["local_add_cond"]
    if local is not None and local.shape[-1] != frames:
        raise InputError(f"the inpaint condition covers {local.shape[-1]} latent frames but seconds_total="
                         f"{seconds_total} needs {frames}; make it from the same Timing Condition")
    source = SA3Source(local_add_cond=local, paste_kept=bool(inpaint and inpaint.get("paste_kept")))
    if latents is not None and denoise < 1:
        init = F.pad(latents[..., :frames], (0, max(0, frames - latents.shape[-1])))
        source = replace(source, init_latents=init, sigma_max=_denoise_level(model.objective, settings, denoise))
    latents, _, _ = sample_sa3(model, positive, negative, settings, seed=seed, seconds=seconds, source=source,
                               apg_scale=apg_scale, callback=callback, decode=False)
    return latents


def decode_sa3_latents(model: StableAudioModel, latents: torch.Tensor, padding_mask: torch.Tensor,
                       seconds: list[float], generator: torch.Generator | None = None) -> torch.Tensor:
    """SAME decode with its noise on (drawn from `generator`), zero past each item's valid
    frames, clamp to [-1, 1], cut to int(duration * sr) samples when all durations agree."""
    audio = decode_latents(model, latents, generator=generator)
    keep = padding_mask.to(audio.device).unsqueeze(1).repeat_interleave(model.downsampling_ratio, dim=-1)
    keep = F.pad(keep[..., :audio.shape[-1]], (0, max(0, audio.shape[-1] - keep.shape[-1])), value=False)
    audio = (audio * keep.to(audio.dtype)).clamp(-1, 1)
    if len(set(seconds)) == 1:
        audio = audio[..., :int(seconds[0] * model.sample_rate)]
    return audio
