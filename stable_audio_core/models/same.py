"""SAME, the Stable Audio 3 autoencoder (encoder/decoder type "same", pretransform "patched",
bottleneck "softnorm"): audio <-> latents at 4096x downsampling with transformers only.

    encode: audio [B, 2, T] --patch 256, channel-major--> [B, 512, T/256]
            --SAMEEncoder: one resampling block (16 patch tokens + 1 learned token per latent,
              transformer, keep the learned token) then Linear(d, latent_dim)--> [B, 256, T/4096]
            --soft-norm bottleneck (affine, / running_std)--> latents
    decode: latents --bottleneck (* running_std, + noise)--> Linear(latent_dim, d)
            --resampling block (1 latent token + 16 learned tokens, transformer, keep the 16)-->
            [B, 512, 16 L] --unpatch--> audio [B, 2, 4096 L] (--tanh if soft_clip)

The transformer attends within chunks of 2 latents (SAME-S: `chunk_size` 32 patches, the second
half of the layers on chunks shifted by one latent, edges padded by repeating the end latents) or
within a band of one latent each side (SAME-L: `sliding_window` [1, 1]).

Semantics and state-dict keys follow stable-audio-3 (`models/autoencoders.py`,
`models/pretransforms.py`, `models/bottleneck.py`, `factory.py`): the keys of a full SA3
checkpoint under `pretransform.model.` and those of an AE-only SAME repo are exactly
`SAMEAutoencoder.state_dict()`'s, mappings in the old weight-norm form (`weight_g`/`weight_v`).

Noise: like the reference, decoding is random even in eval(): the bottleneck adds
`randn * running_std * 1e-3` (`noise_regularize`), then the decoder adds `randn * mask_noise` to its
learned tokens, drawn in that order from the global RNG (or `generator`). `noise=False` (per call,
or the `noise` attribute) gives a deterministic decode; the reference's own switches
(`bottleneck.noise_regularize`, each block's `mask_noise`) work here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import check_keys, require
from ..errors import ConfigError, InputError
from .layers import WNConv1d, check_autoencoder_input
from .sa3_layers import DynamicTanh, SelfAttention, sin_pi
from .transformer import FeedForward, RotaryEmbedding

# Bottleneck noise in eval() and in training, as multiples of running_std (the reference's values).
EVAL_NOISE_SCALE = 1e-3
TRAIN_NOISE_SCALE = 5e-2
# The reference's chunked encode/decode defaults, in latents.
CHUNK_SIZE = 128
CHUNK_OVERLAP = 32


# --------------------------------------------------------------------------------------------
# Patching and the soft-norm bottleneck
# --------------------------------------------------------------------------------------------


class PatchedPretransform(nn.Module):
    """Audio Tensor[B, C, T] <-> patches Tensor[B, C * P, ceil(T / P)], channel-major: row
    c * P + h holds sample h of each patch of channel c. No parameters."""

    def __init__(self, channels: int, patch_size: int):
        super().__init__()
        self.channels = channels
        self.patch_size = patch_size

    def encode(self, audio: Tensor) -> Tensor:
        """Tensor[B, C, T] -> Tensor[B, C * P, ceil(T / P)], zero-padding the end."""
        batch, channels, _ = audio.shape
        audio = pad_to_multiple(audio, self.patch_size, dim=-1)
        patches = audio.view(batch, channels, -1, self.patch_size)      # b c l h
        return patches.permute(0, 1, 3, 2).reshape(batch, channels * self.patch_size, -1)

    def decode(self, patches: Tensor) -> Tensor:
        """Tensor[B, C * P, L] -> Tensor[B, C, L * P]."""
        batch, _, length = patches.shape
        audio = patches.view(batch, self.channels, self.patch_size, length)  # b c h l
        return audio.permute(0, 1, 3, 2).reshape(batch, self.channels, length * self.patch_size)


class SoftNormBottleneck(nn.Module):
    """Latents = (x * scaling_factor + bias) / running_std; decoding multiplies by running_std
    only (the decoder's first Linear absorbs the affine part) and adds the regularising noise.

    `noise_scaling_factor` [1, 0, 1] is kept for the checkpoint layout (noise_augment_dim = 0).
    """

    def __init__(self, dim: int, *, noise_regularize: bool = False, auto_scale: bool = False):
        super().__init__()
        self.scaling_factor = nn.Parameter(torch.ones(1, dim, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1))
        self.noise_scaling_factor = nn.Parameter(torch.ones(1, 0, 1))
        self.noise_regularize = noise_regularize
        if auto_scale:
            self.running_std = nn.Parameter(torch.ones(1), requires_grad=False)
        else:
            self.running_std = None

    def encode(self, x: Tensor) -> Tensor:
        """Encoder output Tensor[B, dim, L] -> latents Tensor[B, dim, L]."""
        x = x * self.scaling_factor + self.bias
        return x if self.running_std is None else x / self.running_std

    def decode(self, latents: Tensor, noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """Latents Tensor[B, dim, L] -> decoder input Tensor[B, dim, L]; one normal draw of the
        latents' shape when noise and noise_regularize."""
        x = latents if self.running_std is None else latents * self.running_std
        if noise and self.noise_regularize:
            # Without auto_scale the noise follows each channel's spread over time.
            spread = self.running_std if self.running_std is not None else x.std(dim=-1, keepdim=True)
            scale = TRAIN_NOISE_SCALE if self.training else EVAL_NOISE_SCALE
            draw = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + draw * spread * scale
        return x


# --------------------------------------------------------------------------------------------
# The transformer and the resampling blocks
# --------------------------------------------------------------------------------------------


def pad_to_multiple(x: Tensor, multiple: int, dim: int) -> Tensor:
    """Zero-pad the end of `dim` to a multiple of `multiple`."""
    missing = -x.shape[dim] % multiple
    if missing == 0:
        return x
    padding = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, missing]
    return F.pad(x, padding)


class SAMEBlock(nn.Module):
    """Pre-norm transformer layer: x + attn(DyT(x)), then x + GLU feed-forward(DyT(x)).

    Differential self-attention with DyT q/k norms and rotary positions on the first
    head_dim // 2 channels of each head (positions restart in every sequence the block sees);
    the GLU gate is SiLU, or sin(pi x) in `sinusoidal` blocks.
    """

    def __init__(self, dim: int, head_dim: int, *, ff_mult: float, sinusoidal: bool):
        super().__init__()
        head_dim = min(head_dim, dim)
        self.pre_norm = DynamicTanh(dim)
        self.self_attn = SelfAttention(dim, head_dim, differential=True, qk_norm=DynamicTanh)
        self.ff_norm = DynamicTanh(dim)
        self.ff = FeedForward(dim, mult=ff_mult, zero_init_output=False,
                              activation=sin_pi if sinusoidal else F.silu)  # fmt: skip
        self.rope = RotaryEmbedding(head_dim // 2)

    def forward(self, x: Tensor, sliding_window: tuple[int, int] | None = None) -> Tensor:
        """Tensor[B, N, dim] -> Tensor[B, N, dim]."""
        x = x + self.self_attn(self.pre_norm(x), self.rope(x.shape[1]), sliding_window=sliding_window)
        return x + self.ff(self.ff_norm(x))


@dataclass(frozen=True)
class StageOptions:
    """What a resampling stage needs besides its widths (one per config's encoder/decoder)."""

    stride: int
    depth: int
    head_dim: int = 128
    ff_mult: float = 3.0
    chunk_size: int = 128               # patches per attention chunk (no sliding window)
    chunk_midpoint_shift: bool = False
    sliding_window: tuple[int, int] | None = None   # latents before / after
    variable_stride: bool = False
    conv_mapping: bool = False
    mapping_bias: bool = True
    mask_noise: float = 0.0
    sinusoidal_blocks: int = 0


class _ResamplingStage(nn.Module):
    """What the encoder and decoder stages share: the mapping conv, the learned tokens and the
    transformer that mixes every latent's sub-chunk of stride + 1 tokens."""

    def __init__(self, in_channels: int, out_channels: int, token_dim: int, learned_tokens: int,
                 options: StageOptions):  # fmt: skip
        super().__init__()
        self.stride = options.stride
        self.sub_chunk = options.stride + 1
        self.chunk_size = options.chunk_size
        self.chunk_midpoint_shift = options.chunk_midpoint_shift
        self.mask_noise = options.mask_noise
        if options.sliding_window is None:
            # Attention chunks in tokens: chunk_size patches plus one learned/latent token per stride.
            self.window_tokens = None
            self.chunk_tokens = options.chunk_size + options.chunk_size // options.stride
        else:
            self.window_tokens = tuple(w * self.sub_chunk for w in options.sliding_window)
            self.chunk_tokens = None
        if in_channels == out_channels:
            self.mapping = nn.Identity()
        else:
            kernel = 3 if options.conv_mapping else 1
            self.mapping = WNConv1d(in_channels, out_channels, kernel, padding="same",
                                    bias=options.mapping_bias)  # fmt: skip
        self.new_tokens = nn.Parameter(torch.zeros(1, 1 if options.variable_stride else learned_tokens,
                                                   token_dim))  # fmt: skip
        # The last `sinusoidal_blocks - 1` blocks use sin(pi x) (strict <, as the reference).
        self.transformers = nn.ModuleList(
            SAMEBlock(token_dim, options.head_dim, ff_mult=options.ff_mult,
                      sinusoidal=options.depth - i < options.sinusoidal_blocks)
            for i in range(options.depth)
        )  # fmt: skip

    def _learned_tokens(self, groups: int, count: int, noise: bool,
                        generator: torch.Generator | None) -> Tensor:  # fmt: skip
        """The learned tokens for `groups` sub-chunks: Tensor[groups, count, d], plus
        mask_noise * N(0, 1) when noise is on (the reference adds it in eval() too)."""
        tokens = self.new_tokens.expand(groups, count, -1)
        if noise and self.mask_noise > 0:
            draw = torch.randn(tokens.shape, generator=generator, dtype=tokens.dtype, device=tokens.device)
            tokens = tokens + draw * self.mask_noise
        return tokens

    def _mix(self, tokens: Tensor) -> Tensor:
        """Run the transformer over Tensor[B, N, d] (N a whole number of chunks) -> same shape."""
        if self.window_tokens is not None:
            for layer in self.transformers:
                tokens = layer(tokens, sliding_window=self.window_tokens)
            return tokens
        if not self.chunk_midpoint_shift:
            return self._in_chunks(self.transformers, tokens)
        split, shift = len(self.transformers) // 2, self.chunk_tokens // 2
        tokens = self._in_chunks(self.transformers[:split], tokens)
        # Shift the chunk grid by half a chunk; the edges repeat the first and last tokens.
        tokens = torch.cat([tokens[:, :shift], tokens, tokens[:, -shift:]], dim=1)
        tokens = self._in_chunks(self.transformers[split:], tokens)
        return tokens[:, shift:-shift]

    def _in_chunks(self, layers: Sequence[nn.Module], tokens: Tensor) -> Tensor:
        """Each chunk of chunk_tokens attends only within itself: chunks become batch rows."""
        batch, length, dim = tokens.shape
        tokens = tokens.reshape(batch * (length // self.chunk_tokens), self.chunk_tokens, dim)
        for layer in layers:
            tokens = layer(tokens)
        return tokens.reshape(batch, length, dim)


class SAMEDownsample(_ResamplingStage):
    """Encoder stage: Tensor[B, C_in, T] -> Tensor[B, C_out, ceil(T / stride)] (padded first to
    a multiple of the chunk, so SAME-S returns an even count). Each latent is the learned token
    appended after its `stride` input tokens."""

    def __init__(self, in_channels: int, out_channels: int, options: StageOptions):
        super().__init__(in_channels, out_channels, out_channels, 1, options)
        self.pad_multiple = options.chunk_size if self.window_tokens is None else options.stride

    def forward(self, x: Tensor, noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
        # Pad before the mapping, so padded frames are mapped silence, not zeros in token space.
        x = self.mapping(pad_to_multiple(x, self.pad_multiple, dim=-1))
        batch, dim, length = x.shape
        groups = x.transpose(1, 2).reshape(batch * (length // self.stride), self.stride, dim)
        tokens = torch.cat([groups, self._learned_tokens(groups.shape[0], 1, noise, generator)], dim=1)
        tokens = self._mix(tokens.reshape(batch, -1, dim))
        latents = tokens.reshape(-1, self.sub_chunk, dim)[:, -1]         # (b n) d
        return latents.reshape(batch, -1, dim).transpose(1, 2)


class SAMEUpsample(_ResamplingStage):
    """Decoder stage: Tensor[B, C_in, L] -> Tensor[B, C_out, stride * L'] with L' = L rounded up
    to whole chunks (SAME-S: even). Each latent token leads `stride` learned tokens, which become
    the output frames."""

    def __init__(self, in_channels: int, out_channels: int, options: StageOptions):
        super().__init__(in_channels, out_channels, in_channels, options.stride, options)
        self.pad_multiple = options.chunk_size // options.stride if self.window_tokens is None else 1

    def forward(self, x: Tensor, noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
        x = pad_to_multiple(x, self.pad_multiple, dim=-1)  # zeros in token space
        batch, dim, length = x.shape
        latents = x.transpose(1, 2).reshape(batch * length, 1, dim)
        tokens = torch.cat([latents, self._learned_tokens(batch * length, self.stride, noise, generator)],
                           dim=1)  # fmt: skip
        tokens = self._mix(tokens.reshape(batch, -1, dim))
        frames = tokens.reshape(batch, length, self.sub_chunk, dim)[:, :, 1:]
        return self.mapping(frames.reshape(batch, length * self.stride, dim).transpose(1, 2))


class Transpose(nn.Module):
    """Swap the last two dims (a placeholder that keeps the reference's layer indices)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


class SAMEEncoder(nn.Module):
    """Patches Tensor[B, in_channels, T] -> Tensor[B, latent_dim, ~T / prod(strides)].

    `layers`: one SAMEDownsample per stage, then Transpose, Linear(width, latent_dim), Transpose.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], latent_dim: int,
                 stages: Sequence[StageOptions]):  # fmt: skip
        super().__init__()
        dims = [in_channels, *widths]
        blocks = [SAMEDownsample(dims[i], dims[i + 1], stages[i]) for i in range(len(stages))]
        self.layers = nn.ModuleList([*blocks, Transpose(), nn.Linear(dims[-1], latent_dim), Transpose()])

    def forward(self, x: Tensor, noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, noise, generator) if isinstance(layer, _ResamplingStage) else layer(x)
        return x


class SAMEDecoder(nn.Module):
    """Tensor[B, latent_dim, L] -> patches Tensor[B, out_channels, ~L * prod(strides)].

    `layers`: Transpose, Linear(latent_dim, width), Transpose, then one SAMEUpsample per stage
    (widest first).
    """

    def __init__(self, out_channels: int, widths: Sequence[int], latent_dim: int,
                 stages: Sequence[StageOptions]):  # fmt: skip
        super().__init__()
        dims = [out_channels, *widths]
        blocks = [SAMEUpsample(dims[i], dims[i - 1], stages[i - 1]) for i in range(len(stages), 0, -1)]
        self.layers = nn.ModuleList([Transpose(), nn.Linear(latent_dim, dims[-1]), Transpose(), *blocks])

    def forward(self, x: Tensor, noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, noise, generator) if isinstance(layer, _ResamplingStage) else layer(x)
        return x


# --------------------------------------------------------------------------------------------
# The autoencoder
# --------------------------------------------------------------------------------------------


def _window_starts(total: int, window: int, hop: int) -> list[int]:
    """The reference's chunk starts: every `hop`, plus a last window anchored to the end."""
    starts = list(range(0, total - window + 1, hop))
    if starts[-1] != total - window:
        starts.append(total - window)
    return starts


class SAMEAutoencoder(nn.Module):
    """Audio Tensor[B, io_channels, T] <-> latents Tensor[B, latent_dim, L], L ~ T / 4096.

    Attributes: sample_rate, downsampling_ratio, io_channels, in_channels, out_channels,
    latent_dim, scale (always 1.0 for SAME), soft_clip, iterate_batch, chunked_by_default, noise.

    Args:
        pretransform, encoder, decoder, bottleneck: the built parts.
        soft_clip: tanh on the decoded audio.
        iterate_batch: run unchunked encode/decode one batch item at a time (the reference's
            order of noise draws for that mode; chunked windows always take the whole batch).
        chunked_by_default: encode/decode in overlapping chunks when `chunked` is not given.
        noise: add the reference's decode noise (bottleneck and learned tokens) when a call
            does not say; False gives a deterministic decode.
    """

    def __init__(self, pretransform: PatchedPretransform, encoder: SAMEEncoder, decoder: SAMEDecoder,
                 bottleneck: SoftNormBottleneck, *, latent_dim: int, downsampling_ratio: int,
                 sample_rate: int, io_channels: int = 2, soft_clip: bool = False,
                 iterate_batch: bool = False, chunked_by_default: bool = False,
                 noise: bool = True):  # fmt: skip
        super().__init__()
        self.pretransform = pretransform
        self.encoder = encoder
        self.decoder = decoder
        self.bottleneck = bottleneck
        self.latent_dim = latent_dim
        self.downsampling_ratio = downsampling_ratio
        self.sample_rate = sample_rate
        self.io_channels = self.in_channels = self.out_channels = io_channels
        self.scale = 1.0
        self.soft_clip = soft_clip
        self.iterate_batch = iterate_batch
        self.chunked_by_default = chunked_by_default
        self.noise = noise

    # -- helpers -------------------------------------------------------------------------

    def _parameter(self) -> Tensor:
        return self.bottleneck.scaling_factor

    @staticmethod
    def _run(run, x: Tensor, per_item: bool) -> Tensor:
        if not per_item:
            return run(x)
        return torch.cat([run(x[i : i + 1]) for i in range(x.shape[0])])

    def _encode_whole(self, audio: Tensor, per_item: bool) -> Tensor:
        patches = self._run(self.pretransform.encode, audio, per_item)
        # Released encoders have mask_noise 0; a configured one draws as the reference does.
        encoded = self._run(lambda x: self.encoder(x, self.noise), patches, per_item)
        return self.bottleneck.encode(encoded)

    def _decode_whole(self, latents: Tensor, noise: bool, generator: torch.Generator | None,
                      per_item: bool) -> Tensor:  # fmt: skip
        # Every bottleneck draw comes before the decoder's token draws (per item too).
        z = self._run(lambda x: self.bottleneck.decode(x, noise, generator), latents, per_item)
        patches = self._run(lambda x: self.decoder(x, noise, generator), z, per_item)
        audio = self._run(self.pretransform.decode, patches, per_item)
        return torch.tanh(audio) if self.soft_clip else audio

    # -- public API ------------------------------------------------------------------------

    def encode(self, audio: Tensor, chunked: bool | None = None, chunk_size: int = CHUNK_SIZE,
               overlap: int = CHUNK_OVERLAP) -> Tensor:  # fmt: skip
        """Audio Tensor[B, io_channels, T] -> latents Tensor[B, latent_dim, L].

        Unchunked, L = T / 4096 rounded up to whole attention chunks (SAME-S: even). Chunked
        (the reference's `encode_audio`; only when T >= chunk_size latents): windows of
        chunk_size latents every chunk_size - overlap, the last one anchored at the end,
        overlap // 2 latents dropped at inner edges; L = T // 4096.
        """
        check_autoencoder_input(audio, self.io_channels, 1, self._parameter().device, "audio")
        x = audio.to(self._parameter().dtype)
        chunked = self.chunked_by_default if chunked is None else chunked
        ratio = self.downsampling_ratio
        if not chunked or x.shape[-1] < chunk_size * ratio:
            return self._encode_whole(x, self.iterate_batch).to(audio.dtype)
        _check_chunking(chunk_size, overlap)
        total_samples, window = x.shape[-1], chunk_size * ratio
        total_latents, margin = total_samples // ratio, overlap // 2
        starts = _window_starts(total_samples, window, (chunk_size - overlap) * ratio)
        out = None
        for i, start in enumerate(starts):
            # Windows run on the whole batch, iterate_batch or not (as the reference).
            latents = self._encode_whole(x[..., start : start + window], per_item=False)
            if out is None:
                out = latents.new_zeros(*latents.shape[:-1], total_latents)
            last = i == len(starts) - 1
            out_start = total_latents - chunk_size if last else start // ratio
            keep_from, keep_to = (0 if i == 0 else margin), (chunk_size if last else chunk_size - margin)
            out[..., out_start + keep_from : out_start + keep_to] = latents[..., keep_from:keep_to]
        return out.to(audio.dtype)

    def decode(self, latents: Tensor, chunked: bool | None = None, chunk_size: int = CHUNK_SIZE,
               overlap: int = CHUNK_OVERLAP, noise: bool | None = None,
               generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """Latents Tensor[B, latent_dim, L] -> audio Tensor[B, io_channels, 4096 L'].

        Unchunked, L' = L rounded up to whole attention chunks (SAME-S: even). Chunked (the
        reference's `decode_audio`; only when L >= chunk_size): windows as in `encode`, each
        decoded in turn (bottleneck noise, then token noise, per window), L' = L; memory is
        bounded by chunk_size. noise: None uses the `noise` attribute; draws come from
        `generator`, or the global RNG as in the reference.
        """
        check_autoencoder_input(latents, self.latent_dim, 1, self._parameter().device, "latents")
        z = latents.to(self._parameter().dtype)
        noise = self.noise if noise is None else noise
        chunked = self.chunked_by_default if chunked is None else chunked
        if not chunked or z.shape[-1] < chunk_size:
            return self._decode_whole(z, noise, generator, self.iterate_batch).to(latents.dtype)
        _check_chunking(chunk_size, overlap)
        ratio, total_latents = self.downsampling_ratio, z.shape[-1]
        window, margin = chunk_size * ratio, (overlap // 2) * ratio
        starts = _window_starts(total_latents, chunk_size, chunk_size - overlap)
        out = None
        for i, start in enumerate(starts):
            audio = self._decode_whole(z[..., start : start + chunk_size], noise, generator, per_item=False)
            if out is None:
                out = audio.new_zeros(*audio.shape[:-1], total_latents * ratio)
            last = i == len(starts) - 1
            out_start = (total_latents - chunk_size) * ratio if last else start * ratio
            keep_from, keep_to = (0 if i == 0 else margin), (window if last else window - margin)
            out[..., out_start + keep_from : out_start + keep_to] = audio[..., keep_from:keep_to]
        return out.to(latents.dtype)


def _check_chunking(chunk_size: int, overlap: int) -> None:
    if chunk_size < 1 or overlap < 0 or overlap >= chunk_size:
        raise InputError(f"chunk_size={chunk_size}, overlap={overlap}: need chunk_size >= 1 and "
                         "0 <= overlap < chunk_size")  # fmt: skip


def autoencoder_state_dict(checkpoint: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The SAME keys of a checkpoint: those under `pretransform.model.` of a full SA3 checkpoint,
    or all of an AE-only SAME repo's (which have no prefix)."""
    prefix = "pretransform.model."
    if any(key.startswith(prefix) for key in checkpoint):
        return {key[len(prefix) :]: value for key, value in checkpoint.items() if key.startswith(prefix)}
    return dict(checkpoint)


# --------------------------------------------------------------------------------------------
# Building from a stable-audio-3 config
# --------------------------------------------------------------------------------------------

AUTOENCODER_KEYS = frozenset({"type", "pretransform", "encoder", "decoder", "bottleneck",
                              "latent_dim", "downsampling_ratio", "io_channels", "in_channels",
                              "out_channels"})  # fmt: skip
PRETRANSFORM_SECTION_KEYS = frozenset({"type", "config", "chunked", "iterate_batch", "scale"})
PATCHED_KEYS = frozenset({"channels", "patch_size", "oversampling", "postfilter_channels"})
ENCODER_SECTION_KEYS = frozenset({"type", "config", "requires_grad"})
DECODER_SECTION_KEYS = frozenset({"type", "config", "requires_grad", "soft_clip"})
BOTTLENECK_SECTION_KEYS = frozenset({"type", "config"})
SOFTNORM_KEYS = frozenset({"dim", "noise_augment_dim", "noise_regularize", "auto_scale", "freeze"})

# Keys of the reference's SAMEEncoder/SAMEDecoder and of the resampling block they pass through.
_STAGE_KEYS = frozenset({
    "channels", "latent_dim", "c_mults", "strides", "transformer_depths", "sliding_window",
    "checkpointing", "conformer", "layer_scale", "causal", "differential", "variable_stride",
    "mask_noise", "conv_mapping", "freeze_backbone", "chunk_size", "chunk_midpoint_shift",
    "dim_heads", "feat_scale", "ff_mult", "mapping_bias", "cross_attn", "dyt",
})
SAME_ENCODER_KEYS = _STAGE_KEYS | {"in_channels"}
SAME_DECODER_KEYS = _STAGE_KEYS | {"out_channels", "sinusoidal_blocks"}
# Accepted only at the value the released models use; the others change the architecture.
_ONLY_VALUE = {"conformer": False, "layer_scale": False, "feat_scale": False, "cross_attn": False,
               "differential": True, "dyt": True}  # fmt: skip
# The reference's defaults (SAMEEncoder/SAMEDecoder and TransformerResamplingBlock).
_DEFAULTS = {"channels": 128, "latent_dim": 32, "c_mults": [1, 2, 4, 8], "strides": [2, 4, 8, 8],
             "transformer_depths": [3, 3, 3, 3], "sliding_window": None, "variable_stride": False,
             "mask_noise": 0.0, "conv_mapping": False, "chunk_size": 128,
             "chunk_midpoint_shift": False, "dim_heads": 128, "ff_mult": 3, "mapping_bias": True}  # fmt: skip


def _section(section: dict, allowed: frozenset[str], type_name: str, where: str) -> dict:
    check_keys(section, allowed, where)
    kind = require(section, "type", where)
    if kind != type_name:
        raise ConfigError(f"{where} has type {kind!r}; a SAME autoencoder needs {type_name!r}")
    config = section.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"{where} 'config' must be a JSON object")
    return config


def _stage_options(config: dict, where: str,
                   sinusoidal_blocks: Sequence[int]) -> tuple[list[int], list[StageOptions]]:  # fmt: skip
    """Widths and per-stage options (encoder order) from a SAME encoder/decoder config."""
    for key, value in _ONLY_VALUE.items():
        if key in config and config[key] != value:
            raise ConfigError(f"{where}: {key}={config[key]!r} is not supported (SAME models use "
                              f"{key}={value!r}); remove it or set it to {value!r}")  # fmt: skip
    c = {**_DEFAULTS, **config}
    c_mults, strides, depths = c["c_mults"], c["strides"], c["transformer_depths"]
    lists = {"c_mults": c_mults, "strides": strides, "transformer_depths": depths,
             "sinusoidal_blocks": sinusoidal_blocks}  # fmt: skip
    for name, value in lists.items():
        # Like the reference, entries beyond the number of stages are ignored.
        if not isinstance(value, (list, tuple)) or len(value) < len(c_mults) or not value:
            raise ConfigError(f"{where}: {name} must be a list with an entry for each of the "
                              f"{len(c_mults)} stage(s) (c_mults), got {value!r}")  # fmt: skip
    window = c["sliding_window"]
    if window is not None and (not isinstance(window, (list, tuple)) or len(window) != 2):
        raise ConfigError(f"{where}: sliding_window must be [before, after] in latents, got {window!r}")
    widths = [int(m) * int(c["channels"]) for m in c_mults]
    stages = []
    for width, stride, depth, sin_blocks in zip(widths, strides, depths, sinusoidal_blocks):
        if depth < 1:
            raise ConfigError(f"{where}: transformer_depths must be >= 1, got {depths}")
        head_dim = min(int(c["dim_heads"]), width)
        if width % head_dim:
            raise ConfigError(f"{where}: width {width} (channels x c_mult) is not a multiple of "
                              f"dim_heads {head_dim}")  # fmt: skip
        options = StageOptions(
            stride=int(stride), depth=int(depth), head_dim=head_dim, ff_mult=float(c["ff_mult"]),
            chunk_size=int(c["chunk_size"]), chunk_midpoint_shift=bool(c["chunk_midpoint_shift"]),
            sliding_window=None if window is None else (int(window[0]), int(window[1])),
            variable_stride=bool(c["variable_stride"]), conv_mapping=bool(c["conv_mapping"]),
            mapping_bias=bool(c["mapping_bias"]), mask_noise=float(c["mask_noise"]),
            sinusoidal_blocks=int(sin_blocks),
        )
        if window is None:
            chunk_tokens = options.chunk_size + options.chunk_size // options.stride
            if options.chunk_size % options.stride:
                raise ConfigError(f"{where}: chunk_size {options.chunk_size} must be a multiple of "
                                  f"the stride {options.stride}")  # fmt: skip
            if options.chunk_midpoint_shift and chunk_tokens % 2:
                raise ConfigError(f"{where}: chunk_midpoint_shift needs an even chunk of tokens; "
                                  f"chunk_size {options.chunk_size} with stride {options.stride} "
                                  f"gives {chunk_tokens}")  # fmt: skip
        stages.append(options)
    return widths, stages


def build_same_autoencoder(config: dict, sample_rate: int, *, chunked: bool = False,
                           iterate_batch: bool = False) -> SAMEAutoencoder:  # fmt: skip
    """Build SAME from the reference's autoencoder dict: `model` of an AE-only SAME repo's
    model_config.json, or `model.pretransform.config` of a full SA3 one:
    {"type": "same"?, "pretransform": {"type": "patched", ...}, "encoder": {"type": "same", ...},
    "decoder": {"type": "same", "soft_clip"?, ...}, "bottleneck": {"type": "softnorm", ...},
    "latent_dim", "downsampling_ratio", "io_channels"}.

    chunked / iterate_batch: the enclosing pretransform section's values. The model is returned
    in eval mode with gradients off, as the reference's pretransform is.
    """
    where = "SAME autoencoder config"
    check_keys(config, AUTOENCODER_KEYS, where)
    if config.get("type", "same") != "same":
        raise ConfigError(f"{where} has type {config['type']!r}; expected 'same'")
    patched = _section(require(config, "pretransform", where), frozenset({"type", "config"}), "patched",
                       "SAME 'pretransform'")  # fmt: skip
    check_keys(patched, PATCHED_KEYS, "SAME 'pretransform' config")
    if patched.get("oversampling", 1) != 1 or patched.get("postfilter_channels", 0) != 0:
        raise ConfigError("SAME 'pretransform' config: only oversampling 1 and postfilter_channels 0 "
                          "are supported (the reference's postfilter does not build)")  # fmt: skip
    channels = int(require(patched, "channels", "SAME 'pretransform' config"))
    patch_size = int(require(patched, "patch_size", "SAME 'pretransform' config"))

    encoder_config = _section(require(config, "encoder", where), ENCODER_SECTION_KEYS, "same",
                              "SAME 'encoder'")  # fmt: skip
    check_keys(encoder_config, SAME_ENCODER_KEYS, "SAME 'encoder' config")
    decoder_section = require(config, "decoder", where)
    decoder_config = _section(decoder_section, DECODER_SECTION_KEYS, "same", "SAME 'decoder'")
    check_keys(decoder_config, SAME_DECODER_KEYS, "SAME 'decoder' config")
    bottleneck_config = _section(require(config, "bottleneck", where), BOTTLENECK_SECTION_KEYS, "softnorm",
                                 "SAME 'bottleneck'")  # fmt: skip
    check_keys(bottleneck_config, SOFTNORM_KEYS, "SAME 'bottleneck' config")
    if bottleneck_config.get("noise_augment_dim", 0) != 0:
        raise ConfigError("SAME 'bottleneck' config: noise_augment_dim > 0 is not supported "
                          "(SAME models use 0)")  # fmt: skip

    latent_dim = int(require(config, "latent_dim", where))
    io_channels = int(require(config, "io_channels", where))
    ratio = int(require(config, "downsampling_ratio", where))
    stage_count = len(encoder_config.get("c_mults", _DEFAULTS["c_mults"]))
    enc_widths, enc_stages = _stage_options(encoder_config, "SAME 'encoder' config", [0] * stage_count)
    stage_count = len(decoder_config.get("c_mults", _DEFAULTS["c_mults"]))
    sinusoidal_blocks = decoder_config.get("sinusoidal_blocks", [0] * stage_count)
    dec_widths, dec_stages = _stage_options(decoder_config, "SAME 'decoder' config", sinusoidal_blocks)
    in_channels = int(encoder_config.get("in_channels", 2))
    out_channels = int(decoder_config.get("out_channels", 2))
    default_dim = _DEFAULTS["latent_dim"]
    expected = {
        "pretransform channels": (channels, io_channels),
        "encoder in_channels (io_channels x patch_size)": (in_channels, channels * patch_size),
        "decoder out_channels (io_channels x patch_size)": (out_channels, channels * patch_size),
        "encoder latent_dim": (int(encoder_config.get("latent_dim", default_dim)), latent_dim),
        "decoder latent_dim": (int(decoder_config.get("latent_dim", default_dim)), latent_dim),
        "bottleneck dim": (int(require(bottleneck_config, "dim", "SAME 'bottleneck' config")),
                           latent_dim),
        "encoder ratio (patch_size x strides)": (patch_size * math.prod(s.stride for s in enc_stages),
                                                 ratio),
        "decoder ratio (patch_size x strides)": (patch_size * math.prod(s.stride for s in dec_stages),
                                                 ratio),
    }  # fmt: skip
    for key in ("in_channels", "out_channels"):
        if key in config:
            expected[f"top-level {key}"] = (int(config[key]), io_channels)
    wrong = [f"{name} is {got}, expected {want}" for name, (got, want) in expected.items() if got != want]
    if wrong:
        raise ConfigError(f"{where} is inconsistent: " + "; ".join(wrong))

    model = SAMEAutoencoder(
        PatchedPretransform(channels, patch_size),
        SAMEEncoder(in_channels, enc_widths, latent_dim, enc_stages),
        SAMEDecoder(out_channels, dec_widths, latent_dim, dec_stages),
        SoftNormBottleneck(latent_dim,
                           noise_regularize=bool(bottleneck_config.get("noise_regularize", False)),
                           auto_scale=bool(bottleneck_config.get("auto_scale", False))),
        latent_dim=latent_dim, downsampling_ratio=ratio, sample_rate=sample_rate, io_channels=io_channels,
        soft_clip=bool(decoder_section.get("soft_clip", False)), iterate_batch=iterate_batch,
        chunked_by_default=chunked,
    )  # fmt: skip
    return model.eval().requires_grad_(False)


def build_same_pretransform(pretransform_config: dict, sample_rate: int) -> SAMEAutoencoder:
    """Build SAME from a full SA3 config's `model.pretransform` section:
    {"type": "autoencoder", "config": {...SAME...}, "chunked"?, "iterate_batch"?}. A "scale" is
    accepted and, as in the reference, not applied."""
    where = "pretransform config"
    check_keys(pretransform_config, PRETRANSFORM_SECTION_KEYS, where)
    kind = require(pretransform_config, "type", where)
    if kind != "autoencoder":
        raise ConfigError(f"{where} has type {kind!r}; only 'autoencoder' is supported")
    return build_same_autoencoder(
        require(pretransform_config, "config", where), sample_rate,
        chunked=bool(pretransform_config.get("chunked", False)),
        iterate_batch=bool(pretransform_config.get("iterate_batch", False)),
    )  # fmt: skip


def is_same_config(autoencoder_config: dict) -> bool:
    """Whether an autoencoder dict (see build_same_autoencoder) describes SAME."""
    encoder = autoencoder_config.get("encoder")
    return autoencoder_config.get("type") == "same" or (
        isinstance(encoder, dict) and encoder.get("type") == "same")
