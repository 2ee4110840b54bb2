"""Denoisers: turn a velocity model `model_fn(x, t) -> v` into `denoise(x, sigma) -> x0 estimate`.

Samplers only ever see a denoiser, so one sampler serves every parameterisation.
- v-objective (Salimans & Ho 2022, "Progressive Distillation", sec. 4): the k-diffusion
  `VDenoiser` preconditioning of Karras et al. 2022 (Table 1) with t = atan(sigma) * 2 / pi.
- rectified flow: x_t = (1 - t) x0 + t eps and v = eps - x0, so x0 = x_t - t v.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_item(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Tensor[B] -> Tensor[B, 1, ..., 1] that broadcasts against x."""
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def v_denoiser(model_fn: ModelFn, sigma_data: float = 1.0) -> Denoiser:
    """Wrap a v-prediction model as a denoiser over noise levels sigma (variance exploding view).

    denoise(x: Tensor[B, C, L], sigma: Tensor[B]) -> Tensor[B, C, L]
      = c_skip * x + c_out * model_fn(c_in * x, atan(sigma) * 2 / pi)
    """

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        total_variance = sigma ** 2 + sigma_data ** 2
        c_skip = per_item(sigma_data ** 2 / total_variance, x)
        c_out = per_item(-sigma * sigma_data / total_variance ** 0.5, x)
        c_in = per_item(1 / total_variance ** 0.5, x)
        t = sigma.atan() / math.pi * 2
        return model_fn(x * c_in, t) * c_out + x * c_skip

    return denoise


def rf_denoiser(model_fn: ModelFn) -> Denoiser:
    """Wrap a rectified-flow velocity model as a denoiser over times t in [0, 1].

    denoise(x: Tensor[B, C, L], t: Tensor[B]) -> Tensor[B, C, L] = x - t * model_fn(x, t)
    """

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x - per_item(t, x) * model_fn(x, t)

    return denoise
