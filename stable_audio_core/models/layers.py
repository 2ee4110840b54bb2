"""Layers shared by the audio autoencoders (Oobleck, DAC) and the U-Net.

- `snake`: the periodic activation x + sin^2(alpha * x) / beta, per channel (Ziyin et al. 2020;
  the separate-beta form is BigVGAN's SnakeBeta). `SnakeBeta` (Oobleck) and `Snake1d` (DAC) are
  its two parameter layouts.
- `WNConv1d` / `WNConvTranspose1d` / `WNConv2d`: convolutions with a weight-normalised kernel
  w = g * v / ||v|| (Salimans & Kingma 2016), stored as `weight_g` / `weight_v` exactly as
  `torch.nn.utils.weight_norm(module, dim=0)` stores them, so checkpoints load unchanged.
- `ResidualUnit`: x + (activation, dilated conv, activation, 1x1 conv)(x), the residual unit of
  both VAEs.
- `fold_weight_norm` turns every such conv into a plain `weight` for inference;
  `fold_weight_norm_state` / `unfold_weight_norm_state` convert checkpoints between the two forms.
- `check_autoencoder_input`: the input checks every autoencoder (these VAEs, SAME) runs first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputError

# Added to the divisor in Snake so a zero beta cannot divide by zero (the reference's constant).
SNAKE_EPS = 1e-9


def snake(x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """x + sin(alpha * x)^2 / (beta + 1e-9): Tensor[B, C, T] with alpha, beta Tensor[1, C, 1]."""
    return x + (1.0 / (beta + SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


class SnakeBeta(nn.Module):
    """Snake with its own divisor beta (Oobleck): parameters `alpha`, `beta` of shape [C] hold
    log(alpha), log(beta) and start at 0, stable-audio-tools' layout."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """(alpha, beta) as Tensor[1, C, 1] on the linear scale."""
        return self.alpha.exp().reshape(1, -1, 1), self.beta.exp().reshape(1, -1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C, T] -> Tensor[B, C, T]."""
        return snake(x, *self.coefficients())


class Snake1d(nn.Module):
    """DAC's Snake1d: one parameter `alpha` of shape [1, C, 1] on the linear scale (starting at 1),
    which is also the divisor."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """(alpha, beta) as Tensor[1, C, 1]; beta is alpha."""
        return self.alpha, self.alpha

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C, T] -> Tensor[B, C, T]."""
        return snake(x, *self.coefficients())


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
    """nn.Conv1d with a weight-normalised kernel; same constructor arguments as nn.Conv1d (zero
    padding only).

    State-dict keys: `weight_g` [out, 1, 1], `weight_v` [out, in/groups, k], `bias` [out]
    (`weight` instead of the first two once folded).
    """

    convolve = staticmethod(F.conv1d)  # the 1-D convolution it runs (acceleration may swap it)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"WNConv1d pads with zeros only, got padding_mode={self.padding_mode!r}")
        self._split_weight()

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, T] -> Tensor[B, C_out, T']."""
        return self.convolve(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation,
                             self.groups)


class ResidualUnit(nn.Module):
    """x + block(x), block = activation, kernel-7 conv dilated by `dilation`, activation, 1x1 conv:
    Tensor[B, C, T] -> Tensor[B, C, T], the residual unit of DAC and Oobleck. The padding
    3 * dilation keeps the length, so DAC's crop of x never applies.

    `activation(channels)` builds each activation. `block_name` is the block's attribute name in
    the family's checkpoints (DAC's "block"; Oobleck's subclass sets "layers").
    """

    block_name = "block"

    def __init__(self, channels: int, dilation: int, activation: Callable[[int], nn.Module]):
        super().__init__()
        setattr(self, self.block_name, nn.Sequential(
            activation(channels),
            WNConv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation),
            activation(channels),
            WNConv1d(channels, channels, kernel_size=1),
        ))

    def forward(self, x: Tensor) -> Tensor:
        return x + getattr(self, self.block_name)(x)


class WNConv2d(_WeightNormed, nn.Conv2d):
    """nn.Conv2d with a weight-normalised kernel (the VAE's STFT discriminator uses it).

    State-dict keys: `weight_g` [out, 1, 1, 1], `weight_v` [out, in/groups, kh, kw], `bias` [out].
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, H, W] -> Tensor[B, C_out, H', W']."""
        return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation, self.groups)


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


def check_autoencoder_input(x: Tensor, channels: int, min_length: int, device: torch.device, what: str) -> None:
    """InputError naming `what` unless x is a Tensor[B, channels, T >= min_length] on `device`
    (the checks every autoencoder runs before encoding or decoding)."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{what} must be a Tensor[B, C, T], got {shape}")
    if x.shape[1] != channels:
        raise InputError(f"{what} has {x.shape[1]} channels, this autoencoder expects {channels}")
    if x.shape[2] < min_length:
        raise InputError(f"{what} has length {x.shape[2]}, the minimum is {min_length}")
    if x.device != device:
        raise InputError(f"{what} is on {x.device} but the autoencoder is on {device}; move one of them")
