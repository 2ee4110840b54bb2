"""Noise schedules: functions returning the decreasing noise levels a sampler walks through.

The v-objective schedules follow k-diffusion 0.1.1's `get_sigmas_*` value for value (same float32
operations in the same order); each returns `Tensor[steps + 1]` ending with an exact 0.
`rectified_flow_logsnr` is the time grid stable-audio-tools' `sample_rf` builds for
rectified-flow models: uniform in log-SNR, with its end points pinned.
All schedules are built on the CPU in float32; the caller moves them to the latents' device.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")


def _check_positive(**levels: float) -> None:
    for name, value in levels.items():
        if not value > 0:
            raise InputError(f"{name} must be > 0 (the schedule takes its logarithm), "
                             f"got {value!r}")


def _with_final_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def polyexponential(steps: int, sigma_min: float, sigma_max: float,
                    rho: float = 1.0) -> torch.Tensor:
    """Log-sigma polynomial in a ramp from 1 to 0: rho = 1 is uniform in log sigma.

    Returns Tensor[steps + 1]: sigma_max, ..., sigma_min, 0.
    """
    _check_steps(steps)
    _check_positive(sigma_min=sigma_min, sigma_max=sigma_max)
    ramp = torch.linspace(1, 0, steps) ** rho
    log_min = math.log(sigma_min)
    log_sigmas = ramp * (math.log(sigma_max) - log_min) + log_min
    return _with_final_zero(torch.exp(log_sigmas))


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 ("Elucidating the Design Space...", eq. 5): uniform in sigma^(1/rho).

    Returns Tensor[steps + 1]: sigma_max, ..., sigma_min, 0.
    """
    _check_steps(steps)
    _check_positive(sigma_min=sigma_min, sigma_max=sigma_max)
    ramp = torch.linspace(0, 1, steps)
    root_min = sigma_min ** (1 / rho)
    root_max = sigma_max ** (1 / rho)
    return _with_final_zero((root_max + ramp * (root_min - root_max)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float,
                rho: float | None = None) -> torch.Tensor:
    """Uniform in log sigma. `rho` is accepted and ignored so every SCHEDULES entry shares one
    call signature (this schedule has no shape parameter).

    Returns Tensor[steps + 1]: sigma_max, ..., sigma_min, 0.
    """
    _check_steps(steps)
    _check_positive(sigma_min=sigma_min, sigma_max=sigma_max)
    return _with_final_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def rectified_flow_logsnr(steps: int, t_max: float = 1.0) -> torch.Tensor:
    """The rectified-flow time grid of stable-audio-tools' `sample_rf`.

    t = sigmoid(-logsnr) with logsnr uniform from logsnr(t_max) up to 2; logsnr(t_max) is
    log((1 - t_max) / t_max + 1e-6), or -6 when t_max is 1. t_max above 1 is clamped to 1, as
    the reference does. The first and last entries are then set to exactly t_max and 0.

    Returns Tensor[steps + 1], decreasing from t_max to 0.
    """
    _check_steps(steps)
    _check_positive(t_max=t_max)
    t_max = min(t_max, 1)
    logsnr_start = math.log((1 - t_max) / t_max + 1e-6) if t_max < 1 else -6
    t = torch.sigmoid(-torch.linspace(logsnr_start, 2, steps + 1))
    t[0] = t_max
    t[-1] = 0
    return t


# v-objective schedules by the name the pipeline and configs use; each takes
# (steps, sigma_min, sigma_max, rho).
SCHEDULES = {
    "polyexponential": polyexponential,
    "karras": karras,
    "exponential": exponential,
}
