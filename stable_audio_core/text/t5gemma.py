"""T5Gemma encoder (Zhang et al. 2025, "Encoder-Decoder Gemma"), inference only.

The encoder half of Hugging Face's `T5GemmaForConditionalGeneration`, computing what
`T5GemmaEncoderModel(...).last_hidden_state` computes with transformers' default attention (sdpa).
It is Gemma 2's layer stack made bidirectional:
- token embeddings times sqrt(hidden_size), that factor rounded to the model's dtype first;
- RMS norms that scale by (1 + weight), in float32, around both sub-layers ("sandwich" norms:
  before and after attention, before and after the feed-forward);
- grouped-query self-attention with rotary positions (half-split layout), logits scaled by
  query_pre_attn_scalar ** -0.5, a key-padding mask, and on "sliding_attention" layers only keys
  within `sliding_window` positions either side (inclusive);
- a gated feed-forward, down(act(gate(x)) * up(x));
- a final RMS norm.
The config's attn_logit_softcapping is not applied: transformers' sdpa path ignores it (only its
eager path applies it), and the sdpa path is the one the Stable Audio 3 reference runs.
State-dict keys are those of the encoder without its `model.encoder.` / `encoder.` prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..models.attention import attention
from ..models.hf_folder import ACTIVATIONS

LAYER_TYPES = ("sliding_attention", "full_attention")
# Keys of a T5Gemma (sub-)config.json that do not change what the encoder computes: the decoder
# head's logit softcap, training settings, generation defaults and transformers' bookkeeping.
IGNORED_KEYS = {
    "model_type", "architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path",
    "final_logit_softcapping", "initializer_range", "max_position_embeddings", "use_cache",
    "attention_dropout", "dropout_rate", "classifier_dropout_rate", "tie_word_embeddings",
    "bos_token_id", "eos_token_id", "cross_attention_hidden_size", "is_encoder_decoder",
    "use_bidirectional_attention", "output_attentions", "output_hidden_states", "return_dict",
}


@dataclass(frozen=True)
class T5GemmaEncoderConfig:
    """The encoder sub-config of a T5Gemma config.json (defaults: transformers' T5GemmaModuleConfig)."""

    vocab_size: int = 256000
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    query_pre_attn_scalar: float = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    sliding_window: int | None = 4096
    layer_types: tuple[str, ...] = ()
    attention_bias: bool = False
    attn_logit_softcapping: float | None = 50.0  # read, and ignored like transformers' sdpa path
    pad_token_id: int | None = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"T5Gemma config '{name}' must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"T5Gemma config: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"T5Gemma config head_dim must be even for rotary positions, got {self.head_dim}")
        if self.hidden_activation not in ACTIVATIONS:
            raise ConfigError(
                f"T5Gemma config hidden_activation {self.hidden_activation!r} is not supported; "
                f"supported: {sorted(ACTIVATIONS)}"
            )
        if not self.query_pre_attn_scalar > 0 or not self.rms_norm_eps > 0 or not self.rope_theta > 0:
            raise ConfigError("T5Gemma config query_pre_attn_scalar, rms_norm_eps and rope_theta must be > 0")
        if not self.layer_types:  # transformers' default: sliding, full, sliding, ...
            object.__setattr__(self, "layer_types", tuple(
                LAYER_TYPES[i % 2] for i in range(self.num_hidden_layers)))
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= set(LAYER_TYPES):
            raise ConfigError(
                f"T5Gemma config layer_types must list {self.num_hidden_layers} entries from {list(LAYER_TYPES)}, "
                f"got {list(self.layer_types)}"
            )
        if "sliding_attention" in self.layer_types and not (
                isinstance(self.sliding_window, int) and self.sliding_window > 0):
            raise ConfigError(f"T5Gemma config has sliding layers but sliding_window is {self.sliding_window!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "T5GemmaEncoderConfig":
        """A T5Gemma config.json (its "encoder" part is read) or an encoder sub-config; unknown keys
        raise ConfigError naming them."""
        if not isinstance(raw, dict):
            raise ConfigError(f"T5Gemma config must be a JSON object, got {type(raw).__name__}")
        if raw.get("model_type") == "t5gemma" or "encoder" in raw:
            encoder = raw.get("encoder")
            if not isinstance(encoder, dict):
                raise ConfigError("T5Gemma config has no 'encoder' object; expected a T5GemmaConfig config.json")
            raw = encoder
        model_type = raw.get("model_type", "t5_gemma_module")
        if model_type != "t5_gemma_module":
            raise ConfigError(f"T5Gemma encoder config has model_type {model_type!r}; expected 't5_gemma_module'")
        if raw.get("is_decoder"):
            raise ConfigError("T5Gemma config: the encoder sub-config has is_decoder=true")
        if raw.get("quantization_config") is not None:
            raise ConfigError("quantized T5Gemma checkpoints are not supported; use a bfloat16/float32 folder")
        values = dict(raw)
        values.pop("is_decoder", None)
        values.pop("quantization_config", None)
        rope = values.pop("rope_parameters", None) or values.pop("rope_scaling", None) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ConfigError(f"T5Gemma config: only the default rotary embedding is supported, got {rope}")
        values.setdefault("rope_theta", rope.get("rope_theta", cls.rope_theta))
        values.pop("rope_scaling", None)
        own = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - own - IGNORED_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in the T5Gemma encoder config; the encoder reads {sorted(own)} "
                f"and ignores {sorted(IGNORED_KEYS)}"
            )
        values = {key: value for key, value in values.items() if key in own}
        if values.get("layer_types") is not None:
            values["layer_types"] = tuple(values["layer_types"])
        else:
            values.pop("layer_types", None)
        return cls(**values)


class T5GemmaRMSNorm(nn.Module):
    """x / rms(x) * (1 + weight), computed in float32 and returned in x's dtype: Tensor[..., D] -> Tensor[..., D]."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


def rotary_cos_sin(length: int, head_dim: int, theta: float, dtype: torch.dtype,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """Positions 0..L-1 -> (cos, sin) Tensor[L, head_dim], angles in float32, then rounded to dtype.

    The same frequencies and half-split layout as transformer.RotaryEmbedding; computed per call
    (not from a buffer a `.to(bfloat16)` would round), as transformers does for Gemma.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary_in_dtype(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate Tensor[B, H, L, D] in its own dtype (bfloat16 stays bfloat16, as in Gemma); channel j
    pairs with j + D/2. transformer.apply_rotary rotates in float32 instead, which differs in bfloat16."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class T5GemmaSelfAttention(nn.Module):
    """Grouped-query self-attention with rotary positions: Tensor[B, L, D] -> Tensor[B, L, D]."""

    def __init__(self, config: T5GemmaEncoderConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = config.query_pre_attn_scalar ** -0.5
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        """x Tensor[B, L, D]; cos, sin Tensor[L, head_dim]; mask Bool[B, 1, L, L] (True = may attend) or None."""
        batch, length, _ = x.shape

        def heads(projection: nn.Linear) -> Tensor:
            return projection(x).view(batch, length, -1, self.head_dim).transpose(1, 2)

        q = apply_rotary_in_dtype(heads(self.q_proj), cos, sin)
        k = apply_rotary_in_dtype(heads(self.k_proj), cos, sin)
        out = attention(q, k, heads(self.v_proj), mask=mask, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class T5GemmaMLP(nn.Module):
    """down(act(gate(x)) * up(x)): Tensor[..., D] -> Tensor[..., D]."""

    def __init__(self, config: T5GemmaEncoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.activation = ACTIVATIONS[config.hidden_activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.activation(self.gate_proj(x)) * self.up_proj(x))


class T5GemmaEncoderLayer(nn.Module):
    """x + post_norm(attn(pre_norm(x))), then x + post_norm(mlp(pre_norm(x))): Tensor[B, L, D] -> same."""

    def __init__(self, config: T5GemmaEncoderConfig, layer_type: str):
        super().__init__()
        self.layer_type = layer_type
        dim, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = T5GemmaSelfAttention(config)
        self.pre_self_attn_layernorm = T5GemmaRMSNorm(dim, eps)
        self.post_self_attn_layernorm = T5GemmaRMSNorm(dim, eps)
        self.mlp = T5GemmaMLP(config)
        self.pre_feedforward_layernorm = T5GemmaRMSNorm(dim, eps)
        self.post_feedforward_layernorm = T5GemmaRMSNorm(dim, eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.post_self_attn_layernorm(self.self_attn(self.pre_self_attn_layernorm(x), cos, sin, mask))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


def attention_masks(padding_mask: Tensor, sliding_window: int | None) -> dict[str, Tensor | None]:
    """Bool[B, L] (True = token) -> {layer type: Bool[B, 1, L, L] (True = may attend) or None}.

    Keys that are padding are hidden from every query (padded queries still attend to the real
    tokens: the encoder is bidirectional). None where nothing is hidden, as transformers passes
    sdpa no mask then (full layers without padding; sliding layers shorter than the window).
    """
    batch, length = padding_mask.shape
    keys = padding_mask[:, None, None, :].expand(batch, 1, length, length)
    unpadded = bool(padding_mask.all())
    masks: dict[str, Tensor | None] = {"full_attention": None if unpadded else keys}
    if sliding_window is not None:
        positions = torch.arange(length, device=padding_mask.device)
        near = (positions[:, None] - positions[None, :]).abs() <= sliding_window
        masks["sliding_attention"] = None if unpadded and length < sliding_window else keys & near
    return masks


class T5GemmaEncoder(nn.Module):
    """Token ids -> last_hidden_state, as transformers' `T5GemmaEncoderModel` with sdpa attention."""

    def __init__(self, config: T5GemmaEncoderConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([T5GemmaEncoderLayer(config, kind) for kind in config.layer_types])
        self.norm = T5GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids LongTensor[B, L], attention_mask Bool/0-1 Tensor[B, L] (True = token; None: all
        tokens) -> Tensor[B, L, hidden_size] in the weights' dtype. Positions count from the first
        slot, padding included (left padding shifts the tokens' positions, as in transformers)."""
        if input_ids.dim() != 2:
            raise InputError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask.shape != input_ids.shape:
            raise InputError(
                f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        attention_mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        x = self.embed_tokens(input_ids)
        # The factor is a tensor of the activations' dtype: in bfloat16, sqrt(768) becomes 27.75.
        x = x * torch.tensor(math.sqrt(self.config.hidden_size), dtype=x.dtype)
        cos, sin = rotary_cos_sin(input_ids.shape[1], self.config.head_dim, self.config.rope_theta,
                                  x.dtype, x.device)
        masks = attention_masks(attention_mask, self.config.sliding_window)
        for layer in self.layers:
            x = layer(x, cos, sin, masks[layer.layer_type])
        return self.norm(x)
