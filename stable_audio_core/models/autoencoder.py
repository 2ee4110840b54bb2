"""The audio autoencoder of Stable Audio (the "pretransform"): Oobleck encoder and decoder, the
VAE bottleneck, and `AudioAutoencoder`, which maps audio to latents and back, in chunks for long
inputs so memory stays bounded.

Semantics follow stable-audio-tools 0.0.19 (`OobleckEncoder`, `OobleckDecoder`, `VAEBottleneck`,
`AutoencoderPretransform`). Checkpoint layout: a stable-audio-tools checkpoint's keys under
`pretransform.model.` are exactly `AudioAutoencoder.state_dict()`'s keys (`encoder.layers.…`,
`decoder.layers.…`), in weight-normed (`weight_g`/`weight_v`) form until folded.

Encoder, decoder and bottleneck types are looked up in small registries (`ENCODER_TYPES`,
`DECODER_TYPES`, `BOTTLENECK_TYPES`); another architecture registers its `from_config` there, as
Stable Audio 1.0's "dac" encoder and decoder (models/dac_vae.py) do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import check_keys, require
from ..errors import ConfigError, InputError
from ..precision import activation_dtype
from .dac_vae import DACDecoder, DACEncoder
from .layers import ResidualUnit, SnakeBeta, WNConv1d, WNConvTranspose1d, check_autoencoder_input

# Dilations of the three residual units in every Oobleck block (stable-audio-tools' choice).
RESIDUAL_DILATIONS = (1, 3, 9)
# Added to softplus(scale) so the VAE's standard deviation never reaches zero.
VAE_MIN_STD = 1e-4


# --------------------------------------------------------------------------------------------
# Oobleck encoder / decoder
# --------------------------------------------------------------------------------------------


def _activation(use_snake: bool, channels: int) -> nn.Module:
    return SnakeBeta(channels) if use_snake else nn.ELU()


def _stride_padding(stride: int) -> int:
    # With kernel 2 * stride this padding maps T samples to exactly T / stride for even strides.
    return math.ceil(stride / 2)


class OobleckResidualUnit(ResidualUnit):
    """The shared residual unit under stable-audio-tools' key names (its block is `layers`)."""

    block_name = "layers"

    def __init__(self, channels: int, dilation: int, use_snake: bool):
        super().__init__(channels, dilation, lambda width: _activation(use_snake, width))


class EncoderBlock(nn.Module):
    """Residual units, then a strided conv: Tensor[B, C_in, T] -> Tensor[B, C_out, T / stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool):
        super().__init__()
        self.layers = nn.Sequential(
            *(OobleckResidualUnit(in_channels, dilation, use_snake) for dilation in RESIDUAL_DILATIONS),
            _activation(use_snake, in_channels),
            WNConv1d(
                in_channels,
                out_channels,
                kernel_size=2 * stride,
                stride=stride,
                padding=_stride_padding(stride),
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class NearestUpsample(nn.Module):
    """Repeat every sample `stride` times, then zero-pad (stride - 1, stride) so that a
    following conv of kernel 2 * stride keeps the length (torch's padding="same", done here
    to skip its warning about even kernels):
    Tensor[B, C, T] -> Tensor[B, C, T * stride + 2 * stride - 1]."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        repeated = x.repeat_interleave(self.stride, dim=-1)
        return F.pad(repeated, (self.stride - 1, self.stride))


class DecoderBlock(nn.Module):
    """Upsampling (transposed conv, or nearest + conv), then residual units:
    Tensor[B, C_in, T] -> Tensor[B, C_out, T * stride]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        use_snake: bool,
        use_nearest_upsample: bool,
    ):
        super().__init__()
        if use_nearest_upsample:
            upsample = nn.Sequential(
                NearestUpsample(stride),
                WNConv1d(in_channels, out_channels, kernel_size=2 * stride, bias=False),
            )
        else:
            upsample = WNConvTranspose1d(
                in_channels,
                out_channels,
                kernel_size=2 * stride,
                stride=stride,
                padding=_stride_padding(stride),
            )
        self.layers = nn.Sequential(
            _activation(use_snake, in_channels),
            upsample,
            *(OobleckResidualUnit(out_channels, dilation, use_snake) for dilation in RESIDUAL_DILATIONS),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _check_oobleck_shape(c_mults: Sequence[int], strides: Sequence[int], where: str) -> None:
    if len(c_mults) == 0 or len(c_mults) != len(strides):
        raise ConfigError(
            f"{where}: 'c_mults' {list(c_mults)} and 'strides' {list(strides)} must be non-empty "
            "lists of the same length (one entry per block)"
        )
    if any(int(s) != s or s < 1 for s in strides):
        raise ConfigError(f"{where}: 'strides' must be positive integers, got {list(strides)}")


def _reject_antialias(antialias_activation: bool, where: str) -> None:
    if antialias_activation:
        raise ConfigError(
            f"{where}: 'antialias_activation': true is not supported (no released Stable Audio "
            "model uses it); set it to false"
        )


class OobleckEncoder(nn.Module):
    """Audio Tensor[B, in_channels, T] -> Tensor[B, latent_dim, T // prod(strides)].

    Block i maps channels * m_i to channels * m_{i+1} (m = [1] + c_mults) and downsamples by
    strides[i]. `latent_dim` is the encoder's output width (2 x the VAE latent size).
    """

    CONFIG_KEYS = frozenset({
        "in_channels", "channels", "latent_dim", "c_mults", "strides", "use_snake",
        "antialias_activation",
    })  # fmt: skip

    def __init__(
        self,
        in_channels: int = 2,
        channels: int = 128,
        latent_dim: int = 32,
        c_mults: Sequence[int] = (1, 2, 4, 8),
        strides: Sequence[int] = (2, 4, 8, 8),
        use_snake: bool = False,
        antialias_activation: bool = False,
    ):
        super().__init__()
        _check_oobleck_shape(c_mults, strides, "oobleck encoder")
        _reject_antialias(antialias_activation, "oobleck encoder")
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.downsampling_ratio = math.prod(strides)
        # Even strides give exactly T / stride samples, which chunked encoding relies on.
        self.exact_ratio = all(s % 2 == 0 for s in strides)
        widths = [channels * m for m in (1, *c_mults)]
        self.layers = nn.Sequential(
            WNConv1d(in_channels, widths[0], kernel_size=7, padding=3),
            *(
                EncoderBlock(widths[i], widths[i + 1], strides[i], use_snake)
                for i in range(len(strides))
            ),
            _activation(use_snake, widths[-1]),
            WNConv1d(widths[-1], latent_dim, kernel_size=3, padding=1),
        )

    @classmethod
    def from_config(cls, config: dict) -> OobleckEncoder:
        check_keys(config, cls.CONFIG_KEYS, "oobleck encoder 'config'")
        return cls(**config)

    def forward(self, audio: Tensor) -> Tensor:
        return self.layers(audio)


class OobleckDecoder(nn.Module):
    """Latents Tensor[B, latent_dim, L] -> audio Tensor[B, out_channels, L * prod(strides)]."""

    CONFIG_KEYS = frozenset({
        "out_channels", "channels", "latent_dim", "c_mults", "strides", "use_snake",
        "antialias_activation", "use_nearest_upsample", "final_tanh",
    })  # fmt: skip

    def __init__(
        self,
        out_channels: int = 2,
        channels: int = 128,
        latent_dim: int = 32,
        c_mults: Sequence[int] = (1, 2, 4, 8),
        strides: Sequence[int] = (2, 4, 8, 8),
        use_snake: bool = False,
        antialias_activation: bool = False,
        use_nearest_upsample: bool = False,
        final_tanh: bool = True,
    ):
        super().__init__()
        _check_oobleck_shape(c_mults, strides, "oobleck decoder")
        _reject_antialias(antialias_activation, "oobleck decoder")
        self.out_channels = out_channels
        self.latent_dim = latent_dim
        self.downsampling_ratio = math.prod(strides)
        # Nearest upsampling always multiplies the length exactly; transposed convs need even
        # strides. Chunked decoding relies on it.
        self.exact_ratio = use_nearest_upsample or all(s % 2 == 0 for s in strides)
        widths = [channels * m for m in (1, *c_mults)]
        self.layers = nn.Sequential(
            WNConv1d(latent_dim, widths[-1], kernel_size=7, padding=3),
            *(
                DecoderBlock(widths[i], widths[i - 1], strides[i - 1], use_snake,
                             use_nearest_upsample)
                for i in range(len(strides), 0, -1)
            ),
            _activation(use_snake, widths[0]),
            WNConv1d(widths[0], out_channels, kernel_size=7, padding=3, bias=False),
            nn.Tanh() if final_tanh else nn.Identity(),
        )  # fmt: skip

    @classmethod
    def from_config(cls, config: dict) -> OobleckDecoder:
        check_keys(config, cls.CONFIG_KEYS, "oobleck decoder 'config'")
        return cls(**config)

    def forward(self, latents: Tensor) -> Tensor:
        return self.layers(latents)


# --------------------------------------------------------------------------------------------
# Bottlenecks
# --------------------------------------------------------------------------------------------


class VAEBottleneck(nn.Module):
    """Diagonal Gaussian: the encoder's 2D channels are (mean, scale) halves,
    std = softplus(scale) + 1e-4. Deterministic encoding returns the mean."""

    def input_channels(self, latent_dim: int) -> int:
        return 2 * latent_dim

    @classmethod
    def from_config(cls, config: dict) -> VAEBottleneck:
        check_keys(config, set(), "vae bottleneck 'config'")
        return cls()

    @staticmethod
    def _mean_and_std(encoded: Tensor) -> tuple[Tensor, Tensor]:
        mean, scale = encoded.chunk(2, dim=1)
        return mean, F.softplus(scale) + VAE_MIN_STD

    @staticmethod
    def _draw(mean: Tensor, std: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return noise * std + mean

    def encode(
        self, encoded: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Tensor[B, 2D, L] -> Tensor[B, D, L]: the mean, or a draw when `sample`."""
        mean, std = self._mean_and_std(encoded)
        return self._draw(mean, std, generator) if sample else mean

    def encode_with_kl(
        self, encoded: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Tensor[B, 2D, L] -> (a draw Tensor[B, D, L], KL to N(0, I) as a scalar).

        KL = mean over (B, L) of sum over D of (mean^2 + var - log var - 1), the reference's
        form (no factor 1/2)."""
        mean, std = self._mean_and_std(encoded)
        variance = std * std
        kl = (mean * mean + variance - torch.log(variance) - 1).sum(1).mean()
        return self._draw(mean, std, generator), kl

    def decode(self, latents: Tensor) -> Tensor:
        return latents


class PassThroughBottleneck(nn.Module):
    """No bottleneck (a config without "bottleneck"): latents are the encoder output."""

    def input_channels(self, latent_dim: int) -> int:
        return latent_dim

    def encode(
        self, encoded: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        return encoded

    def encode_with_kl(
        self, encoded: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return encoded, encoded.new_zeros(())

    def decode(self, latents: Tensor) -> Tensor:
        return latents


# Config `type` -> builder taking the section's "config" dict. A registered encoder exposes
# `in_channels`, `latent_dim` (output width), `downsampling_ratio` and `exact_ratio` (output
# length is exactly input // ratio); a decoder exposes `latent_dim`, `out_channels`,
# `downsampling_ratio` and `exact_ratio` (output length is exactly input * ratio).
ENCODER_TYPES: dict[str, Callable[[dict], nn.Module]] = {
    "oobleck": OobleckEncoder.from_config,
    "dac": DACEncoder.from_config,  # Stable Audio 1.0's VAE (models/dac_vae.py)
}
DECODER_TYPES: dict[str, Callable[[dict], nn.Module]] = {
    "oobleck": OobleckDecoder.from_config,
    "dac": DACDecoder.from_config,
}
BOTTLENECK_TYPES: dict[str, Callable[[dict], nn.Module]] = {"vae": VAEBottleneck.from_config}


# --------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------

# Latents per decode window. Each window recomputes `overlap` latents at its inner edges, so
# small windows waste work (32 of 128 = 25%); 256 halves that at about 1.2 GB of working memory
# for the SAO 1.0 VAE in float32 (its 95 s unchunked decode needs about 10 GB).
DECODE_CHUNK_SIZE = 256


@dataclass(frozen=True)
class ChunkWindow:
    """Latent positions [start, stop) go through the network; the outputs for
    [keep_start, keep_stop) are kept, the rest (a margin at inner edges) is discarded."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def chunk_windows(length: int, chunk_size: int, overlap: int) -> list[ChunkWindow]:
    """Cover [0, length) latents with equal windows of at most `chunk_size` (`length` if
    shorter), each discarding at least overlap // 2 latents at every edge it shares with a
    neighbour.

    The windows are as few as chunk_size allows and balanced: 432 latents in windows of at most
    256 with overlap 32 become two windows of 232 (464 latents of work) rather than 256 + 256
    (512). The kept parts tile [0, length) exactly. Where overlap // 2 is at least the network's
    receptive field (in latents), the stitched result equals processing everything at once.
    """
    if chunk_size < 1 or overlap < 0 or overlap >= chunk_size:
        raise InputError(
            f"chunk_size={chunk_size}, overlap={overlap}: need chunk_size >= 1 and "
            "0 <= overlap < chunk_size"
        )
    margin = overlap // 2
    size = min(chunk_size, length)
    if length > chunk_size:
        # n windows of size w keep n * w - 2 * margin * (n - 1) latents: the fewest windows that
        # fit, then the smallest equal size that covers the length with them.
        count = -(-(length - 2 * margin) // (chunk_size - 2 * margin))
        size = -(-(length + 2 * margin * (count - 1)) // count)
    windows = []
    keep_start = 0
    while keep_start < length:
        start = max(0, keep_start - margin)
        stop = min(length, start + size)
        if stop == length:
            # The last window reaches back to full size: every window then has one shape,
            # which the conv backends and the allocator reuse (a new shape costs a setup).
            start = max(0, length - size)
        keep_stop = length if stop == length else stop - margin
        windows.append(ChunkWindow(start, stop, keep_start, keep_stop))
        keep_start = keep_stop
    return windows


# --------------------------------------------------------------------------------------------
# The autoencoder
# --------------------------------------------------------------------------------------------


class AudioAutoencoder(nn.Module):
    """Audio <-> latents, with stable-audio-tools' pretransform semantics.

    Attributes: sample_rate, downsampling_ratio, io_channels, in_channels, out_channels,
    latent_dim, scale (latents are the autoencoder's latents divided by `scale`).

    Args:
        encoder, decoder, bottleneck: built modules (see the registries above).
        soft_clip: tanh on the decoded audio (the decoder section's "soft_clip").
        iterate_batch: run the networks one batch item at a time (less memory, same result).
        chunked_by_default: always chunk when `chunked` is not given (the config's "chunked").
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        bottleneck: nn.Module,
        *,
        latent_dim: int,
        downsampling_ratio: int,
        sample_rate: int,
        io_channels: int = 2,
        in_channels: int | None = None,
        out_channels: int | None = None,
        scale: float = 1.0,
        soft_clip: bool = False,
        iterate_batch: bool = False,
        chunked_by_default: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.bottleneck = bottleneck
        self.latent_dim = latent_dim
        self.downsampling_ratio = downsampling_ratio
        self.sample_rate = sample_rate
        self.io_channels = io_channels
        self.in_channels = io_channels if in_channels is None else in_channels
        self.out_channels = io_channels if out_channels is None else out_channels
        self.scale = float(scale)
        self.soft_clip = soft_clip
        self.iterate_batch = iterate_batch
        self.chunked_by_default = chunked_by_default
        self._check_parts_agree()

    def _check_parts_agree(self) -> None:
        expected = {
            "encoder in_channels": (self.encoder.in_channels, self.in_channels),
            "encoder latent_dim": (
                self.encoder.latent_dim,
                self.bottleneck.input_channels(self.latent_dim),
            ),
            "encoder downsampling ratio (product of strides)": (
                self.encoder.downsampling_ratio,
                self.downsampling_ratio,
            ),
            "decoder latent_dim": (self.decoder.latent_dim, self.latent_dim),
            "decoder out_channels": (self.decoder.out_channels, self.out_channels),
            "decoder upsampling ratio (product of strides)": (
                self.decoder.downsampling_ratio,
                self.downsampling_ratio,
            ),
        }
        wrong = [f"{name} is {got}, expected {want}" for name, (got, want) in expected.items()
                 if got != want]  # fmt: skip
        if wrong:
            raise ConfigError(
                "autoencoder config is inconsistent (latent_dim, io_channels and "
                "downsampling_ratio must agree with the encoder, bottleneck and decoder): "
                + "; ".join(wrong)
            )

    # -- helpers -------------------------------------------------------------------------

    def _parameter(self) -> Tensor:
        return next(self.decoder.parameters())

    def _run(self, network: nn.Module, x: Tensor) -> Tensor:
        if not self.iterate_batch:
            return network(x)
        return torch.cat([network(x[i : i + 1]) for i in range(x.shape[0])])

    def _wants_chunks(self, chunked: bool | None, length: int, chunk_size: int,
                      network: nn.Module, what: str) -> bool:  # fmt: skip
        if chunked is None:
            return network.exact_ratio and (self.chunked_by_default or length > chunk_size)
        if chunked and not network.exact_ratio:
            raise InputError(
                f"chunked {what} needs output lengths that are exactly the input length times "
                "(or divided by) the ratio, which odd strides break; pass chunked=False"
            )
        return chunked

    def _run_in_chunks(self, network: nn.Module, x: Tensor, length: int, in_per_latent: int,
                       out_per_latent: int, chunk_size: int, overlap: int) -> Tensor:  # fmt: skip
        """Run `network` window by window over `length` latent positions of `x` and stitch
        the kept parts; only one window's activations exist at a time."""
        out = None
        for window in chunk_windows(length, chunk_size, overlap):
            # The last window takes any trailing samples that do not fill a whole latent.
            stop = x.shape[-1] if window.stop == length else window.stop * in_per_latent
            y = self._run(network, x[..., window.start * in_per_latent : stop])
            if out is None:
                out = y.new_empty(*y.shape[:-1], length * out_per_latent)
            offset = window.start * out_per_latent
            first, last = window.keep_start * out_per_latent, window.keep_stop * out_per_latent
            out[..., first:last] = y[..., first - offset : last - offset]
            del y
        return out

    def _encode_network(self, audio: Tensor, chunked: bool | None, chunk_size: int,
                        overlap: int) -> Tensor:  # fmt: skip
        ratio = self.downsampling_ratio
        length = audio.shape[-1] // ratio
        if self._wants_chunks(chunked, length, chunk_size, self.encoder, "encoding"):
            return self._run_in_chunks(self.encoder, audio, length, ratio, 1, chunk_size, overlap)
        return self._run(self.encoder, audio)

    # -- public API ------------------------------------------------------------------------

    def encode(
        self,
        audio: Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunked: bool | None = None,
        chunk_size: int = 128,
        overlap: int = 32,
    ) -> Tensor:
        """Audio Tensor[B, in_channels, T] -> latents Tensor[B, latent_dim, T // ratio].

        Returns the posterior mean, or a draw from it when `sample` (noise from `generator`).
        chunked: True/False force it; None chunks when T // ratio > chunk_size. chunk_size and
        overlap count latents. The bottleneck runs once on the stitched encoder output, so
        chunking changes nothing but memory.
        """
        check_autoencoder_input(audio, self.in_channels, self.downsampling_ratio, self._parameter().device, "audio")
        x = audio.to(activation_dtype(self))
        encoded = self._encode_network(x, chunked, chunk_size, overlap)
        latents = self.bottleneck.encode(encoded, sample=sample, generator=generator)
        return (latents / self.scale).to(audio.dtype)

    def encode_with_kl(
        self, audio: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Audio Tensor[B, in_channels, T] -> (a latent draw Tensor[B, latent_dim, T // ratio]
        divided by `scale` like `encode`, KL divergence scalar), unchunked, for training."""
        check_autoencoder_input(audio, self.in_channels, self.downsampling_ratio, self._parameter().device, "audio")
        encoded = self._run(self.encoder, audio.to(activation_dtype(self)))
        latents, kl = self.bottleneck.encode_with_kl(encoded, generator=generator)
        return (latents / self.scale).to(audio.dtype), kl

    def decode(
        self,
        latents: Tensor,
        chunked: bool | None = None,
        chunk_size: int = DECODE_CHUNK_SIZE,
        overlap: int = 32,
    ) -> Tensor:
        """Latents Tensor[B, latent_dim, L] -> audio Tensor[B, out_channels, L * ratio].

        chunked: True/False force it; None chunks when L > chunk_size. Windows of at most
        chunk_size latents are decoded one after another, overlap // 2 latents at each inner
        edge discarded, so peak memory depends on chunk_size, not on L.
        """
        check_autoencoder_input(latents, self.latent_dim, 1, self._parameter().device, "latents")
        z = self.bottleneck.decode(latents.to(activation_dtype(self)) * self.scale)
        length = z.shape[-1]
        if self._wants_chunks(chunked, length, chunk_size, self.decoder, "decoding"):
            audio = self._run_in_chunks(
                self.decoder, z, length, 1, self.downsampling_ratio, chunk_size, overlap
            )
        else:
            audio = self._run(self.decoder, z)
        if self.soft_clip:
            audio = torch.tanh(audio)
        return audio.to(latents.dtype)


# --------------------------------------------------------------------------------------------
# Building from a stable-audio-tools config
# --------------------------------------------------------------------------------------------

PRETRANSFORM_KEYS = frozenset({"type", "config", "scale", "chunked", "iterate_batch",
                               "model_half", "enable_grad"})  # fmt: skip
AUTOENCODER_KEYS = frozenset({"encoder", "decoder", "bottleneck", "latent_dim",
                              "downsampling_ratio", "io_channels", "in_channels",
                              "out_channels"})  # fmt: skip
ENCODER_SECTION_KEYS = frozenset({"type", "config", "requires_grad"})
DECODER_SECTION_KEYS = frozenset({"type", "config", "requires_grad", "soft_clip"})
BOTTLENECK_SECTION_KEYS = frozenset({"type", "config"})


def _build_part(registry: Mapping[str, Callable], section: dict, allowed: frozenset[str],
                where: str) -> nn.Module:  # fmt: skip
    check_keys(section, allowed, where)
    type_name = require(section, "type", where)
    if type_name not in registry:
        raise ConfigError(
            f"{where} has unknown type {type_name!r}; supported types are {sorted(registry)}"
        )
    return registry[type_name](section.get("config", {}))


def build_autoencoder(pretransform_config: dict, sample_rate: int) -> AudioAutoencoder:
    """Build the autoencoder from a stable-audio-tools `model.pretransform` dict:
    {"type": "autoencoder", "config": {"encoder", "decoder", "bottleneck", "latent_dim",
    "downsampling_ratio", "io_channels", ...}, "scale"?, "chunked"?, "iterate_batch"?,
    "model_half"?, "enable_grad"?}. A SAME config (Stable Audio 3) builds a SAMEAutoencoder.

    Like the reference pretransform, the result is in eval mode with gradients off unless
    "enable_grad" is true, and in float16 when "model_half" is true.
    """
    config = pretransform_config.get("config") if isinstance(pretransform_config, dict) else None
    if isinstance(config, dict):
        from .same import build_same_pretransform, is_same_config
        if is_same_config(config):  # Stable Audio 3's SAME (patched + transformer resampling)
            return build_same_pretransform(pretransform_config, sample_rate)
    where = "pretransform config"
    check_keys(pretransform_config, PRETRANSFORM_KEYS, where)
    kind = require(pretransform_config, "type", where)
    if kind != "autoencoder":
        raise ConfigError(f"{where} has type {kind!r}; only 'autoencoder' is supported")
    config = require(pretransform_config, "config", where)
    where = "pretransform 'config'"
    if isinstance(config, dict) and "pretransform" in config:
        raise ConfigError(f"{where}: a nested 'pretransform' inside the autoencoder is not "
                          "supported; remove it")  # fmt: skip
    check_keys(config, AUTOENCODER_KEYS, where)
    encoder = _build_part(ENCODER_TYPES, require(config, "encoder", where),
                          ENCODER_SECTION_KEYS, "autoencoder 'encoder'")  # fmt: skip
    decoder_section = require(config, "decoder", where)
    decoder = _build_part(DECODER_TYPES, decoder_section, DECODER_SECTION_KEYS,
                          "autoencoder 'decoder'")  # fmt: skip
    if config.get("bottleneck") is None:
        bottleneck = PassThroughBottleneck()
    else:
        bottleneck = _build_part(BOTTLENECK_TYPES, config["bottleneck"], BOTTLENECK_SECTION_KEYS,
                                 "autoencoder 'bottleneck'")  # fmt: skip
    model = AudioAutoencoder(
        encoder,
        decoder,
        bottleneck,
        latent_dim=require(config, "latent_dim", where),
        downsampling_ratio=require(config, "downsampling_ratio", where),
        sample_rate=sample_rate,
        io_channels=require(config, "io_channels", where),
        in_channels=config.get("in_channels"),
        out_channels=config.get("out_channels"),
        scale=pretransform_config.get("scale", 1.0),
        soft_clip=decoder_section.get("soft_clip", False),
        iterate_batch=pretransform_config.get("iterate_batch", False),
        chunked_by_default=pretransform_config.get("chunked", False),
    )
    model.eval().requires_grad_(bool(pretransform_config.get("enable_grad", False)))
    if pretransform_config.get("model_half", False):
        model.half()
    return model
