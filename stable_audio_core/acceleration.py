"""Inference speed-ups that keep results (within float rounding), applied by `load_model`.

`prepare_for_inference(module)` puts a loaded model in inference form:
- eval mode, gradients off;
- optionally (fold_weight_norm=True; off in load_model, whose state dict keeps the checkpoint's
  keys) weight norm folded into plain conv weights, so the VAE stops recomputing g * v / ||v||
  on every call (about 1% of a decode);
- on the CPU, every `nn.Linear` runs through oneDNN's inner product (`torch.ops.mkldnn.
  _linear_pointwise`) instead of the default BLAS: on AMD Zen the MKL sgemm that torch's CPU
  wheel uses takes about twice as long in float32, and oneDNN uses AVX512-BF16 for bfloat16.
  Only where no gradient is needed; otherwise, on other devices, dtypes or torch builds without
  the op, the layer is plain `F.linear`. The result differs from F.linear by float rounding only
  (summation order), ~1e-6 relative.

`compile_backbone(model)` wraps the diffusion backbone in `torch.compile` (opt-in: the first calls
compile for minutes, and each new latent length recompiles).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

# Below this many rows the BLAS call is already cheap; oneDNN's setup would not pay off.
ONEDNN_MIN_ROWS = 8
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


@lru_cache(maxsize=1)
def onednn_linear_available() -> bool:
    """True when this torch build runs oneDNN's inner product and it agrees with F.linear."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.linspace(-1, 1, 3 * 16).reshape(3, 16)
        weight = torch.linspace(-0.5, 0.5, 16 * 8).reshape(8, 16)
        bias = torch.linspace(0, 1, 8)
        with torch.inference_mode():
            out = op(x, weight, bias, "none", [], "")
        return bool(torch.allclose(out, F.linear(x, weight, bias), atol=1e-5))
    except Exception:  # op missing or failing on this build/CPU: use the default path
        return False


class OneDNNLinear(nn.Linear):
    """nn.Linear whose CPU inference path is oneDNN's inner product (see the module doc).

    Same parameters and state-dict keys as nn.Linear; modules are switched to it in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[..., in_features] -> Tensor[..., out_features]."""
        if (x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES and x.dtype == self.weight.dtype
                and x.dim() >= 2 and x.numel() >= ONEDNN_MIN_ROWS * self.in_features
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def use_onednn_linear(module: nn.Module) -> int:
    """Switch every plain nn.Linear in `module` to OneDNNLinear; returns how many were switched.

    A no-op (0) when the op is unavailable. Subclasses of nn.Linear are left alone.
    """
    if not onednn_linear_available():
        return 0
    count = 0
    for submodule in module.modules():
        if type(submodule) is nn.Linear:
            submodule.__class__ = OneDNNLinear
            count += 1
    return count


def prepare_for_inference(module: nn.Module, *, fold_weight_norm: bool = False,
                          onednn_linear: bool = True) -> nn.Module:
    """Eval mode, gradients off, oneDNN linears [, weight norm folded]; returns `module` (in place)."""
    from .models.layers import fold_weight_norm as fold

    module.eval().requires_grad_(False)
    if fold_weight_norm:
        fold(module)
    if onednn_linear:
        use_onednn_linear(module)
    return module


def compile_backbone(model, **options):
    """torch.compile the diffusion backbone of a StableAudioModel in place (nn.Module.compile:
    same module, same state-dict keys). Returns `model`."""
    model.backbone.compile(**options)
    return model
