"""The Stable Audio diffusion transformer (stable-audio-tools' `DiffusionTransformer`, type "dit").

Latents x: [B, C, L] and the diffusion time t become the transformer's input sequence: a 1x1
conv (residual) mixes channels, the timestep's Fourier features are embedded and added to the
global conditioning embedding, which is prepended to the sequence as one token (or modulates
every block, adaLN); text/timing tokens enter through cross-attention. The output is read back
from the latent positions and passed through a residual 1x1 conv. Parameter names reproduce
the reference's, so a checkpoint's `model.model.<key>` loads here as `<key>`.

Classifier-free guidance is not done here: the caller stacks the conditional and unconditional
halves on the batch axis (`models/stable_audio.py`, `dit_unconditional_inputs`).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import DIFFUSION_OBJECTIVES, check_keys
from ..errors import ConfigError, InputError
from .transformer import ContinuousTransformer, TransformerOptions

TIMESTEP_FEATURES = 256
GLOBAL_COND_TYPES = ("prepend", "adaLN")

_DIT_KEYS = {
    "io_channels", "patch_size", "embed_dim", "cond_token_dim", "project_cond_tokens",
    "global_cond_dim", "project_global_cond", "input_concat_dim", "prepend_cond_dim", "depth",
    "num_heads", "transformer_type", "global_cond_type", "timestep_cond_type", "timestep_embed_dim",
}


class TimestepFourierFeatures(nn.Module):
    """Random Fourier features of t: [cos(2 pi t W^T), sin(2 pi t W^T)], W ~ N(0, 1) of shape [F/2, 1]."""

    def __init__(self, num_features: int = TIMESTEP_FEATURES, in_features: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_features // 2, in_features))

    def forward(self, t: Tensor) -> Tensor:
        """Tensor[B, in_features] -> Tensor[B, num_features] (cosines first)."""
        angles = (2 * math.pi * t) @ self.weight.T
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


def mlp(dim_in: int, dim_out: int, bias: bool) -> nn.Sequential:
    """Linear -> SiLU -> Linear: the DiTs' embedding projections."""
    return nn.Sequential(nn.Linear(dim_in, dim_out, bias=bias), nn.SiLU(),
                         nn.Linear(dim_out, dim_out, bias=bias))


def conditioning_projections(embed_dim: int, cond_token_dim: int, project_cond_tokens: bool,
                             global_cond_dim: int, project_global_cond: bool
                             ) -> tuple[nn.Sequential | None, int, nn.Sequential | None]:
    """(to_cond_embed, the cross-attention tokens' width after it (0: none), to_global_embed):
    the input MLPs of the cross-attention tokens and the global embedding, None where the config
    has no such input."""
    to_cond_embed, cond_embed_dim = None, 0
    if cond_token_dim > 0:
        cond_embed_dim = embed_dim if project_cond_tokens else cond_token_dim
        to_cond_embed = mlp(cond_token_dim, cond_embed_dim, bias=False)
    to_global_embed = None
    if global_cond_dim > 0:
        global_embed_dim = embed_dim if project_global_cond else global_cond_dim
        if global_embed_dim != embed_dim:
            raise ConfigError(
                f"with project_global_cond false, global_cond_dim ({global_cond_dim}) must equal "
                f"embed_dim ({embed_dim}): the timestep embedding is added to it"
            )
        to_global_embed = mlp(global_cond_dim, global_embed_dim, bias=False)
    return to_cond_embed, cond_embed_dim, to_global_embed


class DiffusionTransformer(nn.Module):
    """Constructor arguments carry the names and defaults of stable-audio-tools' `model.diffusion.config`.

    Args:
        io_channels: latent channels C.
        patch_size: latent frames folded into one token.
        embed_dim: transformer width; num_heads divides it (head dim = embed_dim / num_heads >= 32).
        depth: number of transformer blocks.
        cond_token_dim: width of the cross-attention tokens (0: no cross-attention).
        project_cond_tokens: project the tokens to embed_dim; otherwise keys/values keep
            cond_token_dim and use fewer heads (SAO 1.0: 768 -> 12 key/value heads of 64).
        global_cond_dim: width of the global embedding (0: none).
        project_global_cond: project it to embed_dim (otherwise it must already be embed_dim).
        input_concat_dim: channels concatenated to x (0: none).
        prepend_cond_dim: width of tokens prepended to the sequence (0: none).
        global_cond_type: "prepend" (one extra token) or "adaLN" (modulates every block).
        diffusion_objective: "v", "rectified_flow" or "rf_denoiser"; stored for the sampler, it
            does not change the network.
        transformer_options: the block switches (qk norm, feed-forward, norms, rotary).
    """

    def __init__(
        self,
        *,
        io_channels: int = 32,
        patch_size: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 8,
        cond_token_dim: int = 0,
        project_cond_tokens: bool = True,
        global_cond_dim: int = 0,
        project_global_cond: bool = True,
        input_concat_dim: int = 0,
        prepend_cond_dim: int = 0,
        global_cond_type: str = "prepend",
        diffusion_objective: str = "v",
        transformer_options: TransformerOptions = TransformerOptions(),
    ):
        super().__init__()
        if global_cond_type not in GLOBAL_COND_TYPES:
            raise ConfigError(f"global_cond_type {global_cond_type!r} is not one of {GLOBAL_COND_TYPES}")
        if diffusion_objective not in DIFFUSION_OBJECTIVES:
            raise ConfigError(
                f"diffusion_objective {diffusion_objective!r} is not one of {DIFFUSION_OBJECTIVES}"
            )
        if num_heads <= 0 or embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        if patch_size < 1:
            raise ConfigError(f"patch_size must be at least 1, got {patch_size}")
        self.io_channels = io_channels
        self.patch_size = patch_size
        self.cond_token_dim = cond_token_dim
        self.global_cond_dim = global_cond_dim
        self.input_concat_dim = input_concat_dim
        self.prepend_cond_dim = prepend_cond_dim
        self.global_cond_type = global_cond_type
        self.diffusion_objective = diffusion_objective

        self.timestep_features = TimestepFourierFeatures(TIMESTEP_FEATURES)
        self.to_timestep_embed = mlp(TIMESTEP_FEATURES, embed_dim, bias=True)

        self.to_cond_embed, cond_embed_dim, self.to_global_embed = conditioning_projections(
            embed_dim, cond_token_dim, project_cond_tokens, global_cond_dim, project_global_cond)

        self.to_prepend_embed = None
        if prepend_cond_dim > 0:
            self.to_prepend_embed = mlp(prepend_cond_dim, embed_dim, bias=False)

        dim_in = io_channels + input_concat_dim
        self.transformer = ContinuousTransformer(
            embed_dim, depth,
            dim_in=dim_in * patch_size,
            dim_out=io_channels * patch_size,
            head_dim=embed_dim // num_heads,
            context_dim=cond_embed_dim if cond_token_dim > 0 else None,
            global_cond_dim=embed_dim if global_cond_type == "adaLN" else None,
            options=transformer_options,
        )
        self.preprocess_conv = nn.Conv1d(dim_in, dim_in, 1, bias=False)
        nn.init.zeros_(self.preprocess_conv.weight)
        self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        nn.init.zeros_(self.postprocess_conv.weight)

    @classmethod
    def from_config(cls, diffusion_config: dict, objective: str = "v") -> "DiffusionTransformer":
        """Build from stable-audio-tools' `model.diffusion.config` and `model.diffusion.diffusion_objective`."""
        where = "model.diffusion.config"
        check_keys(diffusion_config, _DIT_KEYS | TransformerOptions.CONFIG_KEYS, where)
        config = dict(diffusion_config)
        transformer_type = config.pop("transformer_type", "continuous_transformer")
        if transformer_type != "continuous_transformer":
            raise ConfigError(
                f"{where}.transformer_type {transformer_type!r} is not supported; "
                f"use 'continuous_transformer'"
            )
        timestep_cond_type = config.pop("timestep_cond_type", "global")
        if timestep_cond_type != "global":
            # The reference's input_concat path only works for a 1-wide timestep embedding.
            raise ConfigError(
                f"{where}.timestep_cond_type {timestep_cond_type!r} is not supported; use 'global'"
            )
        config.pop("timestep_embed_dim", None)  # only read by timestep_cond_type 'input_concat'
        options = TransformerOptions.from_config(
            {key: config.pop(key) for key in list(config) if key in TransformerOptions.CONFIG_KEYS}, where
        )
        return cls(**config, diffusion_objective=objective, transformer_options=options)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cross_attn_cond: Tensor | None = None,
        global_embed: Tensor | None = None,
        prepend_cond: Tensor | None = None,
        prepend_cond_mask: Tensor | None = None,
        input_concat_cond: Tensor | None = None,
        cross_attn_cond_mask: Tensor | None = None,
    ) -> Tensor:
        """One network evaluation (no guidance).

        Args:
            x: Tensor[B, C, L] noisy latents, L a multiple of patch_size.
            t: Tensor[B] diffusion time (a 0-d tensor is broadcast over the batch).
            cross_attn_cond: Tensor[B, N, cond_token_dim].
            global_embed: Tensor[B, global_cond_dim].
            prepend_cond: Tensor[B, P, prepend_cond_dim].
            prepend_cond_mask, cross_attn_cond_mask: accepted and ignored, like the reference: its
                transformer implements no masks (and DiffusionTransformer.forward drops the
                cross-attention mask), so padded tokens take part in attention as they are.
            input_concat_cond: Tensor[B, input_concat_dim, L'], resized to L (nearest) if L' != L.

        Returns:
            Tensor[B, C, L].
        """
        dtype = self.preprocess_conv.weight.dtype
        x = self._check_latents(x).to(dtype)
        batch, _, length = x.shape
        t = t.to(dtype).expand(batch) if t.dim() == 0 else t.to(dtype)
        if t.shape != (batch,):
            raise InputError(f"t must have shape [{batch}] (one time per batch item), got {tuple(t.shape)}")

        context = None
        if cross_attn_cond is not None:
            context = self.to_cond_embed(self._check_input(cross_attn_cond, "cross_attn_cond",
                                                           self.to_cond_embed, 3, dtype))
        if global_embed is not None:
            global_embed = self.to_global_embed(self._check_input(global_embed, "global_embed",
                                                                  self.to_global_embed, 2, dtype))
        prepend = None
        if prepend_cond is not None:
            prepend = self.to_prepend_embed(self._check_input(prepend_cond, "prepend_cond",
                                                              self.to_prepend_embed, 3, dtype))

        if self.input_concat_dim > 0:
            if input_concat_cond is None or input_concat_cond.shape[1] != self.input_concat_dim:
                raise InputError(
                    f"this model needs input_concat_cond of shape [B, {self.input_concat_dim}, L]"
                )
            input_concat_cond = input_concat_cond.to(dtype)
            if input_concat_cond.shape[2] != length:
                input_concat_cond = F.interpolate(input_concat_cond, (length,), mode="nearest")
            x = torch.cat([x, input_concat_cond], dim=1)
        elif input_concat_cond is not None:
            raise InputError("input_concat_cond was given but this model has input_concat_dim 0")

        timestep_embed = self.to_timestep_embed(self.timestep_features(t[:, None]))
        global_embed = timestep_embed if global_embed is None else global_embed + timestep_embed

        if self.global_cond_type == "prepend":
            # The global token goes after any prepend tokens.
            token = global_embed.unsqueeze(1)
            prepend = token if prepend is None else torch.cat([prepend, token], dim=1)
        prepend_length = 0 if prepend is None else prepend.shape[1]

        x = self.preprocess_conv(x) + x
        x = rearrange(x, "b c (l p) -> b l (c p)", p=self.patch_size)
        out = self.transformer(
            x, prepend_embeds=prepend, context=context,
            global_cond=global_embed if self.global_cond_type == "adaLN" else None,
        )
        out = rearrange(out[:, prepend_length:], "b l (c p) -> b c (l p)", p=self.patch_size)
        return self.postprocess_conv(out) + out

    def _check_latents(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.io_channels:
            raise InputError(f"x must have shape [B, {self.io_channels}, L], got {tuple(x.shape)}")
        if x.shape[2] % self.patch_size:
            raise InputError(
                f"latent length {x.shape[2]} is not a multiple of the patch size {self.patch_size}"
            )
        return x

    @staticmethod
    def _check_input(value: Tensor, name: str, projection: nn.Sequential | None, ndim: int,
                     dtype: torch.dtype) -> Tensor:
        if projection is None:
            raise InputError(f"{name} was given but this model's config has no input for it")
        width = projection[0].in_features
        if value.dim() != ndim or value.shape[-1] != width:
            expected = "[B, N, " if ndim == 3 else "[B, "
            raise InputError(f"{name} must have shape {expected}{width}], got {tuple(value.shape)}")
        return value.to(dtype)
