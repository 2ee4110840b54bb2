"""Stable Audio 3 sampling: lengths, masks, the time schedule, guidance and the samplers.

Everything follows stable-audio-3's `StableAudioModel.generate` and `sample_diffusion`:
- the latent length comes from the longest seconds_total plus 6 s of headroom, rounded up to the
  autoencoder's alignment; a padding mask marks the frames past each item's own duration (+6 s);
- the flow-time schedule is built per item, Tensor[B, steps + 1]: linspace(sigma_max, 0) mapped
  uniformly into log-SNR (the start may depend on the item's length), then its first value is set
  back to sigma_max (for sigma_max < 1 the second value can exceed the first; kept as is);
- guidance combines the conditional and unconditional clean estimates x0 = x - t v, optionally
  keeping only the part of their difference orthogonal to the conditional estimate (APG,
  Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High Guidance Scales");
- the samplers are samplers.py's (rf_pingpong, rf_euler, rf_dpmpp) over the per-item schedule,
  drawing noise in the reference's order: the initial noise first, then one draw per ping-pong
  step, the last step included.

Times are flow times t in [0, 1] with x_t = (1 - t) x0 + t eps and v = eps - x0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import ConfigError, InputError
from .denoisers import ModelFn, per_item, rf_denoiser
from .samplers import StepCallback, gaussian_noise, rf_dpmpp, rf_euler, rf_pingpong

SAMPLE_RATE = 44100
DURATION_PADDING_SECONDS = 6.0
RF_OBJECTIVES = ("rectified_flow", "rf_denoiser")
# The reference's default sampler for each objective.
DEFAULT_SAMPLER = {"rf_denoiser": "pingpong", "rectified_flow": "euler"}


# --- lengths and masks ---------------------------------------------------------------------------

def latent_align(encoder_config: dict) -> int:
    """Latent frames the SAME encoder's chunking needs: chunk_size // strides[0] (chunk_size 32
    when the config has none, as the reference assumes for every encoder)."""
    return int(encoder_config.get("chunk_size", 32)) // int(encoder_config["strides"][0])


def audio_length_for_duration(seconds_totals: Sequence[float], *, max_samples: int,
                              sample_rate: int = SAMPLE_RATE, downsampling_ratio: int = 4096,
                              align: int = 2,
                              padding_seconds: float = DURATION_PADDING_SECONDS) -> int:
    """Samples to generate for the longest seconds_total: (duration + padding) * sample_rate,
    rounded up to a multiple of downsampling_ratio, then of downsampling_ratio * align, and
    limited to max_samples (which then only shortens the headroom).

    Raises InputError when a duration itself does not fit in max_samples (the model's maximum).
    Divide by downsampling_ratio for the latent length.
    """
    longest = max(float(s) for s in seconds_totals)
    if int(longest * sample_rate) > max_samples:
        raise InputError(
            f"duration {longest:g} s is longer than this model generates: at most {max_samples} "
            f"samples ({max_samples / sample_rate:.2f} s at {sample_rate} Hz); choose a shorter "
            f"duration"
        )
    if longest <= 0:
        return max_samples
    target = int((longest + padding_seconds) * sample_rate)
    target = -(-target // downsampling_ratio) * downsampling_ratio
    step = downsampling_ratio * align
    target = -(-target // step) * step
    return min(target, max_samples)


def effective_lengths(seconds_totals: Sequence[float], *, sample_rate: int = SAMPLE_RATE,
                      downsampling_ratio: int = 4096) -> Tensor:
    """Latent frames each item's duration covers, ceil(int(seconds * sr) / ratio): Tensor[B] float32."""
    lengths = [math.ceil(int(float(s) * sample_rate) / downsampling_ratio) for s in seconds_totals]
    return torch.tensor(lengths, dtype=torch.float32)


def padding_mask_from_seconds(seconds_totals: Sequence[float], latent_length: int, *,
                              sample_rate: int = SAMPLE_RATE, downsampling_ratio: int = 4096,
                              headroom_seconds: float = DURATION_PADDING_SECONDS) -> Tensor:
    """Tensor[B, L] bool, True on the first min(effective length + headroom frames, L) frames.

    Headroom frames are int(headroom_seconds * sr / ratio) (64 for 6 s at 44.1 kHz / 4096).
    """
    lengths = effective_lengths(seconds_totals, sample_rate=sample_rate,
                                downsampling_ratio=downsampling_ratio)
    headroom = int(headroom_seconds * sample_rate / downsampling_ratio)
    valid = (lengths + headroom).clamp(max=latent_length).long()
    return torch.arange(latent_length)[None, :] < valid[:, None]


def inpaint_mask_from_seconds(regions: Sequence[tuple[float, float]], audio_samples: int, *,
                              seconds_total: float, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Tensor[1, audio_samples] float: 1 = keep the source, 0 = regenerate.

    Each (start, end) region in seconds becomes [int(start * sr), int(end * sr)) zeros; everything
    past int(seconds_total * sr) (the longest duration) is zero too, as the model was trained.
    A region past the source's end is how a clip is extended (outpainting).
    """
    mask = torch.ones(1, audio_samples)
    for start, end in regions:
        if end < start:
            raise InputError(f"inpaint region ({start}, {end}) ends before it starts; give (start, end) "
                             f"in seconds with start <= end")
        first = min(int(start * sample_rate), audio_samples)
        last = min(int(end * sample_rate), audio_samples)
        mask[:, first:last] = 0
    if seconds_total > 0:
        mask[:, min(int(seconds_total * sample_rate), audio_samples):] = 0
    return mask


def latent_inpaint_mask(mask: Tensor, latent_length: int) -> Tensor:
    """Tensor[B, N] audio-rate mask -> Tensor[B, 1, L], nearest neighbour (the frame's first sample)."""
    return F.interpolate(mask.float().unsqueeze(1), size=latent_length, mode="nearest")


def local_add_cond(batch: int, channels: int, latent_length: int, *, mask: Tensor | None = None,
                   source_latents: Tensor | None = None) -> Tensor:
    """The DiT's local conditioning, Tensor[B, 1 + C, L] = [mask, source_latents * mask].

    Without a mask (text-to-audio) both parts are zeros, which the DiT still embeds.
    mask: Tensor[B or 1, 1, L] (1 = keep); source_latents: Tensor[B or 1, C, L].
    """
    if mask is None:
        return torch.zeros(batch, 1 + channels, latent_length)
    mask = mask.expand(batch, 1, latent_length)
    if source_latents is None:
        masked = torch.zeros(batch, channels, latent_length, device=mask.device, dtype=mask.dtype)
    else:
        masked = source_latents.expand(batch, -1, -1) * mask
    return torch.cat([mask, masked], dim=1)


def paste_kept(latents: Tensor, local_add_cond: Tensor) -> Tensor:
    """Latents Tensor[B, C, L] with the kept frames (mask 1 in `local_add_cond` [B or 1, 1 + C, L])
    replaced by the source's: an opt-in that makes inpainting leave the kept ranges exactly as
    encoded (the reference conditions on them but does not paste them back)."""
    keep = local_add_cond[:, :1].to(latents.device, latents.dtype)
    source = local_add_cond[:, 1:].to(latents.device, latents.dtype)
    return source + latents * (1 - keep)  # source is already latents * keep


# --- the time schedule ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LogSNRShift:
    """t -> sigmoid(-logsnr) with logsnr = end - t * (end - start(length)): uniform steps in
    log-SNR from logsnr_end (t = 0) to start(length) = anchor_logsnr - rate * log2(length /
    anchor_length) (t = 1); t = 0 and t >= 1 map exactly to 0 and 1."""

    anchor_length: float = 2000
    anchor_logsnr: float = -6.2
    rate: float = 1.0
    logsnr_end: float = 2.0

    def shift(self, t: Tensor, lengths: Tensor | float) -> Tensor:
        """t: Tensor[N]; lengths: Tensor[B] -> Tensor[B, N], or a number -> Tensor[N]."""
        if isinstance(lengths, Tensor):
            start = self.anchor_logsnr - self.rate * torch.log2(lengths.float() / self.anchor_length)
            start = start[:, None]
            times = t[None, :]
        else:
            start = self.anchor_logsnr - self.rate * math.log2(lengths / self.anchor_length)
            times = t
        shifted = torch.sigmoid(-(self.logsnr_end - times * (self.logsnr_end - start)))
        shifted = torch.where(t <= 0, torch.zeros_like(shifted), shifted)
        return torch.where(t >= 1, torch.ones_like(shifted), shifted)


# The schedule stable-audio-3 samples with when a config has no sampling_distribution_shift_options.
DEFAULT_SAMPLING_SHIFT = LogSNRShift(rate=0.0, anchor_logsnr=-6.2, logsnr_end=2.0)


def sampling_shift_from_config(options: dict | None) -> LogSNRShift | None:
    """`model.diffusion.sampling_distribution_shift_options` -> the shift (None: no shift)."""
    if options is None:
        return DEFAULT_SAMPLING_SHIFT
    kind = options.get("type", "full")
    kwargs = {key: value for key, value in options.items() if key != "type"}
    if kind == "none":
        return None
    if kind == "logsnr":
        allowed = {"anchor_length", "anchor_logsnr", "rate", "logsnr_end"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in sampling_distribution_shift_options; "
                              f"allowed for type 'logsnr': {sorted(allowed)}")
        return LogSNRShift(**kwargs)
    raise ConfigError(f"sampling_distribution_shift_options type {kind!r} is not supported; "
                      f"use 'logsnr', 'none', or remove the options (the released models' default)")


def time_schedule(steps: int, batch: int, *, sigma_max: float = 1.0,
                  shift: LogSNRShift | None = DEFAULT_SAMPLING_SHIFT,
                  lengths: Tensor | None = None, fallback_length: int | None = None) -> Tensor:
    """The per-item flow-time schedule, Tensor[B, steps + 1] float32, from sigma_max down to 0.

    lengths: Tensor[B] effective latent lengths (see `effective_lengths`); without them the
    shift uses fallback_length (the latent length) for every item. The first value is set to
    sigma_max after the shift, as the reference does.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < sigma_max <= 1:
        raise InputError(f"sigma_max (init noise level) must be in (0, 1], got {sigma_max!r}")
    if lengths is not None and lengths.shape != (batch,):
        raise InputError(f"lengths must have shape [{batch}] (one per item), got {tuple(lengths.shape)}")
    t = torch.linspace(sigma_max, 0, steps + 1)
    if shift is not None:
        if lengths is not None:
            t = shift.shift(t, lengths.clamp(min=1))
        elif fallback_length is not None:
            t = shift.shift(t, max(int(fallback_length), 1))
        else:
            raise InputError("the schedule's shift needs the items' lengths or a fallback length")
        t[..., 0] = sigma_max
    return t.expand(batch, steps + 1).clone() if t.dim() == 1 else t


# --- guidance ------------------------------------------------------------------------------------

def apg_project(v0: Tensor, v1: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Split v0 into parts parallel and orthogonal to v1 per item, over channels and frames.

    v0, v1: Tensor[B, C, L]; padding_mask: Tensor[B, L] bool, when given only valid frames count
    and the orthogonal part is zero on padded frames. Computed in float32, returned in v0's dtype.
    """
    dtype = v0.dtype
    v0, v1 = v0.float(), v1.float()
    axes = [-1, -2]
    if padding_mask is None:
        unit = F.normalize(v1, dim=axes)
        parallel = (v0 * unit).sum(dim=axes, keepdim=True) * unit
        orthogonal = v0 - parallel
    else:
        mask = padding_mask.unsqueeze(1).float()
        v1_masked = v1 * mask
        unit = v1_masked / v1_masked.norm(dim=axes, keepdim=True).clamp(min=1e-8)
        parallel = ((v0 * mask) * unit).sum(dim=axes, keepdim=True) * unit
        orthogonal = (v0 - (v0 * unit).sum(dim=axes, keepdim=True) * unit) * mask
    return parallel.to(dtype), orthogonal.to(dtype)


def guided_diff(cond_denoised: Tensor, uncond_denoised: Tensor, *, apg_scale: float = 1.0,
                padding_mask: Tensor | None = None, norm_threshold: float = 0.0) -> Tensor:
    """The guidance direction: cond - uncond clean estimates, optionally norm-limited, with APG
    keeping its part orthogonal to the conditional estimate (apg_scale 1), all of it (0), or a
    blend of the two."""
    diff = cond_denoised - uncond_denoised
    if norm_threshold > 0:
        masked = diff if padding_mask is None else diff * padding_mask.unsqueeze(1).float()
        norm = masked.norm(p=2, dim=[-1, -2], keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    if apg_scale == 0.0:
        return diff
    _, orthogonal = apg_project(diff, cond_denoised, padding_mask)
    if apg_scale == 1.0:
        return orthogonal
    return apg_scale * orthogonal + (1 - apg_scale) * diff


def unconditional_tokens(cross_attn_cond: Tensor, negative_cross_attn_cond: Tensor | None = None,
                         negative_cross_attn_mask: Tensor | None = None) -> Tensor:
    """The unconditional branch's cross-attention tokens: the negative conditioning with its masked
    positions zeroed, or all zeros without one (not the learned padding embedding)."""
    null = torch.zeros_like(cross_attn_cond)
    if negative_cross_attn_cond is None:
        return null
    negative = negative_cross_attn_cond.to(cross_attn_cond.dtype)
    if negative_cross_attn_mask is not None:
        negative = torch.where(negative_cross_attn_mask.bool().unsqueeze(2), negative, null)
    return negative


def guided_velocity(net: Callable[..., Tensor], *, cross_attn_cond: Tensor,
                    global_embed: Tensor | None = None, local_add_cond: Tensor | None = None,
                    padding_mask: Tensor | None = None, negative_cross_attn_cond: Tensor | None = None,
                    negative_cross_attn_mask: Tensor | None = None, cfg_scale: float = 1.0,
                    apg_scale: float = 1.0, cfg_interval: tuple[float, float] = (0.0, 1.0),
                    norm_threshold: float = 0.0) -> ModelFn:
    """model_fn(x, t) -> v around `net(x, t, cross_attn_cond, global_embed, local_add_cond,
    padding_mask)` (an SA3DiT), with classifier-free guidance as stable-audio-3 does it.

    Guidance runs when cfg_scale != 1 and the first item's t lies in cfg_interval: one batched
    call on [conditional; unconditional] inputs (only the cross-attention tokens differ), then
    x0 = x0_c + (cfg_scale - 1) * guided_diff(x0_c, x0_u) and v = (x - x0) / t.
    """
    inputs = dict(cross_attn_cond=cross_attn_cond, global_embed=global_embed,
                  local_add_cond=local_add_cond, padding_mask=padding_mask)
    if cfg_scale == 1.0:
        return lambda x, t: net(x, t, **inputs)

    def twice(value: Tensor | None) -> Tensor | None:
        return None if value is None else torch.cat([value, value], dim=0)

    uncond = unconditional_tokens(cross_attn_cond, negative_cross_attn_cond, negative_cross_attn_mask)
    batched = dict(cross_attn_cond=torch.cat([cross_attn_cond, uncond], dim=0),
                   global_embed=twice(global_embed), local_add_cond=twice(local_add_cond),
                   padding_mask=twice(padding_mask))
    low, high = cfg_interval

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        if not low <= float(t[0]) <= high:
            return net(x, t, **inputs)
        out = net(torch.cat([x, x]), torch.cat([t, t]), **batched)
        cond_out, uncond_out = out.chunk(2, dim=0)
        sigma = per_item(t.float(), x)
        cond_denoised = x - cond_out * sigma
        uncond_denoised = x - uncond_out * sigma
        direction = guided_diff(cond_denoised, uncond_denoised, apg_scale=apg_scale,
                                padding_mask=padding_mask, norm_threshold=norm_threshold)
        return (x - (cond_denoised + (cfg_scale - 1) * direction)) / sigma

    return model_fn


# stable-audio-3's samplers are the shared ones over per-item schedules Tensor[B, S + 1]: its
# pingpong draws the last step's (unused) noise too, its dpmpp clamps the log-SNR.
SA3_SAMPLERS = {
    "pingpong": partial(rf_pingpong, noise_on_last_step=True),
    "euler": rf_euler,
    "dpmpp": partial(rf_dpmpp, log_snr_floor=1e-10),
}


def initial_noise(batch: int, channels: int, latent_length: int, *,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """The first draw of a generation: standard normal Tensor[B, C, L], drawn on the generator's
    device (the reference seeds torch's generator and draws on the model's device)."""
    draw_device = generator.device if generator is not None else device
    return torch.randn([batch, channels, latent_length], generator=generator,
                       device=draw_device).to(device=device, dtype=dtype)


@torch.no_grad()
def sample(model_fn: ModelFn, noise: Tensor, times: Tensor, *, sampler: str = "pingpong",
           sigma_max: float = 1.0, init_latents: Tensor | None = None,
           generator: torch.Generator | None = None, callback: StepCallback | None = None) -> Tensor:
    """Sample SA3 latents (stable-audio-3's sample_diffusion without decoding).

    model_fn(x, t) -> v, already guided (see `guided_velocity`); noise: Tensor[B, C, L] (see
    `initial_noise`); times: Tensor[B, steps + 1] from `time_schedule` with the same sigma_max.
    With init_latents (audio-to-audio) the start is init * (1 - sigma_max) + noise * sigma_max.
    generator: where the samplers' own noise comes from (torch's global generator when None).
    Returns Tensor[B, C, L].
    """
    if sampler not in SA3_SAMPLERS:
        raise InputError(f"unknown SA3 sampler {sampler!r}; choose one of {sorted(SA3_SAMPLERS)}")
    if times.dim() != 2 or times.shape[0] != noise.shape[0]:
        raise InputError(f"times must have shape [{noise.shape[0]}, steps + 1], got {tuple(times.shape)}")
    x = noise
    if init_latents is not None:
        if init_latents.shape[1:] != noise.shape[1:]:
            raise InputError(f"init_latents has shape {tuple(init_latents.shape)} but the noise has "
                             f"{tuple(noise.shape)}; encode the source to the generated length")
        x = init_latents * (1 - sigma_max) + noise * sigma_max
    times = times.to(noise.device)
    return SA3_SAMPLERS[sampler](rf_denoiser(model_fn), x, times, noise=gaussian_noise(x, generator),
                                 callback=callback)
