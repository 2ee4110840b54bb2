"""The VAE's adversary: a multi-scale STFT discriminator (EnCodec's MS-STFT-D, Defossez et al. 2022).

Each scale takes the complex STFT of the audio (real and imaginary parts of every channel as
input planes, time x frequency), runs weight-normed 2D convolutions dilated along time, and
returns a map of patch logits plus the activation after every conv (for feature matching).

Defaults are those of the Stable Audio Open VAE's training config (filters 64, FFT sizes
2048..128, hop a quarter window); parameter names and state-dict keys follow stable-audio-tools'
`EncodecDiscriminator` (`discriminators.{i}.convs.{j}.conv.weight_g`, ...), so its discriminator
weights load here without renaming once the outer `discriminators.` prefix is removed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import check_keys
from ..errors import ConfigError, InputError
from ..models.layers import WNConv2d

DEFAULT_DISCRIMINATOR_FFT_SIZES = (2048, 1024, 512, 256, 128)


def _same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel_size[0] - 1) * dilation[0] // 2, (kernel_size[1] - 1) * dilation[1] // 2)


class NormedConv2d(nn.Module):
    """A weight-normed Conv2d one level down (`.conv`), which keeps the reference's key names."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = WNConv2d(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ComplexSpectrogram(nn.Module):
    """Audio Tensor[B, C, T] -> complex Tensor[B, C, n_fft // 2 + 1, frames].

    Uncentred frames ((T - n_fft) // hop + 1 of them) under a periodic Hann window; with
    `normalized` the spectrum is divided by the window's L2 norm (torchaudio's "window" norm).
    Runs in float32 outside autocast.
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, normalized: bool = True):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.normalized = normalized
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, audio: Tensor) -> Tensor:
        if audio.shape[-1] < self.n_fft:
            raise InputError(f"the discriminator's STFT of size {self.n_fft} needs at least "
                             f"{self.n_fft} samples, got {audio.shape[-1]}")  # fmt: skip
        with torch.autocast(audio.device.type, enabled=False):
            flat = audio.float().reshape(-1, audio.shape[-1])
            spectrum = torch.stft(flat, self.n_fft, self.hop_length, self.win_length,
                                  self.window.float(), center=False, return_complex=True)  # fmt: skip
            if self.normalized:
                spectrum = spectrum / self.window.float().square().sum().sqrt()
        return spectrum.reshape(*audio.shape[:-1], *spectrum.shape[-2:])


def _activation(name: str, params: dict) -> nn.Module:
    factory = getattr(nn, name, None)
    if not (isinstance(factory, type) and issubclass(factory, nn.Module)):
        raise ConfigError(f"discriminator 'activation' {name!r} is not a torch.nn module (e.g. 'LeakyReLU')")
    return factory(**params)


class STFTDiscriminator(nn.Module):
    """One scale: audio Tensor[B, C, T] -> (logits Tensor[B, out_channels, frames, bins],
    features: the activations after each of the len(dilations) + 2 inner convs).

    Layers: conv (2C -> filters), one conv per dilation (dilated along time), a square conv, then
    `conv_post` to the logits. Widths grow by `filters_scale` per layer, capped at `max_filters`.
    """

    def __init__(
        self,
        filters: int,
        in_channels: int = 1,
        out_channels: int = 1,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        max_filters: int = 1024,
        filters_scale: int = 1,
        kernel_size: Sequence[int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        stride: Sequence[int] = (1, 1),
        normalized: bool = True,
        activation: str = "LeakyReLU",
        activation_params: dict | None = None,
        spec_scale_pow: float = 0.0,
        checkpointing: bool = False,
    ):
        super().__init__()
        kernel_size, stride = tuple(kernel_size), tuple(stride)
        if len(kernel_size) != 2 or len(stride) != 2:
            raise ConfigError(f"discriminator 'kernel_size' {list(kernel_size)} and 'stride' "
                              f"{list(stride)} must have two entries (time, frequency)")  # fmt: skip
        self.spec_scale_pow = spec_scale_pow
        self.checkpointing = checkpointing
        self.spec_transform = ComplexSpectrogram(n_fft, hop_length, win_length, normalized)
        self.activation = _activation(activation, activation_params or {"negative_slope": 0.2})

        def width(layer: int) -> int:
            return min(filters_scale**layer * filters, max_filters)

        square = (kernel_size[0], kernel_size[0])
        convs = [NormedConv2d(2 * in_channels, filters, kernel_size, padding=_same_padding(kernel_size))]
        for i, dilation in enumerate(dilations):
            convs.append(NormedConv2d(width(i), width(i + 1), kernel_size, stride=stride,
                                      dilation=(dilation, 1),
                                      padding=_same_padding(kernel_size, (dilation, 1))))  # fmt: skip
        last = width(len(dilations) + 1)
        convs.append(NormedConv2d(width(len(dilations)), last, square, padding=_same_padding(square)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = NormedConv2d(last, out_channels, square, padding=_same_padding(square))

    def _run_layer(self, layer: nn.Module, x: Tensor) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, x, use_reentrant=False)
        return layer(x)

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        spectrum = self.spec_transform(audio)
        if self.spec_scale_pow != 0.0:
            spectrum = spectrum * (spectrum.abs() + 1e-6).pow(self.spec_scale_pow)
        # Planes: real parts of every channel, then imaginary parts; layout [B, 2C, frames, bins].
        x = torch.cat([spectrum.real, spectrum.imag], dim=1).transpose(2, 3)
        # Channels-last activations: the same convolutions, faster on the CPU.
        x = x.contiguous(memory_format=torch.channels_last)
        features = []
        for conv in self.convs:
            x = self.activation(self._run_layer(conv, x))
            features.append(x)
        return self._run_layer(self.conv_post, x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """`STFTDiscriminator`s at several resolutions.

    forward(audio: Tensor[B, C, T]) -> (logits: one Tensor per scale, features: one list per scale).
    `hop_lengths` default to a quarter of each FFT size, `win_lengths` to the FFT size; other
    keyword arguments go to every scale.
    """

    CONFIG_KEYS = frozenset({
        "filters", "in_channels", "out_channels", "n_ffts", "hop_lengths", "win_lengths",
        "max_filters", "filters_scale", "kernel_size", "dilations", "stride", "normalized",
        "activation", "activation_params", "spec_scale_pow", "checkpointing",
    })  # fmt: skip

    def __init__(
        self,
        filters: int = 64,
        in_channels: int = 2,
        out_channels: int = 1,
        n_ffts: Sequence[int] = DEFAULT_DISCRIMINATOR_FFT_SIZES,
        hop_lengths: Sequence[int] | None = None,
        win_lengths: Sequence[int] | None = None,
        **scale_options,
    ):
        super().__init__()
        n_ffts = [int(n) for n in n_ffts]
        hop_lengths = [n // 4 for n in n_ffts] if hop_lengths is None else list(hop_lengths)
        win_lengths = list(n_ffts) if win_lengths is None else list(win_lengths)
        if not n_ffts or not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ConfigError(f"discriminator 'n_ffts' {n_ffts}, 'hop_lengths' {hop_lengths} and "
                              f"'win_lengths' {win_lengths} must be non-empty and of one length")  # fmt: skip
        self.n_ffts = n_ffts
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(filters, in_channels, out_channels, n_fft=n, hop_length=h,
                              win_length=w, **scale_options)
            for n, h, w in zip(n_ffts, hop_lengths, win_lengths)
        )  # fmt: skip

    @classmethod
    def from_config(cls, config: dict) -> MultiScaleSTFTDiscriminator:
        """From a stable-audio-tools "encodec" discriminator `config` dict (its loss-level keys
        `normalize_losses` / `loss_type` are read by the VAE task, not here)."""
        check_keys(config, cls.CONFIG_KEYS, "discriminator 'config'")
        return cls(**config)

    @property
    def min_length(self) -> int:
        """Shortest input every scale accepts."""
        return max(self.n_ffts)

    def forward(self, audio: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outputs = [scale(audio) for scale in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]
