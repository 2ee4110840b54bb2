"""T5 encoder (Raffel et al. 2020, "Exploring the Limits of Transfer Learning"), inference only.

Matches Hugging Face's `T5EncoderModel` and loads its folders (config.json + safetensors) with the
same state-dict keys. The parts that make T5 differ from a textbook transformer:
- pre-norm residual blocks with an RMS norm (no mean subtraction, no bias), statistics in float32;
- no 1/sqrt(d) scaling of attention logits; positions enter only as a learned bias per head
  indexed by a log-bucketed relative distance (sec. 2.1), held by the first block and reused by all;
- the original T5 uses a ReLU feed-forward, T5 v1.1 / Flan-T5 a gated one (act(x W0) * x W1).
Dropout is omitted: this module only ever runs in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..models.attention import attention
from ..models.hf_folder import (ACTIVATIONS, CONFIG_FILE, IGNORED_CONFIG_KEYS, check_keys, check_positive_int,
                        read_json, read_weights, token_mask, weight_files)

EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight")  # one tied table, saved as either
# A full encoder-decoder checkpoint (e.g. t5-base as published) also holds these; the encoder skips them.
IGNORED_KEY_PREFIXES = ("decoder.", "lm_head.")


@dataclass(frozen=True)
class T5Config:
    """The encoder-relevant part of a Hugging Face T5 `config.json` (defaults: transformers' T5Config)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    dense_act_fn: str = "relu"
    is_gated_act: bool = False
    pad_token_id: int = 0
    eos_token_id: int = 1
    is_decoder: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            check_positive_int(getattr(self, name), name, "T5 config")
        if self.is_decoder:
            raise ConfigError("T5 config has is_decoder=true; this is an encoder: use the encoder's config")
        if not isinstance(self.dense_act_fn, str) or self.dense_act_fn not in ACTIVATIONS:
            raise ConfigError(
                f"T5 config activation {self.dense_act_fn!r} (dense_act_fn, or the part after "
                f"'gated-' in feed_forward_proj) is not supported; supported: {sorted(ACTIVATIONS)}"
            )
        # Bidirectional buckets: half per direction, half of those exact; the rest log-spaced
        # up to max_distance, which therefore has to lie beyond the exact range.
        exact = self.relative_attention_num_buckets // 4
        if exact < 1 or self.relative_attention_max_distance <= exact:
            raise ConfigError(
                "T5 config needs relative_attention_num_buckets >= 4 and "
                f"relative_attention_max_distance > num_buckets // 4, got "
                f"{self.relative_attention_num_buckets} and {self.relative_attention_max_distance}"
            )
        if not self.layer_norm_epsilon > 0:
            raise ConfigError(f"T5 config layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "T5Config":
        """A config.json dict -> T5Config; unknown keys raise ConfigError naming them."""
        values = check_keys(raw, {f.name for f in fields(cls)}, "T5 config",
                            ignored=IGNORED_CONFIG_KEYS | {"quantization_config"},
                            kind=("model_type", "t5"))
        if raw.get("quantization_config") is not None:
            raise ConfigError("quantized T5 checkpoints are not supported; use a float16/32 checkpoint")
        projection = values.get("feed_forward_proj", cls.feed_forward_proj)
        parts = projection.split("-") if isinstance(projection, str) else []
        if not (len(parts) == 1 or (len(parts) == 2 and parts[0] == "gated")):
            raise ConfigError(
                f"T5 config feed_forward_proj {projection!r} must be '<act>' or 'gated-<act>', "
                "e.g. 'relu' or 'gated-gelu'"
            )
        # As transformers resolves it: derived from feed_forward_proj ("gated-gelu" meaning the
        # tanh GELU), unless config.json states dense_act_fn / is_gated_act itself.
        derived_act = "gelu_new" if projection == "gated-gelu" else parts[-1]
        values.setdefault("dense_act_fn", derived_act)
        values.setdefault("is_gated_act", parts[0] == "gated")
        if isinstance(values.get("eos_token_id"), list):  # some configs list several; unused here
            values["eos_token_id"] = values["eos_token_id"][0]
        for optional_id in ("pad_token_id", "eos_token_id"):
            if values.get(optional_id, 0) is None:
                values.pop(optional_id)
        return cls(**values)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "T5Config":
        return cls.from_dict(read_json(path, "T5 config", "a Hugging Face T5 folder has config.json"))


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """Bidirectional T5 buckets: LongTensor[...] (key - query) -> LongTensor[...] in [0, num_buckets).

    Half the buckets serve keys after the query. Within a direction, distances below a quarter of
    num_buckets get one bucket each; longer ones share log-spaced buckets, the last of which
    collects everything from max_distance on.
    """
    per_direction = num_buckets // 2
    exact = per_direction // 2
    direction_offset = (relative_position > 0).to(torch.long) * per_direction
    distance = relative_position.abs()
    # The float32 log and truncation below follow transformers' order of operations, so bucket
    # edges fall on the same distances.
    log_ratio = torch.log(distance.float() / exact) / math.log(max_distance / exact)
    log_bucket = exact + (log_ratio * (per_direction - exact)).to(torch.long)
    log_bucket = log_bucket.clamp(max=per_direction - 1)
    return direction_offset + torch.where(distance < exact, distance, log_bucket)


def _clamp_float16_overflow(hidden: torch.Tensor) -> torch.Tensor:
    # In float16, T5 residual streams can overflow; transformers clips them just below the
    # largest finite value (further below when an inf already appeared). Mirrored for parity.
    if hidden.dtype != torch.float16:
        return hidden
    largest = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(hidden).any(), largest - 1000, largest)
    return torch.clamp(hidden, min=-limit, max=limit)


class T5LayerNorm(nn.Module):
    """RMS norm (no mean subtraction, no bias), statistics in float32: Tensor[..., D] -> Tensor[..., D]."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.float().pow(2).mean(-1, keepdim=True)
        normed = x * torch.rsqrt(mean_square + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            normed = normed.to(self.weight.dtype)
        return self.weight * normed


class T5SelfAttention(nn.Module):
    """Multi-head self-attention without logit scaling; positions come in as an additive bias.

    Only the first block owns `relative_attention_bias` (a table [num_buckets, num_heads]).
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, num_buckets: int | None = None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.q = nn.Linear(dim, inner, bias=False)
        self.k = nn.Linear(dim, inner, bias=False)
        self.v = nn.Linear(dim, inner, bias=False)
        self.o = nn.Linear(inner, dim, bias=False)
        if num_buckets is not None:
            self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        """x Tensor[B, L, D], attention_bias Tensor[B, H, L, L] (position bias + mask) -> Tensor[B, L, D]."""
        batch, length, _ = x.shape

        def heads(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        # T5 adds its position bias to the logits and does not scale them by 1/sqrt(d).
        out = attention(heads(self.q), heads(self.k), heads(self.v), mask=attention_bias, scale=1.0)
        return self.o(out.transpose(1, 2).reshape(batch, length, -1))


class T5ReluFeedForward(nn.Module):
    """x -> wo(act(wi x)), the original T5's feed-forward: Tensor[..., D] -> Tensor[..., D]."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "relu"):
        super().__init__()
        self.wi = nn.Linear(dim, hidden_dim, bias=False)
        self.wo = nn.Linear(hidden_dim, dim, bias=False)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(self.wi(x))
        return self.wo(hidden.to(self.wo.weight.dtype))


class T5GatedFeedForward(nn.Module):
    """x -> wo(act(wi_0 x) * wi_1 x), T5 v1.1 / Flan-T5's feed-forward: Tensor[..., D] -> Tensor[..., D]."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu_new"):
        super().__init__()
        self.wi_0 = nn.Linear(dim, hidden_dim, bias=False)
        self.wi_1 = nn.Linear(dim, hidden_dim, bias=False)
        self.wo = nn.Linear(hidden_dim, dim, bias=False)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(self.wi_0(x)) * self.wi_1(x)
        return self.wo(hidden.to(self.wo.weight.dtype))


class T5AttentionSublayer(nn.Module):
    """x + SelfAttention(layer_norm(x)). Attribute names give HF's `layer.0.*` keys."""

    def __init__(self, config: T5Config, has_position_bias: bool):
        super().__init__()
        self.SelfAttention = T5SelfAttention(
            config.d_model, config.num_heads, config.d_kv,
            num_buckets=config.relative_attention_num_buckets if has_position_bias else None,
        )
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), attention_bias)


class T5FeedForwardSublayer(nn.Module):
    """x + DenseReluDense(layer_norm(x)). Attribute names give HF's `layer.1.*` keys."""

    def __init__(self, config: T5Config):
        super().__init__()
        feed_forward = T5GatedFeedForward if config.is_gated_act else T5ReluFeedForward
        self.DenseReluDense = feed_forward(config.d_model, config.d_ff, config.dense_act_fn)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5EncoderBlock(nn.Module):
    def __init__(self, config: T5Config, has_position_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList(
            [T5AttentionSublayer(config, has_position_bias), T5FeedForwardSublayer(config)]
        )

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        x = _clamp_float16_overflow(self.layer[0](x, attention_bias))
        return _clamp_float16_overflow(self.layer[1](x))


class T5EncoderStack(nn.Module):
    """Embedding -> blocks -> final RMS norm, holding the keys under `encoder.`."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.block = nn.ModuleList([T5EncoderBlock(config, i == 0) for i in range(config.num_layers)])
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance

    def attention_bias(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """BoolTensor[B, L] (True = token) -> Tensor[B, H, L, L]: position bias, masked keys at dtype's min."""
        length = attention_mask.shape[1]
        positions = torch.arange(length, device=attention_mask.device)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None], self.num_buckets, self.max_distance
        )
        table = self.block[0].layer[0].SelfAttention.relative_attention_bias
        position_bias = table(buckets).permute(2, 0, 1).unsqueeze(0).to(dtype)  # [1, H, L, L]
        # The dtype's most negative finite value (not -inf), as transformers uses.
        keys_visible = attention_mask[:, None, None, :]
        return torch.where(keys_visible, position_bias, torch.finfo(dtype).min).contiguous()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)
        attention_bias = self.attention_bias(attention_mask, hidden.dtype)
        for block in self.block:
            hidden = block(hidden, attention_bias)
        return self.final_layer_norm(hidden)


class T5Encoder(nn.Module):
    """Hugging Face T5EncoderModel: token ids -> last_hidden_state.

    State-dict keys are HF's: `shared.weight` (also reachable as `encoder.embed_tokens.weight`,
    the same table), `encoder.block.{i}.layer.{0,1}.*`, `encoder.final_layer_norm.weight`.
    """

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5EncoderStack(config, self.shared)

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> "T5Encoder":
        return cls(T5Config.from_dict(raw))

    @property
    def dim(self) -> int:
        return self.config.d_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids LongTensor[B, L], attention_mask Bool/0-1 Tensor[B, L] -> last_hidden_state Tensor[B, L, D]."""
        return self.encoder(input_ids, token_mask(input_ids, attention_mask))

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> "T5Encoder":
        """Build from a Hugging Face T5 folder: config.json + model.safetensors (or sharded with
        model.safetensors.index.json). Only safetensors are read; decoder / lm_head weights of a
        full T5 checkpoint are skipped. Returns the model in eval mode on `device` in `dtype`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"T5 folder {folder} not found")
        config = T5Config.from_json_file(folder / CONFIG_FILE)
        with torch.device("meta"):
            model = cls(config)
        state = read_weights(weight_files(folder), model.state_dict(), dtype, "T5 checkpoint",
                             skip=lambda key: key.startswith(IGNORED_KEY_PREFIXES), tied=EMBEDDING_KEYS)
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(device).eval()

