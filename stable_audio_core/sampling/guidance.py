"""Classifier-free guidance (Ho & Salimans 2022) as one batched model call, with optional rescale.

The conditional and unconditional inputs are stacked on the batch axis so each sampler step costs
one forward pass of the backbone. Rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and
Sample Steps are Flawed", eq. 15-16) matches the guided output's per-channel std to the
conditional one's and mixes by `rescale`.
"""

from __future__ import annotations

from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _stack(cond: torch.Tensor | None, uncond: torch.Tensor | None) -> torch.Tensor | None:
    if cond is None:
        # An input only the unconditional half sets (a flag such as the U-Net's
        # fixed_embedding_mask) is off, i.e. zero, in the conditional half.
        return None if uncond is None else torch.cat([torch.zeros_like(uncond), uncond], dim=0)
    return torch.cat([cond, cond if uncond is None else uncond], dim=0)


def combine_guidance(cond_out: torch.Tensor, uncond_out: torch.Tensor, cfg_scale: float,
                     rescale: float = 0.0) -> torch.Tensor:
    """uncond + (cond - uncond) * scale, then std rescale over the channel axis when rescale > 0."""
    guided = uncond_out + (cond_out - uncond_out) * cfg_scale
    if rescale:
        ratio = cond_out.std(dim=1, keepdim=True) / guided.std(dim=1, keepdim=True)
        guided = rescale * (guided * ratio) + (1 - rescale) * guided
    return guided


def guided_model_fn(net: Callable[..., torch.Tensor], inputs: dict, null_inputs: dict | None,
                    cfg_scale: float, rescale: float = 0.0) -> ModelFn:
    """Return model_fn(x, t) that applies classifier-free guidance around `net(x, t, **inputs)`.

    `null_inputs` holds the unconditional (or negative-prompt) side of every input that differs;
    inputs absent from it are shared by both halves, and inputs only it names are zero in the
    conditional half. With cfg_scale == 1 or nothing to guide, the model is called once, unbatched.
    """
    if cfg_scale == 1.0 or not null_inputs:
        return lambda x, t: net(x, t, **inputs)

    names = list(inputs) + [name for name in null_inputs if name not in inputs]
    batched = {name: _stack(inputs.get(name), null_inputs.get(name)) for name in names}

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = net(torch.cat([x, x]), torch.cat([t, t]), **batched)
        cond_out, uncond_out = out.chunk(2, dim=0)
        return combine_guidance(cond_out, uncond_out, cfg_scale, rescale)

    return model_fn
