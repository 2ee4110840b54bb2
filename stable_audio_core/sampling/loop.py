"""The sampling entry points the pipeline calls: noise (+ optional source latents) in, latents out.

`sample_v` reproduces stable-audio-tools' `sample_k` for v-objective models and `sample_rf` its
`sample_rf` for rectified-flow models. Both add an optional noise mask (1 = regenerate,
0 = keep): after every step the kept latents are reset to the source re-noised to the next noise
level, using the starting noise, so they follow the same noisy path the sampler started from and
end exactly on the source.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import InputError
from .denoisers import ModelFn, rf_denoiser, v_denoiser
from .samplers import RF_SAMPLERS, SAMPLERS, Projection, StepCallback, gaussian_noise
from .schedules import SCHEDULES, rectified_flow_logsnr

SCHEDULE_NAMES = tuple(SCHEDULES)  # the v-objective noise schedules `sample_v` accepts


def sampler_names() -> list[str]:
    """Every sampler name `sample_v` or `sample_rf` accepts, v-objective ones first."""
    return list(dict.fromkeys([*SAMPLERS, *RF_SAMPLERS]))


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise InputError(f"unknown {what} {name!r}; choose one of {sorted(registry)}")
    return registry[name]


def _check_latents(noise: torch.Tensor, init_latents: torch.Tensor | None,
                   noise_mask: torch.Tensor | None) -> None:
    if init_latents is not None and (init_latents.shape[1:] != noise.shape[1:]
                                     or init_latents.shape[0] not in (1, noise.shape[0])):
        raise InputError(f"init_latents has shape {tuple(init_latents.shape)} but the noise has "
                         f"{tuple(noise.shape)}; encode the source to the generated length "
                         f"(batch 1 is repeated over the noise batch)")
    if noise_mask is None:
        return
    if init_latents is None:
        raise InputError("noise_mask needs init_latents: the masked-out (0) latents are kept from "
                         "the source; pass the source latents or drop the mask")
    batch, _, length = noise.shape
    if (noise_mask.ndim != 3 or noise_mask.shape[1:] != (1, length)
            or noise_mask.shape[0] not in (1, batch)):
        raise InputError(f"noise_mask has shape {tuple(noise_mask.shape)}; expected "
                         f"[{batch}, 1, {length}] (or [1, 1, {length}]) to match latents of shape "
                         f"{tuple(noise.shape)}")


def _keep_masked_out(noise_mask: torch.Tensor,
                     noisy_source: Callable[[torch.Tensor], torch.Tensor]) -> Projection:
    """Projection holding mask == 0 latents at noisy_source(level); mask == 1 passes x unchanged."""

    def project(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        mask = noise_mask.to(device=x.device, dtype=x.dtype)
        return mask * x + (1 - mask) * noisy_source(level)

    return project


@torch.no_grad()
def sample_v(model_fn: ModelFn, noise: torch.Tensor, *, steps: int, sampler: str = "dpmpp-3m-sde",
             schedule: str = "polyexponential", sigma_min: float = 0.01, sigma_max: float = 100,
             rho: float = 1.0, init_latents: torch.Tensor | None = None,
             noise_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
             callback: StepCallback | None = None) -> torch.Tensor:
    """Sample a v-objective model (stable-audio-tools' sample_k).

    model_fn(x: Tensor[B, C, L], t: Tensor[B]) -> v: Tensor[B, C, L], already guided.
    noise: Tensor[B, C, L] standard normal. The start is noise * sigmas[0], plus init_latents
    (Tensor[B or 1, C, L]) when given; for variations the caller sets sigma_max to the init
    noise level, as stable-audio-tools' generate_diffusion_cond does.
    noise_mask: Tensor[B or 1, 1, L], 1 = regenerate, 0 = keep init_latents.
    generator: source of the noise drawn by the stochastic samplers.
    Runs without autograd. Returns Tensor[B, C, L], the sampled latents.
    """
    sampler_fn = _lookup(SAMPLERS, sampler, "v-objective sampler")
    schedule_fn = _lookup(SCHEDULES, schedule, "noise schedule")
    _check_latents(noise, init_latents, noise_mask)

    sigmas = schedule_fn(steps, sigma_min, sigma_max, rho).to(noise.device)
    x = noise * sigmas[0]
    if init_latents is not None:
        x = init_latents + x

    project = None
    if noise_mask is not None:
        project = _keep_masked_out(noise_mask, lambda sigma: init_latents + noise * sigma)
    return sampler_fn(v_denoiser(model_fn), x, sigmas, noise=gaussian_noise(x, generator),
                      callback=callback, project=project)


@torch.no_grad()
def sample_rf(model_fn: ModelFn, noise: torch.Tensor, *, steps: int, sampler: str = "euler",
              sigma_max: float = 1.0, init_latents: torch.Tensor | None = None,
              noise_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
              callback: StepCallback | None = None) -> torch.Tensor:
    """Sample a rectified-flow model (stable-audio-tools' sample_rf).

    model_fn(x: Tensor[B, C, L], t: Tensor[B]) -> v: Tensor[B, C, L], already guided.
    noise: Tensor[B, C, L] standard normal. sigma_max (clamped to 1) is the start time; with
    init_latents the start is init * (1 - sigma_max) + noise * sigma_max.
    noise_mask: Tensor[B or 1, 1, L], 1 = regenerate, 0 = keep init_latents.
    generator: source of the noise drawn by the stochastic samplers.
    Runs without autograd. Returns Tensor[B, C, L], the sampled latents.
    """
    sampler_fn = _lookup(RF_SAMPLERS, sampler, "rectified-flow sampler")
    _check_latents(noise, init_latents, noise_mask)

    t_max = min(sigma_max, 1)
    times = rectified_flow_logsnr(steps, t_max).to(noise.device)
    x = noise
    if init_latents is not None:
        x = init_latents * (1 - t_max) + noise * t_max

    project = None
    if noise_mask is not None:
        project = _keep_masked_out(noise_mask, lambda t: init_latents * (1 - t) + noise * t)
    return sampler_fn(rf_denoiser(model_fn), x, times, noise=gaussian_noise(x, generator),
                      callback=callback, project=project)
