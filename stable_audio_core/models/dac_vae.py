"""The encoder and decoder of Stable Audio 1.0's VAE (stable-audio-tools' autoencoder part type
"dac"): descript-audio-codec's convolutional encoder and decoder (Kumar et al. 2023, "High-Fidelity
Audio Compression with Improved RVQGAN"), used without its quantizer under the shared VAE
bottleneck of `models/autoencoder.py`, which registers both classes as type "dac".

The diagram is Oobleck's (the shared `ResidualUnit` with dilations 1, 3, 9 around strided
convolutions), but with DAC's single-parameter `Snake1d` (x + sin^2(alpha x) / alpha), DAC's
module names (`block`, `model`), channel counts that double (encoder) or halve (decoder) per block,
and a decoder that always ends in tanh. Module names reproduce the reference's state-dict keys:
under a stable-audio-tools checkpoint's `pretransform.model.` they are

    encoder.encoder.block.<i>...   encoder.proj_out.{weight,bias}   (DACEncoderWrapper)
    decoder.decoder.model.<i>...                                     (DACDecoderWrapper)

with every convolution weight-normed (`weight_g` / `weight_v`) except the encoder's `proj_out`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ..config import check_keys, require
from ..errors import ConfigError
from .layers import ResidualUnit, Snake1d, WNConv1d, WNConvTranspose1d

# Dilations of the three residual units in every DAC block.
DAC_DILATIONS = (1, 3, 9)


def _strided_padding(stride: int) -> int:
    # DAC's choice: with kernel 2 * stride, even strides map lengths exactly by the stride.
    return math.ceil(stride / 2)


def _check_strides(strides: Sequence[int], name: str, where: str, allow_empty: bool) -> None:
    if not isinstance(strides, (list, tuple)) or (not strides and not allow_empty):
        raise ConfigError(f"{where}: '{name}' must be a non-empty list of positive integers, "
                          f"got {strides!r}")  # fmt: skip
    if any(not isinstance(s, int) or s < 1 for s in strides):
        raise ConfigError(f"{where}: '{name}' must be positive integers, got {list(strides)}")


class DACEncoderBlock(nn.Module):
    """Residual units at C_in, then a strided conv to C_out:
    Tensor[B, C_in, T] -> Tensor[B, C_out, T / stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            *(ResidualUnit(in_channels, dilation, Snake1d) for dilation in DAC_DILATIONS),
            Snake1d(in_channels),
            WNConv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                     padding=_strided_padding(stride)),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DACEncoderNetwork(nn.Module):
    """DAC's encoder proper: Tensor[B, in_channels, T] -> Tensor[B, width, T / prod(strides)]
    with width = d_model * 2^len(strides) (the channels double at every block)."""

    def __init__(self, in_channels: int, d_model: int, strides: Sequence[int]):
        super().__init__()
        widths = [d_model * 2**i for i in range(len(strides) + 1)]
        self.width = widths[-1]
        self.block = nn.Sequential(
            WNConv1d(in_channels, d_model, kernel_size=7, padding=3),
            *(DACEncoderBlock(widths[i], widths[i + 1], s) for i, s in enumerate(strides)),
            Snake1d(self.width),
            WNConv1d(self.width, self.width, kernel_size=3, padding=1),
        )  # fmt: skip

    def forward(self, audio: Tensor) -> Tensor:
        return self.block(audio)


class DACEncoder(nn.Module):
    """Audio Tensor[B, in_channels, T] -> Tensor[B, latent_dim, T // prod(strides)].

    Args:
        in_channels: audio channels (the reference's default is mono).
        d_model: width after the first conv; it doubles at every block.
        strides: downsampling factor of each block.
        latent_dim: output width through a plain 1x1 conv `proj_out` (2 x the VAE latent size
            under a VAE bottleneck); None keeps the network's own width d_model * 2^len(strides)
            and has no `proj_out` weights.
    """

    CONFIG_KEYS = frozenset({"in_channels", "d_model", "strides", "latent_dim"})

    def __init__(
        self,
        d_model: int,
        strides: Sequence[int],
        in_channels: int = 1,
        latent_dim: int | None = None,
    ):
        super().__init__()
        _check_strides(strides, "strides", "dac encoder", allow_empty=True)
        self.in_channels = in_channels
        self.downsampling_ratio = math.prod(strides)
        # Even strides give exactly T / stride samples, which chunked encoding relies on.
        self.exact_ratio = all(s % 2 == 0 for s in strides)
        self.encoder = DACEncoderNetwork(in_channels, d_model, strides)
        width = self.encoder.width
        self.latent_dim = width if latent_dim is None else latent_dim
        self.proj_out = (
            nn.Identity() if latent_dim is None else nn.Conv1d(width, latent_dim, kernel_size=1)
        )

    @classmethod
    def from_config(cls, config: dict) -> DACEncoder:
        where = "dac encoder 'config'"
        check_keys(config, cls.CONFIG_KEYS, where)
        require(config, "d_model", where)
        require(config, "strides", where)
        return cls(**config)

    def forward(self, audio: Tensor) -> Tensor:
        return self.proj_out(self.encoder(audio))


class DACDecoderBlock(nn.Module):
    """Snake, transposed conv upsampling, residual units:
    Tensor[B, C_in, L] -> Tensor[B, C_out, L * stride] (L * stride - 1 for odd strides)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_channels),
            WNConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                              padding=_strided_padding(stride)),
            *(ResidualUnit(out_channels, dilation, Snake1d) for dilation in DAC_DILATIONS),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DACDecoderNetwork(nn.Module):
    """DAC's decoder proper: Tensor[B, latent_dim, L] -> Tensor[B, out_channels, L * prod(rates)],
    the width halving (floor) at every block and a final tanh."""

    def __init__(self, latent_dim: int, channels: int, rates: Sequence[int], out_channels: int):
        super().__init__()
        widths = [channels // 2**i for i in range(len(rates) + 1)]
        self.model = nn.Sequential(
            WNConv1d(latent_dim, channels, kernel_size=7, padding=3),
            *(DACDecoderBlock(widths[i], widths[i + 1], rate) for i, rate in enumerate(rates)),
            Snake1d(widths[-1]),
            WNConv1d(widths[-1], out_channels, kernel_size=7, padding=3),
            nn.Tanh(),
        )  # fmt: skip

    def forward(self, latents: Tensor) -> Tensor:
        return self.model(latents)


class DACDecoder(nn.Module):
    """Latents Tensor[B, latent_dim, L] -> audio Tensor[B, out_channels, L * prod(rates)].

    Args:
        latent_dim: latent channels (the VAE latent size).
        channels: width after the first conv; it halves (integer division) at every block.
        rates: upsampling factor of each block.
        out_channels: audio channels (the reference's default is mono).
    """

    CONFIG_KEYS = frozenset({"latent_dim", "channels", "rates", "out_channels"})

    def __init__(self, latent_dim: int, channels: int, rates: Sequence[int], out_channels: int = 1):
        super().__init__()
        _check_strides(rates, "rates", "dac decoder", allow_empty=False)
        if channels // 2 ** len(rates) < 1:
            raise ConfigError(
                f"dac decoder: 'channels' {channels} halves {len(rates)} times to zero; use at "
                f"least {2 ** len(rates)} channels or fewer 'rates'"
            )
        self.latent_dim = latent_dim
        self.out_channels = out_channels
        self.downsampling_ratio = math.prod(rates)
        # Odd rates lose one sample per transposed conv; chunked decoding needs exact lengths.
        self.exact_ratio = all(r % 2 == 0 for r in rates)
        self.decoder = DACDecoderNetwork(latent_dim, channels, rates, out_channels)

    @classmethod
    def from_config(cls, config: dict) -> DACDecoder:
        where = "dac decoder 'config'"
        check_keys(config, cls.CONFIG_KEYS, where)
        for key in ("latent_dim", "channels", "rates"):
            require(config, key, where)
        return cls(**config)

    def forward(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)
