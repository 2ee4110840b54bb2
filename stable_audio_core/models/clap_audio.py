"""CLAP's audio tower: HTSAT (Chen et al. 2022, "HTS-AT: A Hierarchical Token-Semantic Audio
Transformer"), a Swin transformer (Liu et al. 2021) over the log-mel spectrogram, and a projection
into the joint audio-text space. Inference only.

Matches Hugging Face's `ClapAudioModel` + `audio_projection`:
1. each mel bin is normalised by a BatchNorm with frozen statistics;
2. the [T, F] spectrogram (T stretched bicubically to spec_size * r frames, r = spec_size / F) is
   cut into r consecutive time slices stacked along frequency: a square spec_size image;
3. patch embedding (conv + LayerNorm). With fusion, channel 0 is the whole clip shrunk to 10 s
   and channels 1-3 are three 10 s crops; for clips marked `is_longer` the crops go through their
   own conv and are merged in by attentional feature fusion (Dai et al. 2021, "AFF");
4. Swin stages: window attention with a learned relative position bias, every second block on
   windows shifted by half a window (sec. 3.2 of the Swin paper), then 2x2 patch merging;
5. final LayerNorm; the pooled feature is the mean over all tokens (transformers regroups the
   tokens for HTSAT's token-semantic head first, which leaves the mean unchanged).
State-dict keys are transformers' (`audio_model.audio_encoder.layers.{i}.blocks.{j}.*`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .attention import attention
from .clap_config import ClapAudioConfig
from .clap_text import ClapProjection, ClapTower, holder
from .hf_folder import ACTIVATIONS

SHIFTED_REGION_BIAS = -100.0  # added between tokens from different regions of a shifted window
PATCH_NORM_EPS = 1e-5  # the patch-embedding, merging and final norms use LayerNorm's default
BATCH_NORM_EPS = 1e-5


class FrozenBatchNorm(nn.Module):
    """BatchNorm over dim 1 with stored statistics (eval mode; no `num_batches_tracked`)."""

    def __init__(self, channels: int, eps: float = BATCH_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class AttentionalFeatureFusion(nn.Module):
    """out = 2 x w + 2 y (1 - w), w = sigmoid(local(x + y) + global(x + y)): per-pixel and
    per-channel gates choosing between the global view x and the local crops y."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        inner = channels // reduction

        def bottleneck() -> list[nn.Module]:
            return [nn.Conv2d(channels, inner, 1), FrozenBatchNorm(inner), nn.ReLU(),
                    nn.Conv2d(inner, channels, 1), FrozenBatchNorm(channels)]

        self.local_att = nn.Sequential(*bottleneck())
        self.global_att = nn.Sequential(nn.AdaptiveAvgPool2d(1), *bottleneck())

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: Tensor[B, C, H, W] -> Tensor[B, C, H, W]"""
        both = x + y
        gate = torch.sigmoid(self.local_att(both) + self.global_att(both))
        return 2 * x * gate + 2 * y * (1 - gate)


class PatchEmbed(nn.Module):
    """Image [B, C, S, S] -> patch tokens [B, (S/stride)^2, D], row-major over (frequency, time)."""

    def __init__(self, config: ClapAudioConfig):
        super().__init__()
        kernel, stride = config.patch_size, config.patch_stride
        padding = ((kernel[0] - stride[0]) // 2, (kernel[1] - stride[1]) // 2)
        width = config.patch_embeds_hidden_size
        self.fusion = config.enable_fusion
        self.proj = nn.Conv2d(config.patch_embed_input_channels, width, kernel, stride, padding)
        self.norm = nn.LayerNorm(width, eps=PATCH_NORM_EPS) if config.enable_patch_layer_norm else nn.Identity()
        if self.fusion:
            self.fusion_model = AttentionalFeatureFusion(width, config.aff_block_r)
            # The three crops are embedded side by side, each with a 3x wider stride in time.
            self.mel_conv2d = nn.Conv2d(1, width, (kernel[0], kernel[1] * 3),
                                        (stride[0], stride[1] * 3), padding)

    def forward(self, image: Tensor, is_longer: Tensor | None) -> Tensor:
        if not self.fusion:
            patches = self.proj(image)
        else:
            patches = self.proj(image[:, :1])
            longer = torch.nonzero(is_longer).flatten() if is_longer is not None else None
            if longer is not None and longer.numel() > 0:
                patches = patches.clone()
                crops = self._embed_crops(image[longer, 1:], patches.shape[-1])
                patches[longer] = self.fusion_model(patches[longer], crops)
        return self.norm(patches.flatten(2).transpose(1, 2))

    def _embed_crops(self, crops: Tensor, width: int) -> Tensor:
        """Tensor[b, n, S, S] -> Tensor[b, D, h, width]: each crop embedded, the n results laid
        side by side along time, zero-padded (or cut) to the global embedding's width."""
        batch, count, side = crops.shape[0], crops.shape[1], crops.shape[-1]
        embedded = self.mel_conv2d(crops.reshape(batch * count, 1, side, side))
        _, dim, rows, cols = embedded.shape
        embedded = embedded.view(batch, count, dim, rows, cols).permute(0, 2, 3, 1, 4)
        embedded = embedded.reshape(batch, dim, rows, count * cols)
        return F.pad(embedded, (0, width - count * cols))


@lru_cache(maxsize=8)
def relative_position_index(window: int) -> Tensor:
    """LongTensor[w*w, w*w]: for query token i and key token j of a w x w window, the row of the
    (2w-1)^2-entry bias table for their offset (dh, dw), numbered (dh + w - 1) * (2w - 1) + dw + w - 1."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    d_row = rows[:, None] - rows[None, :] + window - 1
    d_col = cols[:, None] - cols[None, :] + window - 1
    return d_row * (2 * window - 1) + d_col


@lru_cache(maxsize=16)
def shifted_window_regions(height: int, width: int, window: int, shift: int) -> Tensor:
    """BoolTensor[nW, w*w, w*w]: True where two tokens of a shifted window came from the same
    region of the unshifted image (the cyclic roll glues together regions that are not neighbours)."""
    def region(size: int) -> Tensor:
        index = torch.arange(size)
        return (index >= size - window).long() + (index >= size - shift).long()

    labels = region(height)[:, None] * 3 + region(width)[None, :]
    labels = to_windows(labels[None, :, :, None], window).squeeze(-1)[0]  # [nW, w*w]
    return labels[:, :, None] == labels[:, None, :]


def to_windows(x: Tensor, window: int) -> Tensor:
    """Tensor[B, H, W, C] -> Tensor[B, nW, w*w, C], windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, window * window, channels)


def from_windows(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Tensor[B, nW, w*w, C] -> Tensor[B, H, W, C], the inverse of `to_windows`."""
    batch, _, _, channels = windows.shape
    x = windows.view(batch, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


class SwinBlock(nn.Module):
    """x + WindowAttention(LN(x)), then + MLP(LN(.)), on a grid of `resolution` tokens.

    Stages whose grid is no larger than a window attend over the whole grid, unshifted.
    """

    def __init__(self, config: ClapAudioConfig, dim: int, heads: int, resolution: tuple[int, int],
                 shifted: bool):
        super().__init__()
        window = config.window_size
        self.resolution = resolution
        self.heads = heads
        self.window = window
        self.shift = window // 2 if shifted and min(resolution) > window else 0
        hidden = int(config.mlp_ratio * dim)
        qkv_bias = config.qkv_bias
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = holder(
            self=holder(query=nn.Linear(dim, dim, bias=qkv_bias), key=nn.Linear(dim, dim, bias=qkv_bias),
                        value=nn.Linear(dim, dim, bias=qkv_bias)),
            output=holder(dense=nn.Linear(dim, dim)),
        )
        self.attention.self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, heads))
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = holder(dense=nn.Linear(dim, hidden))
        self.output = holder(dense=nn.Linear(hidden, dim))
        self.activation = ACTIVATIONS[config.hidden_act]

    def attention_bias(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Tensor[nW * heads, w*w, w*w] (window-major): the relative position bias, plus
        SHIFTED_REGION_BIAS between tokens of different regions when the windows are shifted."""
        tokens = self.window * self.window
        count = (height // self.window) * (width // self.window)
        table = self.attention.self.relative_position_bias_table
        index = relative_position_index(self.window).to(device)
        bias = table[index.flatten()].view(tokens, tokens, self.heads).permute(2, 0, 1).to(dtype)
        if not self.shift:
            return bias.expand(count, -1, -1, -1).flatten(0, 1)
        same_region = shifted_window_regions(height, width, self.window, self.shift).to(device)
        region_bias = torch.zeros(same_region.shape, dtype=dtype, device=device)
        region_bias = region_bias.masked_fill(~same_region, SHIFTED_REGION_BIAS)
        return (bias[None] + region_bias[:, None]).flatten(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, H*W, C] -> Tensor[B, H*W, C]"""
        batch, _, channels = x.shape
        height, width = self.resolution
        window, shift, heads = self.window, self.shift, self.heads
        grid = self.layernorm_before(x).view(batch, height, width, channels)
        pad_h, pad_w = (-height) % window, (-width) % window
        grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
        padded_h, padded_w = height + pad_h, width + pad_w
        if shift:
            grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
        windows = to_windows(grid, window)  # [B, nW, T, C]
        count, tokens = windows.shape[1], windows.shape[2]

        # Windows and heads share one axis, so the per-window bias broadcasts over the batch.
        def heads_of(linear: nn.Module) -> Tensor:
            t = linear(windows).view(batch, count, tokens, heads, -1)
            return t.permute(0, 1, 3, 2, 4).reshape(batch, count * heads, tokens, -1)

        projections = self.attention.self
        bias = self.attention_bias(padded_h, padded_w, windows.dtype, windows.device)
        context = attention(heads_of(projections.query), heads_of(projections.key),
                            heads_of(projections.value), bias)
        context = context.view(batch, count, heads, tokens, -1).permute(0, 1, 3, 2, 4)
        context = self.attention.output.dense(context.reshape(batch, count, tokens, channels))

        grid = from_windows(context, window, padded_h, padded_w)
        if shift:
            grid = torch.roll(grid, shifts=(shift, shift), dims=(1, 2))
        x = x + grid[:, :height, :width].reshape(batch, height * width, channels)
        hidden = self.activation(self.intermediate.dense(self.layernorm_after(x)))
        return x + self.output.dense(hidden)


class PatchMerging(nn.Module):
    """Each 2x2 group of tokens -> one token: concatenate (C -> 4C), LayerNorm, Linear to 2C."""

    def __init__(self, dim: int, resolution: tuple[int, int]):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim, eps=PATCH_NORM_EPS)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, H*W, C] -> Tensor[B, ceil(H/2)*ceil(W/2), 2C]"""
        batch, _, channels = x.shape
        height, width = self.resolution
        grid = F.pad(x.view(batch, height, width, channels), (0, 0, 0, width % 2, 0, height % 2))
        # Order: (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col).
        merged = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2],
                            grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(merged.reshape(batch, -1, 4 * channels)))


class SwinStage(nn.Module):
    def __init__(self, config: ClapAudioConfig, stage: int):
        super().__init__()
        dim = config.stage_dim(stage)
        grid = config.grid_size
        resolution = (grid[0] // 2 ** stage, grid[1] // 2 ** stage)
        self.blocks = nn.ModuleList(
            SwinBlock(config, dim, config.num_attention_heads[stage], resolution, shifted=i % 2 == 1)
            for i in range(config.depths[stage])
        )
        last = stage == len(config.depths) - 1
        self.downsample = None if last else PatchMerging(dim, resolution)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class HTSATEncoder(nn.Module):
    """log-mel features [B, C, T, F] -> normalised tokens [B, N, D] of the last stage."""

    def __init__(self, config: ClapAudioConfig):
        super().__init__()
        self.config = config
        self.batch_norm = FrozenBatchNorm(config.num_mel_bins)
        self.patch_embed = PatchEmbed(config)
        self.layers = nn.ModuleList(SwinStage(config, stage) for stage in range(len(config.depths)))
        self.norm = nn.LayerNorm(config.hidden_size, eps=PATCH_NORM_EPS)

    def to_image(self, features: Tensor) -> Tensor:
        """Tensor[B, C, T, F] -> Tensor[B, C, S, S]: T stretched to S * r frames (bicubic), then
        r consecutive time slices stacked along frequency (slice k holds rows k*F .. k*F + F-1)."""
        config = self.config
        ratio, side = config.freq_ratio, config.spec_size
        frames = side * ratio
        batch, channels, length, bins = features.shape
        if length < frames:
            features = F.interpolate(features, (frames, bins), mode="bicubic", align_corners=True)
        slices = features.reshape(batch, channels * ratio, frames // ratio, bins).transpose(2, 3)
        return slices.reshape(batch, channels, bins * ratio, frames // ratio)

    def forward(self, features: Tensor, is_longer: Tensor | None = None) -> Tensor:
        normalised = self.batch_norm(features.transpose(1, 3)).transpose(1, 3)
        x = self.patch_embed(self.to_image(normalised), is_longer)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)


@dataclass
class ClapAudioOutput:
    """tokens: Tensor[B, N, D], the final-norm tokens of the last stage on its (frequency-major)
    grid; pooled: Tensor[B, D], their mean; audio_embeds: Tensor[B, P] (not normalised)."""

    tokens: Tensor
    pooled: Tensor
    audio_embeds: Tensor


class ClapAudioModel(ClapTower):
    """input_features [B, C, T, F] (+ is_longer [B] with fusion) -> pooled + joint-space embedding.

    Keys: `audio_model.audio_encoder.*` and `audio_projection.*`, the layout of transformers'
    ClapModel and ClapAudioModelWithProjection.
    """

    config_class = ClapAudioConfig

    def __init__(self, config: ClapAudioConfig):
        super().__init__()
        self.config = config
        self.audio_model = holder(audio_encoder=HTSATEncoder(config))
        self.audio_projection = ClapProjection(config.hidden_size, config.projection_dim,
                                               config.projection_hidden_act)

    def _check_inputs(self, features: Tensor, is_longer: Tensor | None) -> Tensor | None:
        config = self.config
        if features.dim() != 4:
            raise InputError(f"input_features must be [batch, channels, frames, mel bins], got {tuple(features.shape)}")
        batch, channels, frames, bins = features.shape
        max_frames = config.spec_size * config.freq_ratio
        if bins != config.num_mel_bins or frames > max_frames:
            raise InputError(
                f"input_features {tuple(features.shape)} must have {config.num_mel_bins} mel bins and at "
                f"most {max_frames} frames; compute them with ClapFeatureExtractor"
            )
        if is_longer is not None:
            is_longer = is_longer.reshape(-1).to(device=features.device, dtype=torch.bool)
            if is_longer.numel() != batch:
                raise InputError(f"is_longer has {is_longer.numel()} entries for a batch of {batch}")
        if not config.enable_fusion:
            if channels != config.patch_embed_input_channels:
                raise InputError(
                    f"this CLAP model has no fusion and takes {config.patch_embed_input_channels} feature "
                    f"channel(s), got {channels}; extract features with truncation='rand_trunc'"
                )
        elif channels != 4 and (is_longer is not None and bool(is_longer.any())):
            raise InputError(
                f"fused CLAP needs 4 feature channels (whole clip + 3 crops) for clips marked is_longer, "
                f"got {channels}; extract features with truncation='fusion'"
            )
        return is_longer

    def forward(self, input_features: Tensor, is_longer: Tensor | None = None) -> ClapAudioOutput:
        """input_features: Tensor[B, C, T, F] log-mel (C = 4 with fusion, else 1; T <= 1024 for
        the default spec_size); is_longer: BoolTensor[B] (fusion only; None = no clip is longer)."""
        is_longer = self._check_inputs(input_features, is_longer)
        tokens = self.audio_model.audio_encoder(input_features, is_longer)
        pooled = tokens.mean(dim=1)
        return ClapAudioOutput(tokens, pooled, self.audio_projection(pooled))
