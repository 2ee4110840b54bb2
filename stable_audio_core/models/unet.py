"""The 1-D U-Net of Stable Audio 1.0 (stable-audio-tools' model type "adp_cfg_1d").

The paper's backbone (Evans et al. 2024, "Fast Timing-Conditioned Latent Audio Diffusion"):
residual conv blocks whose second norm is scaled and shifted by an embedding of the
diffusion time (FiLM, Perez et al. 2018), transformer blocks with self-attention and
cross-attention to the text/timing tokens at each level, strided-conv downsampling,
transposed-conv upsampling and skip connections between matching levels. It is stable-audio-tools'
`UNetCFG1d` (from audio-diffusion-pytorch 0.0.94); module and parameter names reproduce its
state-dict keys, so a checkpoint's `model.model.<key>` loads here as `<key>`.

Classifier-free guidance is not done here (see `sampling/guidance.py`). The unconditional side of
this model is not zeros but a learned table, `fixed_embedding`: `forward(fixed_embedding_mask=...)`
swaps marked context tokens for its rows, which is how both guidance's unconditional half and
training's condition dropout are expressed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import DIFFUSION_OBJECTIVES, check_keys
from ..errors import ConfigError, InputError
from .attention import attention
from .conditioners import LearnedFourierFeatures

TRANSFORMER_NORM_GROUPS = 32       # the transformer's input GroupNorm (fixed in the reference)
TRANSFORMER_NORM_EPS = 1e-6
UNCONDITIONAL_RESCALE = 0.4        # UNetCFG1d's `scale_phi`, applied whenever rescale_cfg is set
INIT_SCALE = 0.5                   # the reference wrapper halves every freshly initialised weight


# --- convolutions padded like the reference ----------------------------------------------------

class PaddedConv1d(nn.Conv1d):
    """nn.Conv1d that zero-pads so the output has ceil(T / stride) frames: kernel - stride frames
    split with the extra one on the left, plus what the last window needs on the right."""

    convolve = staticmethod(F.conv1d)  # the 1-D convolution it runs (acceleration may swap it)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, T] -> Tensor[B, C_out, ceil(T / stride)]."""
        span = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        stride = self.stride[0]
        total = span - stride
        length = x.shape[-1]
        frames = math.ceil((length - span + total) / stride) + 1
        tail = (frames - 1) * stride + span - total - length
        right = total // 2
        left = total - right
        if left == right + tail:  # symmetric: let the convolution pad, saving a padded copy
            return self.convolve(x, self.weight, self.bias, stride, left, self.dilation[0], self.groups)
        return self.convolve(F.pad(x, (left, right + tail)), self.weight, self.bias, stride, 0,
                             self.dilation[0], self.groups)


class TrimmedConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d with its kernel - stride overhanging frames cut (the larger half on
    the left), so kernel 2f / stride f turns T frames into T * f."""

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, T] -> Tensor[B, C_out, T * stride]."""
        out = super().forward(x)
        total = self.kernel_size[0] - self.stride[0]
        right = total // 2
        return out[..., total - right: out.shape[-1] - right]


def downsampler(in_channels: int, out_channels: int, factor: int, kernel_multiplier: int) -> nn.Module:
    return PaddedConv1d(in_channels, out_channels, kernel_size=factor * kernel_multiplier + 1, stride=factor)


def upsampler(in_channels: int, out_channels: int, factor: int, nearest: bool) -> nn.Module:
    if factor == 1:
        return PaddedConv1d(in_channels, out_channels, kernel_size=3)
    if nearest:
        return nn.Sequential(nn.Upsample(scale_factor=factor, mode="nearest"),
                             PaddedConv1d(in_channels, out_channels, kernel_size=3))
    return TrimmedConvTranspose1d(in_channels, out_channels, kernel_size=2 * factor, stride=factor)


# --- residual blocks with FiLM time conditioning ----------------------------------------------

class ScaleShift(nn.Module):
    """The mapping (time + features embedding) -> per-channel (scale, shift): SiLU, Linear."""

    def __init__(self, features: int, channels: int):
        super().__init__()
        self.to_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(features, 2 * channels))

    def forward(self, mapping: Tensor) -> tuple[Tensor, Tensor]:
        """Tensor[B, features] -> (Tensor[B, C, 1], Tensor[B, C, 1])."""
        return self.to_scale_shift(mapping).unsqueeze(-1).chunk(2, dim=1)


class ConvBlock(nn.Module):
    """GroupNorm -> (x * (1 + scale) + shift) -> SiLU -> conv."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int):
        super().__init__()
        self.groupnorm = nn.GroupNorm(num_groups, in_channels)
        self.activation = nn.SiLU()
        self.project = PaddedConv1d(in_channels, out_channels, kernel_size=3)

    def forward(self, x: Tensor, scale_shift: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.groupnorm(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.project(self.activation(x))


class ResnetBlock(nn.Module):
    """x -> conv block -> conv block modulated by the mapping, plus x (1x1 conv when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int, mapping_features: int | None):
        super().__init__()
        self.block1 = ConvBlock(in_channels, out_channels, num_groups)
        self.to_scale_shift = ScaleShift(mapping_features, out_channels) if mapping_features else None
        self.block2 = ConvBlock(out_channels, out_channels, num_groups)
        self.to_out = (PaddedConv1d(in_channels, out_channels, kernel_size=1)
                       if in_channels != out_channels else nn.Identity())

    def forward(self, x: Tensor, mapping: Tensor | None = None) -> Tensor:
        """x: Tensor[B, C_in, T], mapping: Tensor[B, M] -> Tensor[B, C_out, T]."""
        scale_shift = None if self.to_scale_shift is None else self.to_scale_shift(mapping)
        return self.block2(self.block1(x), scale_shift) + self.to_out(x)


class Patcher(nn.Module):
    """Residual block to out_channels / patch_size, then fold `patch_size` frames into channels."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int, mapping_features: int | None):
        super().__init__()
        self.patch_size = patch_size
        self.block = ResnetBlock(in_channels, out_channels // patch_size, 1, mapping_features)

    def forward(self, x: Tensor, mapping: Tensor | None) -> Tensor:
        """Tensor[B, C_in, T] -> Tensor[B, C_out, T / patch_size]."""
        return rearrange(self.block(x, mapping), "b c (t p) -> b (c p) t", p=self.patch_size)


class Unpatcher(nn.Module):
    """Unfold channels into `patch_size` frames, then a residual block to out_channels."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int, mapping_features: int | None):
        super().__init__()
        self.patch_size = patch_size
        self.block = ResnetBlock(in_channels // patch_size, out_channels, 1, mapping_features)

    def forward(self, x: Tensor, mapping: Tensor | None) -> Tensor:
        """Tensor[B, C_in, T] -> Tensor[B, C_out, T * patch_size]."""
        return self.block(rearrange(x, "b (c p) t -> b c (t p)", p=self.patch_size), mapping)


# --- transformer blocks -------------------------------------------------------------------------

class OutputProjection(nn.Module):
    """Holds the attention's output Linear (the reference's key path `<attention>.attention.to_out`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.to_out = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.to_out(x)


class Attention(nn.Module):
    """Multi-head attention with a LayerNorm on the queries' and on the keys' source.

    Self-attention when `context_features` is None (keys come from x through its own norm),
    cross-attention to tokens of width `context_features` otherwise. A context mask multiplies
    keys and values (padded tokens get score 0 and value 0; they are not removed from the softmax),
    as the reference does.
    """

    def __init__(self, features: int, num_heads: int, head_features: int,
                 context_features: int | None = None):
        super().__init__()
        inner = num_heads * head_features
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(features)
        self.norm_context = nn.LayerNorm(context_features or features)
        self.to_q = nn.Linear(features, inner, bias=False)
        self.to_kv = nn.Linear(context_features or features, 2 * inner, bias=False)
        self.attention = OutputProjection(inner, features)

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        """x: Tensor[B, N, features], context: Tensor[B, M, Dc], context_mask: Tensor[B, M]
        -> Tensor[B, N, features]."""
        source = x if context is None else context
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(self.norm_context(source)).chunk(2, dim=-1)
        if context_mask is not None:
            keep = context_mask.to(k.dtype).unsqueeze(-1)
            k, v = k * keep, v * keep
        q, k, v = (rearrange(part, "b n (h d) -> b h n d", h=self.num_heads) for part in (q, k, v))
        out = rearrange(attention(q, k, v), "b h n d -> b n (h d)")
        return self.attention(out)


class TransformerBlock(nn.Module):
    """x += self-attention; x += cross-attention (when there is a context); x += GELU MLP."""

    def __init__(self, features: int, num_heads: int, head_features: int, multiplier: int,
                 context_features: int | None):
        super().__init__()
        self.attention = Attention(features, num_heads, head_features)
        self.cross_attention = None
        if context_features:
            self.cross_attention = Attention(features, num_heads, head_features, context_features)
        self.feed_forward = nn.Sequential(nn.Linear(features, features * multiplier), nn.GELU(),
                                          nn.Linear(features * multiplier, features))

    def forward(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        x = x + self.attention(x)
        if self.cross_attention is not None:
            if context is None:
                raise InputError("this U-Net cross-attends to conditioning tokens: pass cross_attn_cond")
            x = x + self.cross_attention(x, context, context_mask)
        return x + self.feed_forward(x)


class Transformer1d(nn.Module):
    """GroupNorm + 1x1 conv -> tokens -> transformer blocks -> 1x1 conv: Tensor[B, C, T] -> same."""

    def __init__(self, channels: int, num_layers: int, num_heads: int, head_features: int,
                 multiplier: int, context_features: int | None):
        super().__init__()
        self.to_in = nn.Sequential(
            nn.GroupNorm(TRANSFORMER_NORM_GROUPS, channels, eps=TRANSFORMER_NORM_EPS),
            PaddedConv1d(channels, channels, kernel_size=1),
            Rearrange("b c t -> b t c"),
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(channels, num_heads, head_features, multiplier, context_features)
            for _ in range(num_layers)
        )
        self.to_out = nn.Sequential(Rearrange("b t c -> b c t"), PaddedConv1d(channels, channels, kernel_size=1))

    def forward(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        x = self.to_in(x)
        for block in self.blocks:
            x = block(x, context, context_mask)
        return self.to_out(x)


@dataclass(frozen=True)
class AttentionSpec:
    """The transformer settings shared by every level: heads or head width, MLP multiplier, context."""

    heads: int | None
    head_features: int | None
    multiplier: int | None
    context_features: int | None

    def build(self, channels: int, num_layers: int) -> Transformer1d | None:
        if num_layers <= 0:
            return None
        # One of heads / head width is derived from the other when only one is given.
        heads = self.heads if self.heads is not None else channels // self.head_features
        head_features = self.head_features if self.head_features is not None else channels // self.heads
        return Transformer1d(channels, num_layers, heads, head_features, self.multiplier,
                             self.context_features)


# --- U-Net levels ------------------------------------------------------------------------------

class DownBlock(nn.Module):
    """Downsample (strided conv), [concat context channels], residual blocks, transformer.

    Every residual block's and the transformer's output is kept as a skip for the matching UpBlock.
    """

    def __init__(self, in_channels: int, out_channels: int, *, factor: int, kernel_multiplier: int,
                 num_blocks: int, num_groups: int, context_channels: int, mapping_features: int | None,
                 transformer_layers: int, attention_spec: AttentionSpec):
        super().__init__()
        self.downsample = downsampler(in_channels, out_channels, factor, kernel_multiplier)
        self.blocks = nn.ModuleList(
            ResnetBlock(out_channels + (context_channels if i == 0 else 0), out_channels, num_groups,
                        mapping_features)
            for i in range(num_blocks)
        )
        self.transformer = attention_spec.build(out_channels, transformer_layers)

    def forward(self, x: Tensor, mapping: Tensor | None, channels: Tensor | None, context: Tensor | None,
                context_mask: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        x = self.downsample(x)
        if channels is not None:
            x = torch.cat([x, channels], dim=1)
        skips = []
        for block in self.blocks:
            x = block(x, mapping)
            skips.append(x)
        if self.transformer is not None:
            x = self.transformer(x, context, context_mask)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """Residual blocks (each fed one skip, concatenated and scaled), transformer, upsample."""

    def __init__(self, in_channels: int, out_channels: int, *, factor: int, nearest: bool, num_blocks: int,
                 num_groups: int, skip_channels: int, skip_scale: float, mapping_features: int | None,
                 transformer_layers: int, attention_spec: AttentionSpec):
        super().__init__()
        self.skip_scale = skip_scale
        self.blocks = nn.ModuleList(
            ResnetBlock(in_channels + skip_channels, in_channels, num_groups, mapping_features)
            for _ in range(num_blocks)
        )
        self.transformer = attention_spec.build(in_channels, transformer_layers)
        self.upsample = upsampler(in_channels, out_channels, factor, nearest)

    def forward(self, x: Tensor, skips: list[Tensor], mapping: Tensor | None, context: Tensor | None,
                context_mask: Tensor | None) -> Tensor:
        for block in self.blocks:
            x = block(torch.cat([x, skips.pop() * self.skip_scale], dim=1), mapping)
        if self.transformer is not None:
            x = self.transformer(x, context, context_mask)
        return self.upsample(x)


class Bottleneck(nn.Module):
    """Residual block, transformer, residual block at the lowest resolution."""

    def __init__(self, channels: int, *, num_groups: int, mapping_features: int | None,
                 transformer_layers: int, attention_spec: AttentionSpec):
        super().__init__()
        self.pre_block = ResnetBlock(channels, channels, num_groups, mapping_features)
        self.transformer = attention_spec.build(channels, transformer_layers)
        self.post_block = ResnetBlock(channels, channels, num_groups, mapping_features)

    def forward(self, x: Tensor, mapping: Tensor | None, context: Tensor | None,
                context_mask: Tensor | None) -> Tensor:
        x = self.pre_block(x, mapping)
        if self.transformer is not None:
            x = self.transformer(x, context, context_mask)
        return self.post_block(x, mapping)


class LearnedUnconditionalEmbedding(nn.Module):
    """The learned context that stands for "no condition" (`fixed_embedding`): one row per position."""

    def __init__(self, max_length: int, features: int):
        super().__init__()
        self.embedding = nn.Embedding(max_length, features)

    def forward(self, length: int) -> Tensor:
        """-> Tensor[length, features], the first `length` rows."""
        if length > self.embedding.num_embeddings:
            raise InputError(
                f"{length} conditioning tokens exceed this U-Net's context_embedding_max_length of "
                f"{self.embedding.num_embeddings}; shorten the conditioning (e.g. the text tokens)"
            )
        return self.embedding.weight[:length]


def _time_embedding(fourier_dim: int, out_features: int) -> nn.Sequential:
    """t -> [t, sin(2 pi w t), cos(2 pi w t)] with learned w -> Linear -> GELU."""
    return nn.Sequential(
        nn.Sequential(LearnedFourierFeatures(fourier_dim), nn.Linear(fourier_dim + 1, out_features)),
        nn.GELU(),
    )


# --- the U-Net ---------------------------------------------------------------------------------

_REQUIRED_KEYS = ("in_channels", "channels", "multipliers", "factors", "num_blocks", "attentions",
                  "context_embedding_max_length", "context_embedding_features")
_OPTIONAL_KEYS = ("patch_size", "resnet_groups", "use_context_time", "kernel_multiplier_downsample",
                  "use_nearest_upsample", "use_skip_scale", "out_channels", "context_features",
                  "context_features_multiplier", "context_channels", "attention_heads",
                  "attention_features", "attention_multiplier", "use_xattn_time")
# Reference options accepted only at the value that leaves the architecture unchanged.
_ONLY_DEFAULT = {"use_stft": False, "use_stft_context": False}


class UNet1d(nn.Module):
    """Constructor arguments carry the names and defaults of stable-audio-tools' adp_cfg_1d config.

    Args:
        in_channels: latent channels C of x; out_channels (default in_channels) of the output.
        channels: base width; level i has channels * multipliers[i] channels.
        multipliers: widths of the input level and of each level below it (len = levels + 1).
        factors: downsampling factor into each level below the input (len = levels).
        num_blocks: residual blocks per down level (the up level has one more when it has attention).
        attentions: transformer layers of down/up block i (at the width of the level below
            it, channels * multipliers[i + 1]); attentions[-1] is the bottleneck's.
        context_embedding_features: width of the cross-attention tokens.
        context_embedding_max_length: positions of the learned unconditional embedding.
        patch_size: latent frames folded into channels before the first level.
        resnet_groups: GroupNorm groups of the residual blocks.
        use_context_time: FiLM-condition every residual block on the diffusion time.
        context_features: width of a global embedding added to the time mapping (None: none).
        context_features_multiplier: mapping width = channels * this.
        context_channels: channels concatenated at each level (input_concat_cond; at most one level).
        kernel_multiplier_downsample: downsampling kernel = factor * this + 1 (even).
        use_nearest_upsample: nearest-neighbour + conv instead of a transposed conv.
        use_skip_scale: scale skips by 1 / sqrt(2) before concatenating.
        attention_heads / attention_features: heads or head width (the other is derived per level).
        attention_multiplier: transformer MLP width multiplier.
        use_xattn_time: append a time token to the cross-attention context.
        diffusion_objective: stored for the sampler; it does not change the network.
    """

    # The guidance rescale stable-audio-tools applies to this model: UNetCFG1d's scale_phi,
    # used because generate_diffusion_cond always sets rescale_cfg.
    default_cfg_rescale = UNCONDITIONAL_RESCALE

    def __init__(
        self,
        *,
        in_channels: int,
        channels: int,
        multipliers: list[int],
        factors: list[int],
        num_blocks: list[int],
        attentions: list[int],
        context_embedding_features: int,
        context_embedding_max_length: int,
        patch_size: int = 1,
        resnet_groups: int = 8,
        use_context_time: bool = True,
        kernel_multiplier_downsample: int = 2,
        use_nearest_upsample: bool = False,
        use_skip_scale: bool = True,
        out_channels: int | None = None,
        context_features: int | None = None,
        context_features_multiplier: int = 4,
        context_channels: list[int] | None = None,
        attention_heads: int | None = None,
        attention_features: int | None = None,
        attention_multiplier: int | None = None,
        use_xattn_time: bool = False,
        diffusion_objective: str = "v",
    ):
        super().__init__()
        levels = len(multipliers) - 1
        context_channels = list(context_channels or [])
        context_channels += [0] * (levels + 1 - len(context_channels))
        _validate(in_channels, channels, multipliers, factors, num_blocks, attentions, patch_size,
                  resnet_groups, kernel_multiplier_downsample, context_channels, attention_heads,
                  attention_features, attention_multiplier, diffusion_objective)
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_size = patch_size
        self.factors = list(factors)
        self.context_channels = context_channels
        self.context_features = context_features
        self.context_embedding_features = context_embedding_features
        self.use_context_time = use_context_time
        self.use_xattn_time = use_xattn_time
        self.diffusion_objective = diffusion_objective

        mapping = None
        self.to_mapping = None
        if use_context_time or context_features is not None:
            mapping = channels * context_features_multiplier
            self.to_mapping = nn.Sequential(nn.Linear(mapping, mapping), nn.GELU(),
                                            nn.Linear(mapping, mapping), nn.GELU())
        self.to_time = _time_embedding(channels, mapping) if use_context_time else None
        self.to_features = None
        if context_features is not None:
            self.to_features = nn.Sequential(nn.Linear(context_features, mapping), nn.GELU())

        spec = AttentionSpec(attention_heads, attention_features, attention_multiplier,
                             context_embedding_features)
        widths = [channels * m for m in multipliers]
        self.to_in = Patcher(in_channels + context_channels[0], widths[0], patch_size, mapping)
        self.downsamples = nn.ModuleList(
            DownBlock(widths[i], widths[i + 1], factor=factors[i],
                      kernel_multiplier=kernel_multiplier_downsample, num_blocks=num_blocks[i],
                      num_groups=resnet_groups, context_channels=context_channels[i + 1],
                      mapping_features=mapping, transformer_layers=attentions[i], attention_spec=spec)
            for i in range(levels)
        )
        self.bottleneck = Bottleneck(widths[-1], num_groups=resnet_groups, mapping_features=mapping,
                                     transformer_layers=attentions[-1], attention_spec=spec)
        self.upsamples = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], factor=factors[i], nearest=use_nearest_upsample,
                    num_blocks=num_blocks[i] + (1 if attentions[i] else 0), num_groups=resnet_groups,
                    skip_channels=widths[i + 1], skip_scale=2 ** -0.5 if use_skip_scale else 1.0,
                    mapping_features=mapping, transformer_layers=attentions[i], attention_spec=spec)
            for i in reversed(range(levels))
        )
        self.to_out = Unpatcher(widths[0], out_channels, patch_size, mapping)
        self.to_time_embedding = None
        if use_xattn_time:
            self.to_time_embedding = _time_embedding(channels, context_embedding_features)
        self.fixed_embedding = LearnedUnconditionalEmbedding(
            context_embedding_max_length + (1 if use_xattn_time else 0), context_embedding_features
        )
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.mul_(INIT_SCALE)

    @classmethod
    def from_config(cls, diffusion_config: dict, objective: str = "v") -> "UNet1d":
        """Build from stable-audio-tools' `model.diffusion.config` (type adp_cfg_1d) and objective."""
        where = "model.diffusion.config"
        check_keys(diffusion_config, set(_REQUIRED_KEYS) | set(_OPTIONAL_KEYS) | set(_ONLY_DEFAULT), where)
        missing = [key for key in _REQUIRED_KEYS if key not in diffusion_config]
        if missing:
            raise ConfigError(f"{where} (adp_cfg_1d) is missing the required key(s) {missing}")
        config = dict(diffusion_config)
        for key, default in _ONLY_DEFAULT.items():
            if config.pop(key, default) != default:
                raise ConfigError(
                    f"{where}: {key}={diffusion_config[key]!r} is not supported by stable_audio_core "
                    f"(supported: {default!r}); remove the key or set it to {default!r}"
                )
        return cls(**config, diffusion_objective=objective)

    # --- properties the pipeline reads ----------------------------------------------------------
    @property
    def required_length_multiple(self) -> int:
        """Latent lengths must be a multiple of this: the patch size times every downsampling factor."""
        return self.patch_size * math.prod(self.factors)

    # --- forward ------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cross_attn_cond: Tensor | None = None,
        cross_attn_mask: Tensor | None = None,
        global_embed: Tensor | None = None,
        input_concat_cond: Tensor | None = None,
        prepend_cond: Tensor | None = None,
        prepend_cond_mask: Tensor | None = None,
        fixed_embedding_mask: Tensor | None = None,
    ) -> Tensor:
        """One network evaluation (no guidance).

        Args:
            x: Tensor[B, in_channels, L] noisy latents, L a multiple of required_length_multiple.
            t: Tensor[B] diffusion time (a 0-d tensor is broadcast over the batch).
            cross_attn_cond: Tensor[B, N, context_embedding_features] text/timing tokens.
            cross_attn_mask: Tensor[B, N], 0/False at padded tokens (their keys and values are zeroed).
            global_embed: Tensor[B, context_features]; ignored when the config has no
                context_features, as the reference ignores it.
            input_concat_cond: Tensor[B, c, L'] for the level whose context_channels is c, at that
                level's length; ignored when the config has no context_channels, as in the reference.
            prepend_cond, prepend_cond_mask: ignored (the reference's adp_cfg_1d drops them).
            fixed_embedding_mask: Tensor[B, N] bool, True where a token is replaced by the learned
                unconditional embedding's row (guidance's unconditional half: all True; a negative
                prompt: True at its padded tokens). With use_xattn_time, an item whose tokens are
                all replaced gets the unconditional row in place of the time token too.

        Returns:
            Tensor[B, out_channels, L].
        """
        x = self._check_latents(x)
        batch = x.shape[0]
        t = t.expand(batch) if t.dim() == 0 else t
        if t.shape != (batch,):
            raise InputError(f"t must have shape [{batch}] (one time per batch item), got {tuple(t.shape)}")

        context, context_mask = self._context(cross_attn_cond, cross_attn_mask, fixed_embedding_mask, t)
        mapping = self._mapping(t, global_embed)
        concat = self._concat_channels(input_concat_cond, x.shape[-1])

        if concat[0] is not None:
            x = torch.cat([x, concat[0]], dim=1)
        x = self.to_in(x, mapping)
        skips = [x]
        for level, down in enumerate(self.downsamples, start=1):
            x, level_skips = down(x, mapping, concat[level], context, context_mask)
            skips.append(level_skips)
        x = self.bottleneck(x, mapping, context, context_mask)
        for up in self.upsamples:
            x = up(x, skips.pop(), mapping, context, context_mask)
        return self.to_out(x + skips.pop(), mapping)

    def _check_latents(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise InputError(f"x must have shape [B, {self.in_channels}, L], got {tuple(x.shape)}")
        multiple = self.required_length_multiple
        if x.shape[2] % multiple:
            raise InputError(
                f"latent length {x.shape[2]} is not a multiple of {multiple} (patch size "
                f"{self.patch_size} x downsampling factors {self.factors}); pad or crop the latents"
            )
        return x

    def _context(self, tokens: Tensor | None, mask: Tensor | None, fixed: Tensor | None,
                 t: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Cross-attention tokens [+ time token], unconditional rows swapped in where `fixed` says."""
        if tokens is None:
            return None, None
        width = self.context_embedding_features
        if tokens.dim() != 3 or tokens.shape[-1] != width or tokens.shape[0] != t.shape[0]:
            raise InputError(
                f"cross_attn_cond must have shape [{t.shape[0]}, N, {width}], got {tuple(tokens.shape)}"
            )
        batch, length = tokens.shape[:2]
        for name, value in (("cross_attn_mask", mask), ("fixed_embedding_mask", fixed)):
            if value is not None and value.shape != (batch, length):
                raise InputError(f"{name} must have shape [{batch}, {length}], got {tuple(value.shape)}")
        if self.to_time_embedding is not None:
            tokens = torch.cat([tokens, self.to_time_embedding(t).unsqueeze(1)], dim=1)
            if mask is not None:
                mask = torch.cat([mask.to(tokens.dtype), mask.new_ones(batch, 1, dtype=tokens.dtype)], dim=1)
            if fixed is not None:
                fixed = torch.cat([fixed, fixed.all(dim=1, keepdim=True)], dim=1)
        if fixed is not None:
            unconditional = self.fixed_embedding(tokens.shape[1]).to(tokens.dtype)
            tokens = torch.where(fixed.bool().unsqueeze(-1), unconditional, tokens)
        else:
            self.fixed_embedding(tokens.shape[1])  # the same length check either way
        return tokens, mask

    def _mapping(self, t: Tensor, global_embed: Tensor | None) -> Tensor | None:
        """Time embedding + global features -> the FiLM mapping Tensor[B, M] (None without either)."""
        parts = []
        if self.to_time is not None:
            parts.append(self.to_time(t))
        if self.to_features is not None:
            if global_embed is None or global_embed.shape != (t.shape[0], self.context_features):
                shape = None if global_embed is None else tuple(global_embed.shape)
                raise InputError(
                    f"this U-Net needs global_embed of shape [{t.shape[0]}, {self.context_features}] "
                    f"(model.diffusion.global_cond_ids), got {shape}"
                )
            parts.append(self.to_features(global_embed))
        if not parts:
            return None
        return self.to_mapping(parts[0] if len(parts) == 1 else parts[0] + parts[1])

    def _concat_channels(self, cond: Tensor | None, length: int) -> list[Tensor | None]:
        """input_concat_cond placed at the level that takes context channels (None elsewhere)."""
        per_level: list[Tensor | None] = [None] * len(self.context_channels)
        for level, count in enumerate(self.context_channels):
            if count == 0:
                continue
            # Level 0 is concatenated before patching; level k after the k-th downsampling.
            below = self.patch_size * math.prod(self.factors[:level])
            level_length = length if level == 0 else length // below
            if cond is None or cond.dim() != 3 or cond.shape[1:] != (count, level_length):
                shape = None if cond is None else tuple(cond.shape)
                raise InputError(
                    f"this U-Net needs input_concat_cond of shape [B, {count}, {level_length}] "
                    f"(model.diffusion.input_concat_ids), got {shape}"
                )
            per_level[level] = cond
        return per_level


def _validate(in_channels, channels, multipliers, factors, num_blocks, attentions, patch_size, resnet_groups,
              kernel_multiplier, context_channels, heads, head_features, multiplier, objective) -> None:
    """Raise ConfigError for configs the reference would reject (or fail on) when run."""
    where = "model.diffusion.config (adp_cfg_1d)"
    levels = len(multipliers) - 1
    if levels < 0 or len(factors) != levels or len(num_blocks) != levels or len(attentions) < levels:
        raise ConfigError(
            f"{where}: factors and num_blocks need len(multipliers) - 1 = {levels} entries and attentions "
            f"at least that many; got {len(factors)}, {len(num_blocks)} and {len(attentions)}"
        )
    if len(attentions) == 0:
        raise ConfigError(f"{where}: attentions needs an entry for the bottleneck")
    if objective not in DIFFUSION_OBJECTIVES:
        raise ConfigError(f"diffusion_objective {objective!r} is not one of {DIFFUSION_OBJECTIVES}")
    if any(f < 1 for f in factors) or patch_size < 1:
        raise ConfigError(f"{where}: factors and patch_size must be at least 1, got {factors}, {patch_size}")
    if kernel_multiplier % 2:
        raise ConfigError(f"{where}: kernel_multiplier_downsample must be even, got {kernel_multiplier}")
    if channels * multipliers[0] % patch_size:
        raise ConfigError(
            f"{where}: channels * multipliers[0] = {channels * multipliers[0]} must be a multiple of "
            f"patch_size {patch_size}"
        )
    widths = [channels * m for m in multipliers]
    # Level k > 0's first residual block also reads that level's context channels.
    bad = [w + (c if k > 0 else 0) for k, (w, c) in enumerate(zip(widths, context_channels))
           if (w + (c if k > 0 else 0)) % resnet_groups]
    if bad:
        raise ConfigError(
            f"{where}: level widths (plus context channels) {bad} are not multiples of resnet_groups "
            f"{resnet_groups}"
        )
    # attentions[i] runs inside down/up block i, at the width below it (widths[i + 1]).
    with_attention = [widths[i + 1] for i in range(levels) if attentions[i] > 0]
    if attentions[-1] > 0:
        with_attention.append(widths[-1])
    if with_attention:
        if multiplier is None or (heads is None and head_features is None):
            raise ConfigError(
                f"{where}: attentions has transformer layers, which need attention_multiplier and "
                f"attention_heads (or attention_features)"
            )
        bad = [w for w in with_attention if w % TRANSFORMER_NORM_GROUPS]
        if bad:
            raise ConfigError(
                f"{where}: levels with attention need widths that are multiples of "
                f"{TRANSFORMER_NORM_GROUPS} (the transformer's GroupNorm); got {bad}"
            )
    if sum(1 for c in context_channels if c > 0) > 1:
        raise ConfigError(
            f"{where}: context_channels {context_channels} asks for channels at several levels, but "
            f"adp_cfg_1d passes one input_concat_cond; keep one nonzero entry"
        )
    if len(context_channels) > levels + 1:
        raise ConfigError(f"{where}: context_channels has more than {levels + 1} entries: {context_channels}")
