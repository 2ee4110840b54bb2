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

`conv1d(...)`, the models' drop-in for F.conv1d: on the CPU, a convolution over few positions
(at most IM2COL_MAX_ROWS output frames x batch: the U-Net's deep levels, a VAE decoder's first
layer) runs as one oneDNN inner product over the unfolded input (im2col), which keeps the
weights in their stored layout; oneDNN's direct convolution is faster only over long inputs.

`use_bfloat16_matmuls(module)` is the opt-in reduced precision (load_model(matmul_dtype=
"bfloat16")): the weights of linear layers and of the convolutions that run through `conv1d`
are stored in bfloat16 and multiply bfloat16 copies of their inputs (float32 accumulation inside
oneDNN), while everything else (norms, activations, residual streams, attention softmax, the
sampler's state) stays float32. On the benchmark's random-weight models one guided DiT call then
differs from float32 by 0.7% of its peak, against 6.6% when the whole model is cast to bfloat16.
It sets `activation_dtype` on every module so dtype probes read the activations' dtype
(`activation_dtype(module)`), not a weight's.

Huge pages: importing this module sets THP_MEM_ALLOC_ENABLE=1 (unless it is already set, or
STABLE_AUDIO_HUGE_PAGES=0), which makes torch's CPU allocator back allocations of 2 MB and more with
transparent huge pages (madvise). Without it every large temporary (a VAE decoder's activations
are 50-100 MB each) is first touched 4 kB page by 4 kB page: on this project's machine a Snake over
96 x 237568 floats took 71 ms, 32 of them page faults (39 ms with huge pages). torch reads the
variable once, at its first large allocation, so it only takes effect when this module is imported
before any large tensor exists (true of the CLI, the ComfyUI pack and load_model's own loads; a
process that allocated first keeps 4 kB pages). Values are unchanged; only where memory comes from.

`compile_backbone(model)` wraps the diffusion backbone in `torch.compile` (opt-in: the first calls
compile for minutes, and each new latent length recompiles).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

# Below this many rows the BLAS call is already cheap; oneDNN's setup would not pay off.
ONEDNN_MIN_ROWS = 8
# Convolutions with at most this many output positions (batch x frames) run as im2col + inner
# product; measured on Zen 5: 2-5x faster than the direct convolution at 27-256 positions and
# 1024-2560 channels, about equal from 500 to 1000, slower from a few thousand on. 512 rather
# than 1024 made the benchmark's U-Net call 5% faster with 2 threads (864-position top level).
IM2COL_MAX_ROWS = 512


HUGE_PAGES_SWITCH = "STABLE_AUDIO_HUGE_PAGES"


def request_huge_pages() -> bool:
    """Set THP_MEM_ALLOC_ENABLE=1 for torch's CPU allocator unless the user set it, or set
    STABLE_AUDIO_HUGE_PAGES=0; returns whether huge pages are requested now (see the module doc)."""
    if os.environ.get(HUGE_PAGES_SWITCH, "1") != "0":
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"


request_huge_pages()


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


@lru_cache(maxsize=1)
def onednn_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes the oneDNN paths take: float32, and bfloat16 where this CPU has oneDNN bfloat16
    kernels (AVX512-BF16 / AMX; elsewhere oneDNN refuses to build the primitive, and torch's own
    bfloat16 kernels run instead)."""
    try:
        bfloat16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bfloat16 = False
    return (torch.float32, torch.bfloat16) if bfloat16 else (torch.float32,)


def inference_on_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the oneDNN paths may run: CPU inference (no autograd) in a oneDNN dtype."""
    # Under torch.compile the plain ops are traced instead: inductor picks its own kernels.
    return (x.device.type == "cpu" and x.dtype in onednn_dtypes() and weight.dtype == x.dtype
            and not torch.compiler.is_compiling()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and onednn_linear_available())


class OneDNNLinear(nn.Linear):
    """nn.Linear whose CPU inference path is oneDNN's inner product (see the module doc).

    Same parameters and state-dict keys as nn.Linear; modules are switched to it in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[..., in_features] -> Tensor[..., out_features], in x's dtype."""
        if x.dtype != self.weight.dtype and x.is_floating_point():  # bfloat16 matmul weights
            return self.forward(x.to(self.weight.dtype)).to(x.dtype)
        if (x.dim() >= 2 and x.numel() >= ONEDNN_MIN_ROWS * self.in_features
                and inference_on_cpu(x, self.weight)):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
           padding: int = 0, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """F.conv1d (zero padding, int arguments): Tensor[B, C_in, T] -> Tensor[B, C_out, T']."""
    if x.dtype != weight.dtype and x.is_floating_point():  # bfloat16 matmul weights
        return conv1d(x.to(weight.dtype), weight, bias, stride, padding, dilation, groups).to(x.dtype)
    batch, _, length = x.shape
    out_channels, in_channels, kernel = weight.shape
    frames = (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if groups != 1 or frames < 1 or batch * frames > IM2COL_MAX_ROWS or not inference_on_cpu(x, weight):
        return F.conv1d(x, weight, bias, stride, padding, dilation, groups)
    if padding:
        x = F.pad(x, (padding, padding))
    # Unfolded view [B, T', C_in, K] (each output frame's input window), then one copy to rows of
    # C_in * K; weight [C_out, C_in, K] is already laid out as [C_out, C_in * K].
    s_batch, s_channel, s_time = x.stride()
    windows = x.as_strided((batch, frames, in_channels, kernel),
                           (s_batch, stride * s_time, s_channel, dilation * s_time))
    rows = windows.reshape(batch, frames, in_channels * kernel)
    out = torch.ops.mkldnn._linear_pointwise(rows, weight.reshape(out_channels, -1), bias, "none", [], "")
    return out.transpose(1, 2).contiguous()


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


def activation_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a module computes its activations in: its parameters' dtype, unless
    use_bfloat16_matmuls stored only its matmul weights in a narrower one."""
    return getattr(module, "activation_dtype", None) or next(module.parameters()).dtype


def use_bfloat16_matmuls(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store linear and conv1d-routed convolution weights in `dtype`, keep the rest (see the
    module doc). Returns the number of layers converted. In place; inference only."""
    from .models.layers import WNConv1d
    from .models.unet import PaddedConv1d

    wide = activation_dtype(module)
    converted = 0
    for submodule in module.modules():
        submodule.activation_dtype = wide
        if type(submodule) is nn.Linear:
            submodule.__class__ = OneDNNLinear
        convertible = isinstance(submodule, (OneDNNLinear, PaddedConv1d)) or (
            isinstance(submodule, WNConv1d) and submodule.routes_through_conv1d)
        if convertible:
            for parameter in submodule.parameters(recurse=False):
                parameter.data = parameter.data.to(dtype)
            converted += 1
    return converted


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
    same module, same state-dict keys). Returns `model`. Inductor's weight freezing is on by
    default (inference only: weights become constants, which lets it pack them for oneDNN)."""
    options.setdefault("options", {"freezing": True})
    model.backbone.compile(**options)
    return model
