"""CPU inference speed-ups, each a module swap that keeps results within float rounding.

The model files are plain torch; `prepare_for_inference(model)` (called by `load_model`) puts a
loaded model in inference form: eval mode, gradients off, then these swaps, each switchable:

- `onednn_linear`: every `nn.Linear` becomes `OneDNNLinear`, whose CPU inference path is oneDNN's
  inner product (`torch.ops.mkldnn._linear_pointwise`) instead of torch's default BLAS.
- `onednn_conv`: the 1-D convolutions (`WNConv1d`, the U-Net's `PaddedConv1d`) run through
  `conv1d`, which computes a convolution over few output positions as one oneDNN inner product
  over the unfolded input (im2col).
- `cached_snake`: each Snake computes its coefficients once (inference weights are frozen) and
  runs in four passes over one output buffer.
- `fused_residual`: the VAE residual units' tail (Snake, 1x1 conv, residual add) runs a time
  slice at a time, the add inside the GEMM, so the Snake output is still in cache when read.
- `sigmoid_dyt`: SAME's DynamicTanh norms compute tanh through torch's much faster sigmoid
  (tanh z = 2 sigmoid(2z) - 1), the constants folded into frozen coefficients.
- `fold_weight_norm` (off in load_model, whose state dict keeps the checkpoint's keys): weight
  norm folded into plain conv weights.

Every swap changes a module's class (or adds non-persistent buffers), never its parameters, so
state-dict keys stay those of the checkpoint. Each fast path falls back to the plain one where it
does not apply: autograd needed, another device or dtype, a torch build without the op.

`use_bfloat16_matmuls(module)` is the opt-in reduced precision (load_model(matmul_dtype=
"bfloat16")): the weights of linear layers and swapped convolutions are stored in bfloat16 and
multiply bfloat16 copies of their inputs (float32 accumulation inside oneDNN), while norms,
activations, residual streams and the sampler state stay float32. `compile_backbone(model)` wraps
the diffusion backbone in `torch.compile` (opt-in: slow first calls, recompiles per length).

`use_int8_linears(module)` is the int8 path (load_model(precision="int8")): the weight of every
large linear layer is quantized once, per output channel, to int8 (symmetric, scale = max |w| /
127); at run time each input row (token) is quantized the same way and the product runs as an
int8 x int8 -> int32 matmul (`torch._int_mm`), rescaled to float32 by the two scales.

`cpu_capability()` probes what the CPU has (torch's capability string, /proc/cpuinfo flags) and
`choose_precision("auto")` picks one of fp32 / bf16 / int8 from it (rules in `auto_precision`).

`request_huge_pages()` asks torch's CPU allocator for transparent huge pages; entry points (the
CLI, the node pack) call it before any large tensor exists. Measurements: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .models.layers import SNAKE_EPS, ResidualUnit, Snake1d, SnakeBeta, WNConv1d, fold_weight_norm as fold
from .models.sa3_layers import DynamicTanh
from .models.unet import PaddedConv1d
from .errors import InputError
from .precision import activation_dtype

__all__ = ["activation_dtype", "prepare_for_inference", "use_bfloat16_matmuls", "use_int8_linears",
           "use_int8_convolutions",
           "compile_backbone", "request_huge_pages", "cpu_capability", "choose_precision", "PRECISIONS"]

# Below this many rows the BLAS call is already cheap; oneDNN's setup would not pay off.
ONEDNN_MIN_ROWS = 8
# Up to this many output positions (batch x frames) im2col beats the direct convolution.
IM2COL_MAX_ROWS = 512
# Floats per operand in one slice of the fused residual tail: small enough to stay in cache.
RESIDUAL_SLICE_FLOATS = 1 << 16

HUGE_PAGES_SWITCH = "STABLE_AUDIO_HUGE_PAGES"


def request_huge_pages() -> bool:
    """Set THP_MEM_ALLOC_ENABLE=1, which makes torch's CPU allocator back allocations of 2 MB and
    more with transparent huge pages (fewer page faults on large temporaries), unless the user
    set it or STABLE_AUDIO_HUGE_PAGES=0. Torch reads it once, at its first large allocation, so
    call this first. Returns whether huge pages are requested now. Values never change."""
    if os.environ.get(HUGE_PAGES_SWITCH, "1") != "0":
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"


# --- what the CPU has -----------------------------------------------------------------------

CPUINFO = "/proc/cpuinfo"
PRECISIONS = ("auto", "fp32", "bf16", "int8")


# Instruction-set levels, lowest first, that the environment can cap the kernels to.
ISA_LEVELS = ("sse", "avx2", "avx2_vnni", "avx512", "avx512_vnni", "avx512_bf16", "amx")

# Environment variables that cap the kernels of torch, oneDNN and MKL (each read once, when that
# library starts), and the level each value allows; a value not listed caps nothing.
ISA_CAPS = {
    "ATEN_CPU_CAPABILITY": {"default": "sse", "avx2": "avx2"},
    "ONEDNN_MAX_CPU_ISA": {"sse41": "sse", "avx": "sse", "avx2": "avx2", "avx2_vnni": "avx2_vnni",
                           "avx2_vnni_2": "avx2_vnni", "avx512_core": "avx512",
                           "avx512_core_vnni": "avx512_vnni", "avx512_core_bf16": "avx512_bf16",
                           "avx512_core_fp16": "avx512_bf16", "avx10_1_512": "avx512_bf16"},
    "MKL_ENABLE_INSTRUCTIONS": {"sse4_2": "sse", "avx": "sse", "avx2": "avx2", "avx2_e1": "avx2_vnni"},
}
# oneDNN's older name for its cap, read when ONEDNN_MAX_CPU_ISA is not set.
ONEDNN_LEGACY_CAP = "DNNL_MAX_CPU_ISA"


def isa_level(flag: str) -> str | None:
    """The lowest ISA_LEVELS entry that includes a /proc/cpuinfo flag (None: not capped)."""
    if flag.startswith("amx_"):
        return "amx"
    if flag in ("avx512_bf16", "avx512_vnni"):
        return flag
    if flag.startswith("avx512"):
        return "avx512"
    if flag.startswith("avx_vnni"):
        return "avx2_vnni"
    return "avx2" if flag in ("avx", "avx2", "fma", "f16c") else None


def isa_caps(environ=None) -> dict[str, str]:
    """The caps set in `environ` (default os.environ): {variable: value} for ISA_CAPS, with
    oneDNN's legacy DNNL_MAX_CPU_ISA reported under its own name when it is the one in force."""
    environ = os.environ if environ is None else environ
    caps = {name: environ[name] for name in ISA_CAPS if environ.get(name)}
    if "ONEDNN_MAX_CPU_ISA" not in caps and environ.get(ONEDNN_LEGACY_CAP):
        caps[ONEDNN_LEGACY_CAP] = environ[ONEDNN_LEGACY_CAP]
    return caps


def capped_level(caps: dict[str, str]) -> str | None:
    """The lowest level any of `caps` allows (None: uncapped)."""
    allowed = [ISA_CAPS["ONEDNN_MAX_CPU_ISA" if name == ONEDNN_LEGACY_CAP else name].get(value.strip().lower())
               for name, value in caps.items()]
    allowed = [level for level in allowed if level is not None]
    return min(allowed, key=ISA_LEVELS.index) if allowed else None


@dataclass(frozen=True)
class CpuCapability:
    """What this process may use for the matmul paths: torch's kernel level ("AVX512", "AVX2",
    "DEFAULT", ...: torch.backends.cpu.get_cpu_capability()) and the CPU's feature flags
    (/proc/cpuinfo) less those above a cap set in the environment (`hidden`, `caps`): a CPU whose
    kernels are capped to AVX2 is an AVX2-only CPU to every rule here."""

    torch_level: str
    flags: frozenset[str] = field(repr=False)
    hidden: frozenset[str] = field(default=frozenset(), repr=False)
    caps: tuple[str, ...] = ()

    @classmethod
    def probe(cls, torch_level: str, flags: frozenset[str], environ=None) -> "CpuCapability":
        """The capability of a CPU with `flags` in a process whose environment is `environ`."""
        caps = isa_caps(environ)
        ceiling = capped_level(caps)
        if ceiling is None:
            return cls(torch_level, frozenset(flags), frozenset(), tuple(f"{k}={v}" for k, v in caps.items()))
        limit = ISA_LEVELS.index(ceiling)
        hidden = frozenset(f for f in flags if isa_level(f) is not None and ISA_LEVELS.index(isa_level(f)) > limit)
        return cls(torch_level, frozenset(flags) - hidden, hidden, tuple(f"{k}={v}" for k, v in caps.items()))

    @property
    def native_bf16(self) -> bool:
        """bfloat16 dot products in hardware (elsewhere oneDNN emulates them, slower than float32)."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def int8_dot(self) -> bool:
        """int8 dot-product instructions (VNNI, AMX-INT8)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def avx512(self) -> bool:
        """AVX-512 kernels allowed (torch's level and the flags agree)."""
        return "avx512f" in self.flags and self.torch_level.upper().startswith("AVX512")

    def describe(self) -> str:
        """One line for reports: torch's level, the flags that decide the precision paths and
        the environment's caps with the flags they hide."""
        decisive = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
        shown = [f for f in decisive if f in self.flags]
        line = f"torch {self.torch_level}; " + (" ".join(shown) or "no AVX2/AVX-512 flags")
        if self.caps:
            hidden = [f for f in decisive if f in self.hidden]
            line += f" (capped by {', '.join(self.caps)}" + (f"; hidden: {' '.join(hidden)})" if hidden else ")")
        return line


def read_cpu_flags(path: str = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags ("flags" on x86, "Features" on Arm); empty if unreadable."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_capability() -> CpuCapability:
    """This process's CpuCapability (probed once; the caps are read from os.environ then, as the
    libraries read them once when they start)."""
    return CpuCapability.probe(torch.backends.cpu.get_cpu_capability(), read_cpu_flags())


# Backbones (models.stable_audio.BACKBONES keys) whose int8 path was measured faster than float32
# and within its tolerance on an AVX2 CPU without native bfloat16 (benchmarks/RESULTS.md).
AUTO_INT8_BACKBONES = frozenset({"dit", "adp_cfg_1d"})


def auto_precision(capability: CpuCapability, backbone: str | None = None) -> str:
    """The precision "auto" runs on a CPU with `capability` for a model whose backbone type is
    `backbone`. Only a path measured faster than float32 and within its tolerance on a CPU of that
    kind is picked (benchmarks/README.md): bfloat16 matmuls where bfloat16 is native; int8 on x86
    CPUs with AVX2 but no native bfloat16, for the backbones of AUTO_INT8_BACKBONES (int8 products
    run about twice float32's rate there; layers too small to gain stay float32); float32 elsewhere."""
    if capability.native_bf16:
        return "bf16"
    if "avx2" in capability.flags and backbone in AUTO_INT8_BACKBONES:
        return "int8"
    return "fp32"


def choose_precision(precision: str, device: str | torch.device = "cpu",
                     capability: CpuCapability | None = None, backbone: str | None = None) -> str:
    """Resolve a precision name (PRECISIONS) to the path that runs: "fp32", "bf16" (bfloat16
    matmuls) or "int8" (int8 linears and U-Net convolutions). "auto" follows `auto_precision` on
    the CPU for a model with that `backbone` type and is "fp32" on other devices (their speed
    comes from `dtype`)."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    on_cpu = torch.device(device).type == "cpu"
    if precision == "auto":
        return auto_precision(capability or cpu_capability(), backbone) if on_cpu else "fp32"
    if precision == "int8" and not on_cpu:
        raise InputError(f"precision 'int8' runs on the CPU only (device {device}); use fp32 or "
                         "bf16, or a reduced dtype, on this device")
    return precision


# --- oneDNN availability --------------------------------------------------------------------

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
    kernels (AVX512-BF16 / AMX; elsewhere torch's own bfloat16 kernels run instead)."""
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


def _needs_graph(x: torch.Tensor, module: nn.Module) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


# --- swapping a module's class ----------------------------------------------------------------

@lru_cache(maxsize=None)
def _swapped_class(fast: type, plain: type) -> type:
    """`plain` with the methods of the mixin `fast` in front (same parameters, same keys)."""
    return type(fast.__name__ + plain.__name__, (fast, plain), {"__module__": __name__})


def _swap(module: nn.Module, fast: type) -> None:
    if not isinstance(module, fast):
        module.__class__ = _swapped_class(fast, type(module))


# --- oneDNN linears -------------------------------------------------------------------------

class OneDNNLinear(nn.Linear):
    """nn.Linear whose CPU inference path is oneDNN's inner product; same parameters and keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[..., in_features] -> Tensor[..., out_features], in x's dtype."""
        if x.dtype != self.weight.dtype and x.is_floating_point():  # bfloat16 matmul weights
            return self.forward(x.to(self.weight.dtype)).to(x.dtype)
        if (x.dim() >= 2 and x.numel() >= ONEDNN_MIN_ROWS * self.in_features
                and inference_on_cpu(x, self.weight)):
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


# --- oneDNN / im2col convolutions -------------------------------------------------------------

def _single(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
           padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """F.conv1d (zero padding, ints or 1-tuples): Tensor[B, C_in, T] -> Tensor[B, C_out, T'];
    over few output positions on CPU inference, one oneDNN inner product over im2col rows."""
    if x.dtype != weight.dtype and x.is_floating_point():  # bfloat16 matmul weights
        return conv1d(x.to(weight.dtype), weight, bias, stride, padding, dilation, groups).to(x.dtype)
    stride, padding, dilation = _single(stride), _single(padding), _single(dilation)
    batch, _, length = x.shape
    out_channels, in_channels, kernel = weight.shape
    frames = (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if groups != 1 or frames < 1 or batch * frames > IM2COL_MAX_ROWS or not inference_on_cpu(x, weight):
        return F.conv1d(x, weight, bias, stride, padding, dilation, groups)
    rows = unfold_rows(x, kernel, stride, padding, dilation, frames)
    # weight [C_out, C_in, K] is already laid out as [C_out, C_in * K].
    out = torch.ops.mkldnn._linear_pointwise(rows, weight.reshape(out_channels, -1), bias, "none", [], "")
    return out.transpose(1, 2).contiguous()


def unfold_rows(x: torch.Tensor, kernel: int, stride: int, padding: int, dilation: int,
                frames: int) -> torch.Tensor:
    """im2col: Tensor[B, C_in, T] -> Tensor[B, frames, C_in * K], each output frame's input
    window (zero padding on both sides) as one row, in the layout of a [C_out, C_in, K] weight."""
    if padding:
        x = F.pad(x, (padding, padding))
    batch, in_channels, _ = x.shape
    s_batch, s_channel, s_time = x.stride()
    windows = x.as_strided((batch, frames, in_channels, kernel),
                           (s_batch, stride * s_time, s_channel, dilation * s_time))
    return windows.reshape(batch, frames, in_channels * kernel)


class OneDNNConvolution:
    """Swapped into WNConv1d / PaddedConv1d: their convolution becomes `conv1d` above."""

    convolve = staticmethod(conv1d)


def _convolution_swappable(module: nn.Module) -> bool:
    # conv1d takes zero padding given in samples (WNConv1d also accepts "same"/"valid" strings).
    return isinstance(module, (WNConv1d, PaddedConv1d)) and not isinstance(module.padding, str)


def use_onednn_convolutions(module: nn.Module) -> int:
    """Route every WNConv1d / PaddedConv1d in `module` through `conv1d`; returns how many."""
    count = 0
    for submodule in module.modules():
        if _convolution_swappable(submodule):
            _swap(submodule, OneDNNConvolution)
            count += 1
    return count


# --- Snake with frozen coefficients -----------------------------------------------------------

def _frozen_coefficients(activation: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, 1 / (beta + eps)) of a Snake as Tensor[1, C, 1], computed once without a graph."""
    with torch.no_grad():
        alpha, beta = activation.coefficients()
        return alpha.clone(), 1.0 / (beta + SNAKE_EPS)


def _snake_into(x: torch.Tensor, alpha: torch.Tensor, inverse_beta: torch.Tensor,
                out: torch.Tensor) -> torch.Tensor:
    """out = x + sin(alpha x)^2 * inverse_beta in four passes over `out` (x's shape)."""
    torch.mul(x, alpha, out=out)
    out.sin_()
    out.mul_(out)
    return torch.addcmul(x, out, inverse_beta, out=out)


class CachedSnake:
    """Swapped into SnakeBeta / Snake1d: coefficients kept as non-persistent buffers (they follow
    .to() and stay out of the state dict), one output buffer instead of six temporaries."""

    def freeze_coefficients(self) -> None:
        alpha, inverse_beta = _frozen_coefficients(self)
        self.register_buffer("frozen_alpha", alpha, persistent=False)
        self.register_buffer("frozen_inverse_beta", inverse_beta, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _needs_graph(x, self):  # training: the plain formula, with gradients
            return super().forward(x)
        return _snake_into(x, self.frozen_alpha, self.frozen_inverse_beta, torch.empty_like(x))


class SigmoidDynamicTanh:
    """Swapped into DynamicTanh (SAME's norms): gamma * tanh(alpha x) + beta computed as
    gamma' * sigmoid(alpha' x) + beta' with alpha' = 2 alpha, gamma' = 2 gamma, beta' = beta -
    gamma (tanh z = 2 sigmoid(2z) - 1), in three passes: torch's CPU sigmoid is several times
    faster than its tanh. float32 only (in bfloat16 2 sigmoid - 1 would lose the small values)."""

    def freeze_coefficients(self) -> None:
        alpha, gamma, beta = (p.detach() for p in (self.alpha, self.gamma, self.beta))
        self.register_buffer("frozen_alpha", 2 * alpha, persistent=False)
        self.register_buffer("frozen_gamma", 2 * gamma, persistent=False)
        self.register_buffer("frozen_beta", beta - gamma, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or _needs_graph(x, self):
            return super().forward(x)
        scaled = torch.mul(x, self.frozen_alpha).sigmoid_()
        return torch.addcmul(self.frozen_beta, scaled, self.frozen_gamma)


def use_sigmoid_dynamic_tanh(module: nn.Module) -> int:
    """Swap SigmoidDynamicTanh into every DynamicTanh of `module`; returns how many."""
    count = 0
    for submodule in module.modules():
        if isinstance(submodule, DynamicTanh):
            _swap(submodule, SigmoidDynamicTanh)
            _freeze(submodule)
            count += 1
    return count


def _freeze(module: nn.Module) -> None:
    """Freeze `module`'s coefficients now and again whenever a state dict is loaded into it."""
    module.freeze_coefficients()
    if not getattr(module, "refreezes_on_load", False):
        module.register_load_state_dict_post_hook(lambda loaded, _keys: loaded.freeze_coefficients())
        module.refreezes_on_load = True


def use_cached_snakes(module: nn.Module) -> int:
    """Freeze the coefficients of every Snake in `module`; returns how many."""
    count = 0
    for submodule in module.modules():
        if isinstance(submodule, (SnakeBeta, Snake1d)):
            _swap(submodule, CachedSnake)
            _freeze(submodule)
            count += 1
    return count


# --- the fused residual tail ------------------------------------------------------------------

def _plain_pointwise(conv: nn.Module) -> bool:
    return (isinstance(conv, WNConv1d) and conv.kernel_size == (1,) and conv.stride == (1,)
            and conv.padding == (0,) and conv.groups == 1)


class FusedResidualTail:
    """Swapped into ResidualUnit: x + conv1x1(snake(h)) a time slice at a time on CPU inference
    (Snake into a slice buffer, then one addmm that adds x while multiplying), instead of three
    full-length passes. Equal to the plain unit up to float rounding (GEMM summation order)."""

    def freeze_coefficients(self) -> None:
        alpha, inverse_beta = _frozen_coefficients(getattr(self, self.block_name)[2])
        self.register_buffer("tail_alpha", alpha[0], persistent=False)  # [C, 1]
        self.register_buffer("tail_inverse_beta", inverse_beta[0], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, dilated, activation, conv = getattr(self, self.block_name)
        h = dilated(first(x))
        weight = None if torch.is_grad_enabled() else conv.kernel()
        if weight is None or x.dim() != 3 or x.dtype != h.dtype or not inference_on_cpu(h, weight):
            return x + conv(activation(h))
        batch, _, length = h.shape
        matrix = weight[:, :, 0]
        bias = None if conv.bias is None else conv.bias[:, None]
        step = max(256, RESIDUAL_SLICE_FLOATS // max(h.shape[1], x.shape[1]))
        out = torch.empty_like(x)
        for b in range(batch):
            for start in range(0, length, step):
                stop = min(length, start + step)
                segment = h[b, :, start:stop]
                activated = _snake_into(segment, self.tail_alpha, self.tail_inverse_beta,
                                        torch.empty_like(segment))
                target = out[b, :, start:stop]
                torch.addmm(x[b, :, start:stop], matrix, activated, out=target)
                if bias is not None:
                    target.add_(bias)
        return out


def use_fused_residual_tails(module: nn.Module) -> int:
    """Fuse the tail of every ResidualUnit in `module` whose tail is Snake + plain 1x1 conv."""
    count = 0
    for submodule in module.modules():
        if isinstance(submodule, ResidualUnit):
            _, _, activation, conv = getattr(submodule, submodule.block_name)
            if isinstance(activation, (SnakeBeta, Snake1d)) and _plain_pointwise(conv):
                _swap(submodule, FusedResidualTail)
                _freeze(submodule)
                count += 1
    return count


# --- reduced precision, compilation, the whole preparation --------------------------------------

# Linears under these names project one conditioning vector per item (the diffusion time, the
# global embedding, the number conditioners): a handful of rows, so their cost is nil, while every
# later layer is scaled or shifted by their output. The reduced paths leave them in the model's
# dtype: in bfloat16 the SA3 DiT's timestep projection alone moved one call's output by 40% of
# its peak (all the other linears together: 0.5%).
CONDITIONING_PROJECTIONS = frozenset({"to_timestep_embed", "to_global_embed", "global_cond_embedder",
                                      "to_time_embedding", "to_mapping", "conditioner"})


def reducible_modules(module: nn.Module):
    """(name, submodule) of `module` outside the conditioning projections: the ones the reduced
    precision paths may convert."""
    for name, submodule in module.named_modules():
        parts = name.split(".") if name else []
        if CONDITIONING_PROJECTIONS.intersection(parts):
            continue
        yield name, submodule


def use_bfloat16_matmuls(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store linear and convolution weights in `dtype`, keep the rest (see the module doc): the
    layers become OneDNNLinear / oneDNN convolutions, which cast their inputs; the conditioning
    projections (CONDITIONING_PROJECTIONS) keep their dtype. Records the wider dtype as every
    module's `activation_dtype`. Returns the number of layers converted; in place, inference only."""
    wide = activation_dtype(module)
    for submodule in module.modules():
        submodule.activation_dtype = wide
    converted = 0
    for _, submodule in reducible_modules(module):
        if type(submodule) is nn.Linear:
            submodule.__class__ = OneDNNLinear
        if _convolution_swappable(submodule):
            _swap(submodule, OneDNNConvolution)
        if isinstance(submodule, (OneDNNLinear, OneDNNConvolution)):
            for parameter in submodule.parameters(recurse=False):
                parameter.data = parameter.data.to(dtype)
            converted += 1
    return converted


def quantize_rows(x: torch.Tensor, levels: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each row: Tensor[R, K] float -> (Tensor[R, K] int8 in
    [-levels, levels], Tensor[R, 1] float32 scale), x ~ q * scale."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny) / levels
    return torch.div(x, scale).round_().to(torch.int8), scale


# Without int8 dot-product instructions (VNNI, AMX) oneDNN's int8 products add pairs of u8 x s8
# products in 16 bits (vpmaddubsw), which saturate unless the weight side stays within +-63:
# 2 x 255 x 63 < 2^15. Weights are then quantized to 7 bits; with VNNI to the full 8.
WEIGHT_LEVELS_WITHOUT_INT8_DOT = 63


def weight_levels(capability: CpuCapability | None = None) -> int:
    """The largest int8 weight magnitude whose products are exact on this CPU's int8 kernels."""
    return 127 if (capability or cpu_capability()).int8_dot else WEIGHT_LEVELS_WITHOUT_INT8_DOT


def _freeze_int8_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Quantize `weight` ([out, ...]) per output channel into `module`'s non-persistent buffers:
    weight_int8 [out, in] (within +-weight_levels()) and weight_scale [out]."""
    rows, scale = quantize_rows(weight.detach().float().reshape(weight.shape[0], -1), weight_levels())
    module.register_buffer("weight_int8", rows, persistent=False)
    module.register_buffer("weight_scale", scale[:, 0], persistent=False)


def int8_matmul(x: torch.Tensor, weight_int8: torch.Tensor, weight_scale: torch.Tensor,
                bias: torch.Tensor | None, batch: int | None = None) -> torch.Tensor:
    """x @ w.T + bias with w ~ weight_int8 * weight_scale[:, None] ([N, K]): Tensor[R, K] ->
    float32 Tensor[R, N], or with `batch` (R = batch x frames, a convolution's im2col rows)
    Tensor[batch, N, frames]. Each row of x is quantized to int8 on the fly, the product runs as
    int8 x int8 -> int32 (torch._int_mm, which reads the transposed [N, K] weight fastest) and is
    rescaled in two passes: int32 to float32 times the row scales (transposing for `batch`), then
    times the weight scales plus the bias."""
    rows, scale = quantize_rows(x.float())
    product = torch._int_mm(rows, weight_int8.t())
    channels = weight_int8.shape[0]
    if batch is None:
        out = torch.mul(product, scale, out=torch.empty(product.shape))
    else:
        frames = product.shape[0] // batch
        out = torch.empty(batch, channels, frames)
        torch.mul(product.view(batch, frames, channels).transpose(1, 2), scale.view(batch, 1, frames), out=out)
        weight_scale = weight_scale[:, None]
        bias = None if bias is None else bias[:, None]
    return out.mul_(weight_scale) if bias is None else torch.addcmul(bias, out, weight_scale, out=out)


# Layers with fewer weights than this keep their dtype: below about 512 x 512 the quantization of
# the input costs what int8 saves (on AVX2: 0.6-0.9x float32's speed at 128-192 wide, 1.35-1.7x at
# 512), and the small layers hold the conditioning projections, the most sensitive to rounding.
INT8_MIN_WEIGHTS = 1 << 18


class Int8Linear:
    """Swapped into nn.Linear / OneDNNLinear: on CPU inference in the weight's dtype (float32, or
    bfloat16 as T5Gemma is stored) the product runs as int8 x int8 -> int32 (`torch._int_mm`) with
    the weight quantized once per output channel and the input per row, rescaled in float32 and
    returned in the input's dtype; elsewhere (autograd, another device or dtype, a weight computed
    by a LoRA parametrization) the layer's own path. The float weight stays the parameter
    (state-dict keys unchanged); the int8 copy is a non-persistent buffer, refreshed by
    load_state_dict."""

    def freeze_coefficients(self) -> None:
        _freeze_int8_weight(self, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != self.weight.dtype or torch.compiler.is_compiling()
                or _needs_graph(x, self) or x.numel() < ONEDNN_MIN_ROWS * self.in_features
                or parametrize.is_parametrized(self, "weight")):  # a LoRA computes the weight: use it
            return super().forward(x)
        out = int8_matmul(x.reshape(-1, self.in_features), self.weight_int8, self.weight_scale, self.bias)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def use_int8_linears(module: nn.Module, min_weights: int | None = None) -> int:
    """Swap Int8Linear into every plain (or oneDNN) linear layer of `module` with at least
    `min_weights` (default INT8_MIN_WEIGHTS) float32 or bfloat16 weights, outside the
    conditioning projections; returns how many. In place, inference only."""
    min_weights = INT8_MIN_WEIGHTS if min_weights is None else min_weights
    count = 0
    for _, submodule in reducible_modules(module):
        if (type(submodule) in (nn.Linear, OneDNNLinear) and submodule.weight.numel() >= min_weights
                and submodule.weight.dtype in (torch.float32, torch.bfloat16)):
            _swap(submodule, Int8Linear)
            _freeze(submodule)
            count += 1
    return count


class Int8Convolution:
    """Swapped into the U-Net's PaddedConv1d: on CPU inference in float32 the convolution runs as
    im2col rows times the weight quantized once per output channel, through `int8_matmul`;
    elsewhere the layer's own convolution. Parameters and state-dict keys unchanged (the int8
    copy is a non-persistent buffer, refreshed by load_state_dict)."""

    def freeze_coefficients(self) -> None:
        _freeze_int8_weight(self, self.weight)

    def convolve(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        stride, padding, dilation = _single(stride), _single(padding), _single(dilation)
        kernel = self.kernel_size[0]
        frames = (x.shape[-1] + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if (x.device.type != "cpu" or x.dtype != torch.float32 or groups != 1 or frames < 1
                or torch.compiler.is_compiling() or _needs_graph(x, self)
                or parametrize.is_parametrized(self, "weight")):  # a LoRA computes the weight: use it
            return super().convolve(x, weight, bias, stride, padding, dilation, groups)
        rows = unfold_rows(x, kernel, stride, padding, dilation, frames)
        return int8_matmul(rows.reshape(-1, rows.shape[-1]), self.weight_int8, self.weight_scale, bias,
                           batch=x.shape[0])


def use_int8_convolutions(module: nn.Module, min_weights: int | None = None) -> int:
    """Swap Int8Convolution into every ungrouped PaddedConv1d (the U-Net's convolutions; the VAEs'
    stay as they are) of `module` with at least `min_weights` (default INT8_MIN_WEIGHTS) float32
    weights, outside the conditioning projections; returns how many. In place, inference only."""
    min_weights = INT8_MIN_WEIGHTS if min_weights is None else min_weights
    count = 0
    for _, submodule in reducible_modules(module):
        if (isinstance(submodule, PaddedConv1d) and submodule.groups == 1
                and submodule.weight.dtype == torch.float32 and submodule.weight.numel() >= min_weights):
            _swap(submodule, Int8Convolution)
            _freeze(submodule)
            count += 1
    return count


def prepare_for_inference(module: nn.Module, *, fold_weight_norm: bool = False, onednn_linear: bool = True,
                          onednn_conv: bool = True, cached_snake: bool = True,
                          fused_residual: bool = True, sigmoid_dyt: bool = True) -> nn.Module:
    """Eval mode, gradients off, then the swaps switched on (see the module doc); returns
    `module`, changed in place. The Snake swaps freeze coefficients, refreshed by load_state_dict
    (weights changed in place otherwise need another prepare_for_inference)."""
    module.eval().requires_grad_(False)
    if fold_weight_norm:
        fold(module)
    if onednn_linear:
        use_onednn_linear(module)
    if onednn_conv:
        use_onednn_convolutions(module)
    if cached_snake:
        use_cached_snakes(module)
    if fused_residual:
        use_fused_residual_tails(module)
    if sigmoid_dyt:
        use_sigmoid_dynamic_tanh(module)
    return module


def compile_backbone(model, **options):
    """torch.compile the diffusion backbone of a StableAudioModel in place (nn.Module.compile:
    same module, same state-dict keys). Returns `model`. Inductor's weight freezing is on by
    default (inference only: weights become constants, which lets it pack them for oneDNN)."""
    options.setdefault("options", {"freezing": True})
    model.backbone.compile(**options)
    return model
