"""Layers shared by the audio autoencoders (Oobleck, DAC) and the U-Net.

- `Snake`: the periodic activation x + sin^2(alpha * x) / beta, per channel (Ziyin et al. 2020;
  the separate-beta form is BigVGAN's SnakeBeta).
- `WNConv1d` / `WNConvTranspose1d` / `WNConv2d`: convolutions with a weight-normalised kernel
  w = g * v / ||v|| (Salimans & Kingma 2016), stored as `weight_g` / `weight_v` exactly as
  `torch.nn.utils.weight_norm(module, dim=0)` stores them, so checkpoints load unchanged.
- `snake_pointwise_residual`: x + conv1x1(snake(h)), the tail of the VAEs' residual units, fused
  on CPU inference (a time slice at a time, the residual add inside the GEMM).
- `fold_weight_norm` turns every such conv into a plain `weight` for inference;
  `fold_weight_norm_state` / `unfold_weight_norm_state` convert checkpoints between the two forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..acceleration import conv1d, inference_on_cpu

# Added to the divisor in Snake so a zero beta cannot divide by zero (the reference's constant).
SNAKE_EPS = 1e-9


class Snake(nn.Module):
    """Per-channel Snake activation: x + sin(alpha * x)^2 / (beta + 1e-9).

    Args:
        channels: number of channels C of the input.
        separate_beta: learn `beta` apart from `alpha` (SnakeBeta, used by Oobleck); when False the
            divisor is alpha itself (DAC's Snake1d) and there is no `beta` parameter.
        alpha_logscale: parameters hold log(alpha), log(beta) and start at 0 (i.e. 1 after exp);
            otherwise they hold alpha, beta directly and start at `initial_value`.
        broadcast_shape: store parameters as [1, C, 1] (DAC's layout) instead of [C]
            (stable-audio-tools' layout); this only changes checkpoint shapes.
        initial_value: starting alpha/beta on the linear scale.
    """

    def __init__(
        self,
        channels: int,
        *,
        separate_beta: bool = True,
        alpha_logscale: bool = True,
        broadcast_shape: bool = False,
        initial_value: float = 1.0,
    ):
        super().__init__()
        self.channels = channels
        self.alpha_logscale = alpha_logscale
        self.broadcast_shape = broadcast_shape
        shape = (1, channels, 1) if broadcast_shape else (channels,)
        start = 0.0 if alpha_logscale else initial_value
        self.alpha = nn.Parameter(torch.full(shape, start))
        self.beta = nn.Parameter(torch.full(shape, start)) if separate_beta else None

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, separate_beta={self.beta is not None}, "
            f"alpha_logscale={self.alpha_logscale}, broadcast_shape={self.broadcast_shape}"
        )

    def _per_channel(self, parameter: Tensor) -> Tensor:
        """Parameter -> Tensor[1, C, 1] on the linear scale."""
        value = parameter.reshape(1, -1, 1)
        return value.exp() if self.alpha_logscale else value

    def _coefficients(self) -> tuple[Tensor, Tensor]:
        """(alpha, 1 / (beta + eps)) as Tensor[1, C, 1] on the linear scale."""
        alpha = self._per_channel(self.alpha)
        beta = alpha if self.beta is None else self._per_channel(self.beta)
        return alpha, 1.0 / (beta + SNAKE_EPS)

    def _cached_coefficients(self) -> tuple[Tensor, Tensor]:
        """_coefficients() computed once per parameter state (inference: no graph to keep). The
        key changes when a parameter is replaced, moved, cast or modified in place; parameters
        created under torch.inference_mode have no version counter and are never cached."""
        parameters = [p for p in (self.alpha, self.beta) if p is not None]
        if any(p.is_inference() for p in parameters):
            return self._coefficients()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in parameters)
        cached = self.__dict__.get("_coefficient_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self._coefficients())
            self.__dict__["_coefficient_cache"] = cached
        return cached[1]

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C, T] -> Tensor[B, C, T]."""
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or self.alpha.requires_grad
            or (self.beta is not None and self.beta.requires_grad)
        )
        if needs_graph:
            alpha, inverse_beta = self._coefficients()
            return x + inverse_beta * torch.sin(x * alpha).pow(2)
        # Inference: one output and four passes over it (x * alpha, sin, square, then
        # x + s * 1/beta fused in addcmul) instead of six tensors; the same value up to rounding.
        alpha, inverse_beta = self._cached_coefficients()
        return _snake_into(x, alpha, inverse_beta, torch.empty_like(x))


def _snake_into(x: Tensor, alpha: Tensor, inverse_beta: Tensor, out: Tensor) -> Tensor:
    """out = x + sin(alpha x)^2 * inverse_beta, computed in `out` (same shape as x) in four passes."""
    torch.mul(x, alpha, out=out)
    out.sin_()
    out.mul_(out)
    return torch.addcmul(x, out, inverse_beta, out=out)


def _norm_except_dim0(weight: Tensor) -> Tensor:
    """L2 norm over every dim but 0, kept as Tensor[D0, 1, ..., 1] (weight_norm's `weight_g`)."""
    return torch.linalg.vector_norm(weight, dim=tuple(range(1, weight.dim())), keepdim=True)


def weight_from_norm(weight_g: Tensor, weight_v: Tensor) -> Tensor:
    """w = g * v / ||v||, the norm taken over every dim but 0."""
    return weight_v * (weight_g / _norm_except_dim0(weight_v))


class _WeightNormed:
    """Mixin for a conv whose kernel is parametrised as (weight_g, weight_v) until folded."""

    weight_norm_folded: bool

    def _split_weight(self) -> None:
        initial = self.weight.detach()
        del self.weight
        # Starting g = ||v|| keeps the layer's initial kernel, as torch's weight_norm does.
        self.weight_g = nn.Parameter(_norm_except_dim0(initial))
        self.weight_v = nn.Parameter(initial.clone())
        self.weight_norm_folded = False

    def kernel(self) -> Tensor:
        """The effective convolution weight."""
        if self.weight_norm_folded:
            return self.weight
        return weight_from_norm(self.weight_g, self.weight_v)

    def fold_weight_norm_(self) -> None:
        """Replace (weight_g, weight_v) by the plain `weight` they define; idempotent."""
        if self.weight_norm_folded:
            return
        with torch.no_grad():
            folded = self.kernel()
        requires_grad = self.weight_v.requires_grad
        del self.weight_g
        del self.weight_v
        self.weight = nn.Parameter(folded, requires_grad=requires_grad)
        self.weight_norm_folded = True


class WNConv1d(_WeightNormed, nn.Conv1d):
    """nn.Conv1d with a weight-normalised kernel; same constructor arguments as nn.Conv1d.

    State-dict keys: `weight_g` [out, 1, 1], `weight_v` [out, in/groups, k], `bias` [out]
    (`weight` instead of the first two once folded).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    @property
    def routes_through_conv1d(self) -> bool:
        """Zero padding given in samples: the convolution runs through acceleration.conv1d."""
        return self.padding_mode == "zeros" and not isinstance(self.padding, str)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, T] -> Tensor[B, C_out, T']."""
        if not self.routes_through_conv1d:
            return self._conv_forward(x, self.kernel(), self.bias)
        return conv1d(x, self.kernel(), self.bias, self.stride[0], self.padding[0], self.dilation[0],
                      self.groups)


# Time steps per slice of the fused residual tail: about 64k floats (256 kB) per operand, so the
# Snake output is still in the core's cache when the GEMM reads it.
RESIDUAL_SLICE_FLOATS = 1 << 16


def snake_pointwise_residual(x: Tensor, h: Tensor, activation: nn.Module, conv: WNConv1d) -> Tensor:
    """x + conv(activation(h)) for a kernel-1 `conv`: the tail of the Oobleck/DAC residual unit.

    x: Tensor[B, C_out, T], h: Tensor[B, C_in, T] -> Tensor[B, C_out, T]. On CPU inference
    (float32, no autograd) it runs a time slice at a time: Snake into a slice-sized buffer, then one
    addmm that adds x while multiplying (and the bias in cache), instead of the full-length Snake
    passes, torch's un-blocked 1x1 convolution (its slow path on this shape) and a separate add.
    Equal to the plain form up to float rounding (summation order in the GEMM).
    """
    # The shape checks first: training (grad enabled) falls through without computing the
    # weight-normed kernel here as well as in conv().
    fusable = (not torch.is_grad_enabled() and isinstance(activation, Snake) and conv.kernel_size == (1,)
               and conv.stride == (1,) and conv.padding == (0,) and conv.groups == 1
               and x.dim() == 3 and x.shape[-1] == h.shape[-1] and x.dtype == h.dtype)
    weight = conv.kernel() if fusable else None
    if not fusable or weight.dtype != x.dtype or not inference_on_cpu(h, weight):
        return x + conv(activation(h))
    batch, _, length = h.shape
    matrix = weight[:, :, 0]
    bias = None if conv.bias is None else conv.bias[:, None]
    alpha, inverse_beta = activation._cached_coefficients()
    alpha, inverse_beta = alpha[0], inverse_beta[0]  # [C_in, 1]
    step = max(256, RESIDUAL_SLICE_FLOATS // max(h.shape[1], x.shape[1]))
    out = torch.empty_like(x)
    for b in range(batch):
        for start in range(0, length, step):
            stop = min(length, start + step)
            segment = h[b, :, start:stop]
            activated = _snake_into(segment, alpha, inverse_beta, torch.empty_like(segment))
            target = out[b, :, start:stop]
            torch.addmm(x[b, :, start:stop], matrix, activated, out=target)
            if bias is not None:
                target.add_(bias)
    return out


class WNConv2d(_WeightNormed, nn.Conv2d):
    """nn.Conv2d with a weight-normalised kernel (the VAE's STFT discriminator uses it).

    State-dict keys: `weight_g` [out, 1, 1, 1], `weight_v` [out, in/groups, kh, kw], `bias` [out].
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, H, W] -> Tensor[B, C_out, H', W']."""
        return self._conv_forward(x, self.kernel(), self.bias)


class WNConvTranspose1d(_WeightNormed, nn.ConvTranspose1d):
    """nn.ConvTranspose1d with a weight-normalised kernel; same constructor arguments.

    State-dict keys: `weight_g` [in, 1, 1], `weight_v` [in, out/groups, k], `bias` [out]
    (norm over all dims but 0, which for a transposed conv is the input channel).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # nn.ConvTranspose1d allows only zero padding
        self._split_weight()

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, T] -> Tensor[B, C_out, T']."""
        return F.conv_transpose1d(
            x,
            self.kernel(),
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-normed conv in `module`'s tree into a plain `weight` (in place).

    The outputs are unchanged (up to float rounding); the state-dict then has `<conv>.weight`
    instead of `<conv>.weight_g` / `<conv>.weight_v`. Returns `module`.
    """
    for submodule in module.modules():
        if isinstance(submodule, _WeightNormed):
            submodule.fold_weight_norm_()
    return module


def _weight_norm_prefixes(keys: Iterable[str]) -> set[str]:
    """Prefixes `p` such that keys holds both `p.weight_g` and `p.weight_v`."""
    keys = set(keys)
    return {
        key[: -len(".weight_g")]
        for key in keys
        if key.endswith(".weight_g") and key[: -len("_g")] + "_v" in keys
    }


def unfold_weight_norm_state(
    state_dict: Mapping[str, Tensor], expected_keys: Iterable[str]
) -> dict[str, Tensor]:
    """Turn folded `<p>.weight` entries into `<p>.weight_g`, `<p>.weight_v` where the model
    expects the weight-normed form (g = ||w|| over all dims but 0, v = w). Other entries pass
    through unchanged."""
    wanted = _weight_norm_prefixes(expected_keys)
    result = dict(state_dict)
    for prefix in wanted:
        folded_key = prefix + ".weight"
        if folded_key in result and prefix + ".weight_v" not in result:
            weight = result.pop(folded_key)
            result[prefix + ".weight_g"] = _norm_except_dim0(weight)
            result[prefix + ".weight_v"] = weight
    return result


def fold_weight_norm_state(
    state_dict: Mapping[str, Tensor], expected_keys: Iterable[str]
) -> dict[str, Tensor]:
    """Turn `<p>.weight_g`, `<p>.weight_v` entries into `<p>.weight` where the model expects a
    plain weight (`<p>.weight` in expected_keys). Other entries pass through unchanged."""
    expected = set(expected_keys)
    result = dict(state_dict)
    for prefix in _weight_norm_prefixes(result):
        if prefix + ".weight" in expected:
            weight_g = result.pop(prefix + ".weight_g")
            weight_v = result.pop(prefix + ".weight_v")
            result[prefix + ".weight"] = weight_from_norm(weight_g, weight_v)
    return result


# torch.nn.utils.parametrizations.weight_norm stores g and v under these suffixes.
_PARAMETRIZED_SUFFIXES = {
    ".parametrizations.weight.original0": ".weight_g",
    ".parametrizations.weight.original1": ".weight_v",
}


def _rename_parametrized(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    result = {}
    for key, value in state_dict.items():
        for suffix, replacement in _PARAMETRIZED_SUFFIXES.items():
            if key.endswith(suffix):
                key = key[: -len(suffix)] + replacement
                break
        result[key] = value
    return result


def match_weight_norm_form(
    state_dict: Mapping[str, Tensor], expected_keys: Iterable[str]
) -> dict[str, Tensor]:
    """Convert each conv in `state_dict` to the form that `expected_keys` (a model's state-dict
    keys) uses, so a loader accepts any of: `weight_g`/`weight_v` (torch.nn.utils.weight_norm),
    `parametrizations.weight.original0/1` (its parametrization successor), or a folded `weight`."""
    expected = list(expected_keys)
    renamed = _rename_parametrized(state_dict)
    return fold_weight_norm_state(unfold_weight_norm_state(renamed, expected), expected)
