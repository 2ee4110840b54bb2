"""Samplers: integrate a denoiser from the first noise level in `sigmas` down to the last (0).

Every sampler has one signature,

    sampler(denoise, x, sigmas, *, noise=None, callback=None, project=None) -> Tensor

- denoise(x: Tensor[B, ...], sigma: Tensor[B]) -> estimate of the clean x (see denoisers.py)
- x: the starting state at noise level sigmas[0]
- sigmas: Tensor[steps + 1], decreasing, ending with 0 (see schedules.py), or Tensor[B, steps + 1]
  with one schedule per item (Stable Audio 3's length-dependent shift, sampling/sa3.py)
- noise(sigma, sigma_next) -> Tensor like x: the noise source of stochastic samplers
  (default: `gaussian_noise(x)`, torch's global generator)
- callback(dict) after every step with {"i", "steps", "x", "sigma", "denoised"}: `x` is the state
  after step i and `sigma` its noise level sigmas[..., i + 1]; `denoised` is the estimate made in step i.
  It may raise to interrupt sampling.
- project(x, sigma_next) -> x: applied to the state after every step, before the callback
  (inpainting uses it to hold kept latents on the source's noisy path)

The v-objective samplers reproduce k-diffusion 0.1.1 (`sample_euler` without churn,
`sample_dpmpp_2m`, `sample_dpmpp_2m_sde` with the midpoint solver, `sample_dpmpp_3m_sde`; eta = 1,
s_noise = 1) on the variance-exploding path x = x0 + sigma * eps. The rectified-flow samplers
reproduce stable-audio-tools 0.0.19 on the path x = (1 - t) x0 + t eps, with t in the role of sigma.
"""

from __future__ import annotations

from typing import Callable

import torch

from .denoisers import Denoiser, per_item

NoiseSource = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[dict], None]
Projection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gaussian_noise(x: torch.Tensor, generator: torch.Generator | None = None) -> NoiseSource:
    """Noise source drawing standard normal tensors shaped like x from `generator`.

    Draws happen on the generator's device and move to x's, so a CPU generator gives the same
    noise whatever device sampling runs on. generator=None uses torch's global generator.
    """
    draw_device = generator.device if generator is not None else x.device
    # CPU noise for a GPU run: copy from pinned memory, asynchronously, so the draw does not
    # wait for the GPU to finish the step.
    pinned = draw_device.type == "cpu" and x.device.type == "cuda"

    def draw(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        sample = torch.randn(x.shape, generator=generator, device=draw_device, dtype=x.dtype)
        if pinned:
            return sample.pin_memory().to(x.device, non_blocking=True)
        return sample.to(x.device)

    return draw


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma = (x - denoised) / sigma, the probability-flow ODE (Karras et al. 2022, eq. 4)."""
    return (x - denoised) / sigma


def _levels(sigmas: torch.Tensor, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma, sigma_next) of step i, shaped to broadcast against x: 0-d tensors for a shared
    schedule (so they never promote x's dtype), Tensor[B, 1, ..., 1] in x's dtype per item."""
    if sigmas.dim() == 1:
        return sigmas[i], sigmas[i + 1]
    return per_item(sigmas[:, i].to(x.dtype), x), per_item(sigmas[:, i + 1].to(x.dtype), x)


def _level_per_item(sigmas: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
    """Noise level i as Tensor[B] in x's dtype, the form denoisers take."""
    if sigmas.dim() == 1:
        return sigmas[i] * x.new_ones([x.shape[0]])
    return sigmas[:, i].to(x.dtype)


def _lands_on_zero(sigmas: torch.Tensor) -> list[bool]:
    """Per step, whether it ends at noise level 0 (for every item). Read once per sampling run,
    so branching never reads a device tensor (no host-device sync per step on a GPU)."""
    zero = sigmas[..., 1:] == 0
    return (zero if sigmas.dim() == 1 else zero.all(dim=0)).tolist()


def _finish_step(x: torch.Tensor, i: int, sigmas: torch.Tensor, denoised: torch.Tensor,
                 callback: StepCallback | None, project: Projection | None) -> torch.Tensor:
    if project is not None:
        x = project(x, sigmas[..., i + 1])
    if callback is not None:
        callback({"i": i, "steps": sigmas.shape[-1] - 1, "x": x, "sigma": sigmas[..., i + 1],
                  "denoised": denoised})
    return x


def _dpmpp_2m_blend(denoised: torch.Tensor, previous: torch.Tensor, h: torch.Tensor,
                    h_previous: torch.Tensor) -> torch.Tensor:
    """The multistep second-order data estimate of DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2)."""
    weight = 1 / (2 * (h_previous / h))
    return (1 + weight) * denoised - weight * previous


def euler(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
          noise: NoiseSource | None = None, callback: StepCallback | None = None,
          project: Projection | None = None) -> torch.Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2, no churn)."""
    for i in range(sigmas.shape[-1] - 1):
        sigma, sigma_next = _levels(sigmas, i, x)
        denoised = denoise(x, _level_per_item(sigmas, i, x))
        x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
        x = _finish_step(x, i, sigmas, denoised, callback, project)
    return x


def _dpmpp_2m(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, half_log_snr, signal_scale,
              callback: StepCallback | None, project: Projection | None) -> torch.Tensor:
    """DPM-Solver++(2M) on a path x = alpha(s) x0 + s eps, with lambda(s) = log(alpha(s) / s)."""
    previous, h_previous = None, None
    last = _lands_on_zero(sigmas)
    for i in range(sigmas.shape[-1] - 1):
        sigma, sigma_next = _levels(sigmas, i, x)
        denoised = denoise(x, _level_per_item(sigmas, i, x))
        h = half_log_snr(sigma_next) - half_log_snr(sigma)
        estimate = denoised
        if previous is not None and not last[i]:
            estimate = _dpmpp_2m_blend(denoised, previous, h, h_previous)
        x = (sigma_next / sigma) * x - signal_scale(sigma_next) * (-h).expm1() * estimate
        previous, h_previous = denoised, h
        x = _finish_step(x, i, sigmas, denoised, callback, project)
    return x


def dpmpp_2m(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
             noise: NoiseSource | None = None, callback: StepCallback | None = None,
             project: Projection | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095), deterministic, variance exploding."""
    return _dpmpp_2m(denoise, x, sigmas, lambda sigma: sigma.log().neg(), lambda sigma: 1.0,
                     callback, project)


def dpmpp_2m_sde(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 noise: NoiseSource | None = None, callback: StepCallback | None = None,
                 project: Projection | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022), midpoint correction, eta = 1: each step draws noise."""
    noise = gaussian_noise(x) if noise is None else noise
    previous, h_previous = None, None
    last = _lands_on_zero(sigmas)
    for i in range(sigmas.shape[-1] - 1):
        sigma, sigma_next = _levels(sigmas, i, x)
        denoised = denoise(x, _level_per_item(sigmas, i, x))
        if last[i]:
            x = denoised  # the last step lands on the estimate itself
        else:
            h = sigma.log() - sigma_next.log()
            renewal = (-2 * h).expm1().neg()  # 1 - exp(-2h): share of the variance drawn afresh
            x = sigma_next / sigma * (-h).exp() * x + renewal * denoised
            if previous is not None:
                x = x + 0.5 * renewal * (1 / (h_previous / h)) * (denoised - previous)
            x = x + noise(sigma, sigma_next) * sigma_next * renewal.sqrt()
            previous, h_previous = denoised, h
        x = _finish_step(x, i, sigmas, denoised, callback, project)
    return x


def dpmpp_3m_sde(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 noise: NoiseSource | None = None, callback: StepCallback | None = None,
                 project: Projection | None = None) -> torch.Tensor:
    """DPM-Solver++(3M) SDE, eta = 1: third-order multistep exponential integrator with noise."""
    noise = gaussian_noise(x) if noise is None else noise
    history = []  # (denoised, h) of the previous steps, newest first
    last = _lands_on_zero(sigmas)
    for i in range(sigmas.shape[-1] - 1):
        sigma, sigma_next = _levels(sigmas, i, x)
        denoised = denoise(x, _level_per_item(sigmas, i, x))
        if last[i]:
            x = denoised
        else:
            h = sigma.log() - sigma_next.log()
            h_sde = h * 2  # h * (eta + 1)
            renewal = (-h_sde).expm1().neg()  # 1 - exp(-2h): share of the variance drawn afresh
            x = torch.exp(-h_sde) * x + renewal * denoised
            phi_2 = h_sde.neg().expm1() / h_sde + 1
            if len(history) >= 2:
                (denoised_1, h_1), (denoised_2, h_2) = history[:2]
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_sde - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif history:
                denoised_1, h_1 = history[0]
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            x = x + noise(sigma, sigma_next) * sigma_next * renewal.sqrt()
            history = [(denoised, h)] + history[:1]
        x = _finish_step(x, i, sigmas, denoised, callback, project)
    return x


# Euler on the rectified-flow ODE dx/dt = v = (x - x0) / t is the same update as on the
# variance-exploding one: stable-audio-tools' sample_discrete_euler.
rf_euler = euler


def rf_dpmpp(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
             noise: NoiseSource | None = None, callback: StepCallback | None = None,
             project: Projection | None = None, log_snr_floor: float | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) on the rectified-flow path (stable-audio-tools' sample_flow_dpmpp).

    log_snr_floor: clamp t and 1 - t to at least this in the log-SNR, as stable-audio-3 does
    (1e-10), so a schedule starting at t = 1 gets a finite first step size and a second-order
    correction on the second step; None keeps stable-audio-tools' unclamped form.
    """
    if log_snr_floor is None:
        half_log_snr = lambda t: ((1 - t) / t).log()  # noqa: E731
    else:
        half_log_snr = lambda t: ((1 - t).clamp(min=log_snr_floor) / t.clamp(min=log_snr_floor)).log()  # noqa: E731
    return _dpmpp_2m(denoise, x, sigmas, half_log_snr, lambda t: 1 - t, callback, project)


def rf_pingpong(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                noise: NoiseSource | None = None, callback: StepCallback | None = None,
                project: Projection | None = None, noise_on_last_step: bool = False) -> torch.Tensor:
    """Ping-pong sampling for distilled flow models: jump to the clean estimate, then re-noise it
    to the next time with fresh noise (stable-audio-tools' sample_flow_pingpong).

    The last step lands on the estimate itself. Both references draw that step's noise anyway
    (it is multiplied by 0); noise_on_last_step=True draws it too, so whatever is drawn after
    sampling (SA3's decoder noise) sees the reference's generator state.
    """
    noise = gaussian_noise(x) if noise is None else noise
    last = _lands_on_zero(sigmas)
    for i in range(sigmas.shape[-1] - 1):
        t, t_next = _levels(sigmas, i, x)
        denoised = denoise(x, _level_per_item(sigmas, i, x))
        if last[i] and not noise_on_last_step:
            x = denoised  # (1 - 0) * denoised + 0 * noise, without drawing the unused noise
        else:
            x = (1 - t_next) * denoised + t_next * noise(t, t_next)
        x = _finish_step(x, i, sigmas, denoised, callback, project)
    return x


# v-objective samplers by stable-audio-tools' `sampler_type` names.
SAMPLERS = {
    "euler": euler,
    "dpmpp-2m": dpmpp_2m,
    "dpmpp-2m-sde": dpmpp_2m_sde,
    "dpmpp-3m-sde": dpmpp_3m_sde,
}

# Rectified-flow samplers by stable-audio-tools' `sample_rf` sampler_type names.
RF_SAMPLERS = {
    "euler": rf_euler,
    "dpmpp": rf_dpmpp,
    "pingpong": rf_pingpong,
}
