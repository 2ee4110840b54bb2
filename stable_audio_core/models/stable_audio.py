"""The whole conditioned latent diffusion model: conditioner + diffusion backbone + VAE pretransform.

Submodule names reproduce stable-audio-tools' checkpoint layout: `model.model.*` (backbone),
`conditioner.conditioners.*`, `pretransform.model.*`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError, InputError
from ..precision import activation_dtype
from ..sampling.guidance import ModelFn, guided_model_fn
from .conditioners import Conditioning, MultiConditioner


@dataclass
class ModelInputs:
    """The backbone's conditioning inputs, assembled from conditioner outputs."""

    cross_attn_cond: torch.Tensor | None = None   # [B, N, D] tokens for cross-attention
    cross_attn_mask: torch.Tensor | None = None   # [B, N]
    global_embed: torch.Tensor | None = None      # [B, Dg] concatenated by channel
    input_concat_cond: torch.Tensor | None = None  # [B, Ci, L]
    prepend_cond: torch.Tensor | None = None      # [B, P, Dp]
    prepend_cond_mask: torch.Tensor | None = None  # [B, P]

    def to(self, dtype: torch.dtype) -> "ModelInputs":
        cast = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v)
                for k, v in self.__dict__.items()}
        return ModelInputs(**cast)


def assemble_inputs(conditioning: Conditioning, config: ModelConfig) -> ModelInputs:
    """Concatenate conditioner outputs the way the config's *_ids lists say (reference order)."""
    inputs = ModelInputs()
    if config.cross_attention_cond_ids:
        tokens, masks = [], []
        for key in config.cross_attention_cond_ids:
            t, m = conditioning[key]
            if t.dim() == 2:  # one token per item: add the sequence axis
                t, m = t.unsqueeze(1), m.unsqueeze(1)
            tokens.append(t)
            masks.append(m)
        inputs.cross_attn_cond = torch.cat(tokens, dim=1)
        inputs.cross_attn_mask = torch.cat(masks, dim=1)
    if config.global_cond_ids:
        embed = torch.cat([conditioning[key][0] for key in config.global_cond_ids], dim=-1)
        inputs.global_embed = embed.squeeze(1) if embed.dim() == 3 else embed
    if config.input_concat_ids:
        inputs.input_concat_cond = torch.cat([conditioning[k][0] for k in config.input_concat_ids], dim=1)
    if config.prepend_cond_ids:
        inputs.prepend_cond = torch.cat([conditioning[k][0] for k in config.prepend_cond_ids], dim=1)
        inputs.prepend_cond_mask = torch.cat([conditioning[k][1] for k in config.prepend_cond_ids], dim=1)
    return inputs


def dit_unconditional_inputs(inputs: ModelInputs, negative: ModelInputs | None) -> dict:
    """The DiT's unconditional side: zero cross-attention tokens (or the negative prompt's tokens,
    padded positions zeroed) and zero prepend tokens; the global embedding is shared."""
    null = {}
    if inputs.cross_attn_cond is not None:
        zeros = torch.zeros_like(inputs.cross_attn_cond)
        if negative is not None and negative.cross_attn_cond is not None:
            neg = negative.cross_attn_cond.to(zeros.dtype)
            if neg.shape != zeros.shape:
                raise InputError(
                    f"negative conditioning tokens have shape {tuple(neg.shape)} but the positive ones "
                    f"have {tuple(zeros.shape)}; use the same batch size for both"
                )
            if negative.cross_attn_mask is not None:
                neg = torch.where(negative.cross_attn_mask.bool().unsqueeze(2), neg, zeros)
            null["cross_attn_cond"] = neg
        else:
            null["cross_attn_cond"] = zeros
    if inputs.prepend_cond is not None:
        null["prepend_cond"] = torch.zeros_like(inputs.prepend_cond)
    return null


def _dit_call(net: nn.Module) -> Callable[..., torch.Tensor]:
    def call(x, t, cross_attn_cond=None, cross_attn_mask=None, global_embed=None,
             input_concat_cond=None, prepend_cond=None, prepend_cond_mask=None):
        # The reference DiT ignores the cross-attention mask; padded T5 tokens are zero instead.
        return net(x, t, cross_attn_cond=cross_attn_cond, global_embed=global_embed,
                   input_concat_cond=input_concat_cond, prepend_cond=prepend_cond,
                   prepend_cond_mask=prepend_cond_mask)
    return call


def _build_dit(config: ModelConfig) -> nn.Module:
    from .dit import DiffusionTransformer
    return DiffusionTransformer.from_config(config.diffusion_config, objective=config.objective)


def unet_unconditional_inputs(inputs: ModelInputs, negative: ModelInputs | None) -> dict:
    """The U-Net's unconditional side (stable-audio-tools' UNetCFG1d): every cross-attention token
    becomes the learned `fixed_embedding` row at its position, or, with a negative prompt, the
    negative tokens with the learned rows at the negative's padded positions. The cross-attention
    mask (the positive one), global embedding and concatenated channels are shared by both halves."""
    if inputs.cross_attn_cond is None:
        return {}
    batch, length = inputs.cross_attn_cond.shape[:2]
    device = inputs.cross_attn_cond.device
    if negative is None or negative.cross_attn_cond is None:
        return {"fixed_embedding_mask": torch.ones(batch, length, dtype=torch.bool, device=device)}
    tokens = negative.cross_attn_cond.to(inputs.cross_attn_cond.dtype)
    if tokens.shape != inputs.cross_attn_cond.shape:
        raise InputError(
            f"negative conditioning tokens have shape {tuple(tokens.shape)} but the positive ones "
            f"have {tuple(inputs.cross_attn_cond.shape)}; use the same batch size and token count for both"
        )
    keep = (torch.ones(batch, length, dtype=torch.bool, device=device) if negative.cross_attn_mask is None
            else negative.cross_attn_mask.to(device).bool())
    return {"cross_attn_cond": tokens, "fixed_embedding_mask": ~keep}


def _unet_call(net: nn.Module) -> Callable[..., torch.Tensor]:
    return net  # UNet1d.forward takes the ModelInputs names (and fixed_embedding_mask) as they are


def _build_unet(config: ModelConfig) -> nn.Module:
    from .unet import UNet1d
    return UNet1d.from_config(config.diffusion_config, objective=config.objective)


def _sa3_call(net: nn.Module) -> Callable[..., torch.Tensor]:
    def call(x, t, cross_attn_cond=None, cross_attn_mask=None, global_embed=None,
             input_concat_cond=None, prepend_cond=None, prepend_cond_mask=None, local_add_cond=None,
             padding_mask=None):
        # Like the reference, the SA3 DiT attends to every prompt slot (no cross-attention mask).
        return net(x, t, cross_attn_cond=cross_attn_cond, global_embed=global_embed,
                   local_add_cond=local_add_cond, padding_mask=padding_mask)
    return call


def _build_sa3_dit(config: ModelConfig) -> nn.Module:
    from .sa3_dit import SA3DiT
    return SA3DiT.from_config(config.diffusion_config, objective=config.objective)


# Backbone type -> (constructor, call adapter, unconditional-side builder).
# A backbone may also define `required_length_multiple` (latent frames; default 1) and
# `default_cfg_rescale` (the guidance rescale the reference applies to it; default 0).
BACKBONES: dict[str, tuple[Callable, Callable, Callable]] = {
    "dit": (_build_dit, _dit_call, dit_unconditional_inputs),
    "adp_cfg_1d": (_build_unet, _unet_call, unet_unconditional_inputs),
    # Stable Audio 3's "dit" (a config of family "sa3"): guidance with APG lives in sampling/sa3.py.
    "sa3_dit": (_build_sa3_dit, _sa3_call, dit_unconditional_inputs),
}


def backbone_type(config: ModelConfig) -> str:
    """The BACKBONES key of a config: its diffusion type, "sa3_dit" for a Stable Audio 3 "dit"."""
    if config.family == "sa3" and config.diffusion_type == "dit":
        return "sa3_dit"
    return config.diffusion_type


class _Holder(nn.Module):
    """Keeps the reference's `<name>.model.*` key prefix for a wrapped module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class StableAudioModel(nn.Module):
    def __init__(self, config: ModelConfig, backbone: nn.Module, conditioner: MultiConditioner,
                 autoencoder: nn.Module | None):
        super().__init__()
        self.config = config
        self.model = _Holder(backbone)
        self.conditioner = conditioner
        self.pretransform = _Holder(autoencoder) if autoencoder is not None else None
        _, self._call_adapter, self._null_builder = BACKBONES[backbone_type(config)]
        # Callables step_hook(t: Tensor[B]) run before every backbone evaluation of SA3 sampling
        # (e.g. runtime LoRAs switched on and off by time interval).
        self.step_hooks: list[Callable[[torch.Tensor], None]] = []

    @classmethod
    def from_config(cls, config: ModelConfig) -> "StableAudioModel":
        kind = backbone_type(config)
        if kind not in BACKBONES:
            raise ConfigError(
                f"model.diffusion.type '{config.diffusion_type}' is not supported; "
                f"supported: {sorted(k for k in BACKBONES if k != 'sa3_dit')}"
            )
        backbone = BACKBONES[kind][0](config)
        conditioner = MultiConditioner.from_specs(config.conditioners, config.cond_dim, config.default_keys)
        autoencoder = None
        if config.pretransform is not None:
            from .autoencoder import build_autoencoder
            autoencoder = build_autoencoder(config.pretransform, config.sample_rate)
        return cls(config, backbone, conditioner, autoencoder)

    # --- properties the pipeline reads -------------------------------------------------------
    @property
    def backbone(self) -> nn.Module:
        return self.model.model

    @property
    def autoencoder(self) -> nn.Module | None:
        return None if self.pretransform is None else self.pretransform.model

    @property
    def is_sa3(self) -> bool:
        """A Stable Audio 3 model (SA3 DiT, SAME, T5Gemma): generate samples it with sampling/sa3.py."""
        return self.config.family == "sa3"

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def objective(self) -> str:
        return self.config.objective

    @property
    def io_channels(self) -> int:
        return self.config.io_channels

    @property
    def downsampling_ratio(self) -> int:
        return 1 if self.autoencoder is None else int(self.autoencoder.downsampling_ratio)

    @property
    def audio_channels(self) -> int:
        return self.config.audio_channels

    @property
    def min_input_length(self) -> int:
        """Audio windows must be a multiple of this many samples (the reference's min_input_length):
        the VAE's downsampling ratio times the backbone's required latent multiple."""
        return self.downsampling_ratio * int(getattr(self.backbone, "required_length_multiple", 1))

    @property
    def default_cfg_rescale(self) -> float:
        """The CFG rescale stable-audio-tools' generate_diffusion_cond applies to this backbone."""
        return float(getattr(self.backbone, "default_cfg_rescale", 0.0))

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the backbone's activations (its parameters' dtype unless only its matmul
        weights are reduced, see acceleration.use_bfloat16_matmuls)."""
        return activation_dtype(self.backbone)

    # --- conditioning and the guided model function ------------------------------------------
    def condition(self, metadata: list[dict[str, Any]]) -> ModelInputs:
        """Metadata dicts (one per batch item) -> the backbone's conditioning inputs."""
        conditioning = self.conditioner(metadata, self.device)
        return assemble_inputs(conditioning, self.config).to(self.dtype)

    def model_fn(self, inputs: ModelInputs, cfg_scale: float = 1.0,
                 negative: ModelInputs | None = None, rescale: float | None = None) -> ModelFn:
        """model_fn(x, t) -> backbone output (v), classifier-free guided when cfg_scale != 1.

        rescale None takes the backbone's default (what stable-audio-tools applies to it). The
        backbone's inputs are cast to its activation dtype here, its edge, not in its forward."""
        dtype = self.dtype
        call = self._call_adapter(self.backbone)
        inputs = inputs.to(dtype)
        kwargs = dict(inputs.__dict__)
        null = self._null_builder(inputs, negative) if cfg_scale != 1.0 else None
        rescale = self.default_cfg_rescale if rescale is None else rescale
        guided = guided_model_fn(call, kwargs, null, cfg_scale, rescale)
        return lambda x, t: guided(x.to(dtype), t.to(dtype))
