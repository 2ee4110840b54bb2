"""The settings of a Hugging Face CLAP folder's `config.json`: text tower, audio tower, joint space.

Defaults are transformers' (`ClapTextConfig`, `ClapAudioConfig`, `ClapConfig`), i.e. the
laion/clap-htsat-* models: RoBERTa-base text tower, HTSAT-tiny audio tower, 512-wide joint space.
Keys that do not change what the model computes (dropout, initialisation, generation defaults,
transformers' bookkeeping) are ignored; any other unknown key is a ConfigError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .hf_folder import ACTIVATIONS, IGNORED_CONFIG_KEYS, check_keys, check_positive_int, read_json

# Written by transformers into CLAP configs; none of them changes inference.
_CLAP_IGNORED_KEYS = {
    "_commit_hash", "_attn_implementation_autoset", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "initializer_factor", "initializer_range", "use_cache", "drop_path_rate", "num_classes",
    "logit_scale_init_value", "fusion_num_hidden_layers", "fusion_hidden_size",
    "eos_token_id", "pad_token_id", "is_decoder",  # generic keys T5's list reads itself
}
# Derived from the other audio settings; read only to check them.
_AUDIO_DERIVED_KEYS = {"hidden_size", "num_hidden_layers"}
_FUSION_TYPES = (None, "aff_2d")  # transformers builds the same 2D attentional fusion for both


def _activation(value: Any, name: str, what: str) -> None:
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise ConfigError(f"{what} '{name}' is {value!r}; supported activations: {sorted(ACTIVATIONS)}")


def _known_values(raw: Any, cls: type, expected_model_type: str, what: str,
                  extra_ignored: set[str] = frozenset()) -> dict[str, Any]:
    """A config.json section (None: absent) -> the values of `cls`'s fields."""
    if raw is None:
        return {}
    return check_keys(raw, {f.name for f in fields(cls)}, what,
                      IGNORED_CONFIG_KEYS | _CLAP_IGNORED_KEYS | extra_ignored,
                      kind=("model_type", expected_model_type))


@dataclass(frozen=True)
class ClapTextConfig:
    """RoBERTa text tower + projection (`text_config`); defaults are roberta-base's."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    projection_dim: int = 512
    projection_hidden_act: str = "relu"
    position_embedding_type: str = "absolute"

    def __post_init__(self) -> None:
        what = "CLAP text config"
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "projection_dim"):
            check_positive_int(getattr(self, name), name, what)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{what}: hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )
        _activation(self.hidden_act, "hidden_act", what)
        _activation(self.projection_hidden_act, "projection_hidden_act", what)
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"{what}: pad_token_id must be a token id below vocab_size, got {self.pad_token_id!r}")
        if self.max_position_embeddings <= self.pad_token_id + 1:
            raise ConfigError(
                f"{what}: max_position_embeddings {self.max_position_embeddings} leaves no position "
                f"after the padding offset pad_token_id + 1 = {self.pad_token_id + 1}"
            )
        if self.position_embedding_type != "absolute":
            raise ConfigError(
                f"{what}: position_embedding_type {self.position_embedding_type!r} is not supported; "
                "CLAP checkpoints use 'absolute'"
            )
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"{what}: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")

    @property
    def max_text_length(self) -> int:
        """The longest token sequence the position table covers (RoBERTa: 514 - 2 = 512)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "ClapTextConfig":
        values = _known_values(raw, cls, "clap_text_model", "CLAP text_config")
        for optional in ("pad_token_id",):
            if optional in values and values[optional] is None:
                values.pop(optional)
        return cls(**values)


@dataclass(frozen=True)
class ClapAudioConfig:
    """HTSAT audio tower (a Swin transformer over the log-mel image) + projection (`audio_config`).

    The audio tower has `len(depths)` stages; stage i has width patch_embeds_hidden_size * 2^i
    and works on a grid (spec_size / patch_stride) / 2^i tokens wide.
    """

    window_size: int = 8
    num_mel_bins: int = 64
    spec_size: int = 256
    hidden_act: str = "gelu"
    patch_size: int | tuple[int, int] = 4
    patch_stride: int | tuple[int, int] = (4, 4)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_attention_heads: tuple[int, ...] = (4, 8, 16, 32)
    enable_fusion: bool = False
    fusion_type: str | None = None
    patch_embed_input_channels: int = 1
    flatten_patch_embeds: bool = True
    patch_embeds_hidden_size: int = 96
    enable_patch_layer_norm: bool = True
    qkv_bias: bool = True
    mlp_ratio: float = 4.0
    aff_block_r: int = 4
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512
    projection_hidden_act: str = "relu"

    def __post_init__(self) -> None:
        what = "CLAP audio config"
        # JSON gives lists; keep hashable tuples and (height, width) pairs.
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_attention_heads", tuple(self.num_attention_heads))
        object.__setattr__(self, "patch_size", _pair(self.patch_size, "patch_size", what))
        object.__setattr__(self, "patch_stride", _pair(self.patch_stride, "patch_stride", what))
        for name in ("window_size", "num_mel_bins", "spec_size", "patch_embed_input_channels",
                     "patch_embeds_hidden_size", "aff_block_r", "projection_dim"):
            check_positive_int(getattr(self, name), name, what)
        if not self.depths or len(self.depths) != len(self.num_attention_heads):
            raise ConfigError(
                f"{what}: depths {list(self.depths)} and num_attention_heads "
                f"{list(self.num_attention_heads)} must be non-empty and of equal length (one per stage)"
            )
        for stage, (depth, heads) in enumerate(zip(self.depths, self.num_attention_heads)):
            check_positive_int(depth, f"depths[{stage}]", what)
            check_positive_int(heads, f"num_attention_heads[{stage}]", what)
            if self.stage_dim(stage) % heads:
                raise ConfigError(
                    f"{what}: stage {stage} is {self.stage_dim(stage)} wide, not a multiple of its "
                    f"{heads} attention heads"
                )
        _activation(self.hidden_act, "hidden_act", what)
        _activation(self.projection_hidden_act, "projection_hidden_act", what)
        if self.spec_size % self.num_mel_bins:
            raise ConfigError(
                f"{what}: spec_size {self.spec_size} must be a multiple of num_mel_bins {self.num_mel_bins} "
                "(the spectrogram is folded into a square image of side spec_size)"
            )
        if not self.flatten_patch_embeds:
            raise ConfigError(f"{what}: flatten_patch_embeds=false is not supported")
        if self.fusion_type not in _FUSION_TYPES:
            raise ConfigError(
                f"{what}: fusion_type {self.fusion_type!r} is not supported; supported: {list(_FUSION_TYPES)}"
            )
        if self.enable_fusion and self.patch_embed_input_channels != 1:
            raise ConfigError(f"{what}: fusion needs patch_embed_input_channels = 1")
        grid = self.grid_size
        if grid[0] != grid[1]:
            raise ConfigError(f"{what}: patch_stride {self.patch_stride} must be square")
        last = len(self.depths) - 1
        if grid[0] % (2 ** last) or grid[0] // (2 ** last) < self.window_size:
            raise ConfigError(
                f"{what}: the {grid[0]} x {grid[1]} patch grid must halve {last} times and stay at "
                f"least window_size ({self.window_size}) wide"
            )
        if not self.layer_norm_eps > 0 or not self.mlp_ratio > 0:
            raise ConfigError(f"{what}: layer_norm_eps and mlp_ratio must be > 0")

    def stage_dim(self, stage: int) -> int:
        return self.patch_embeds_hidden_size * 2 ** stage

    @property
    def hidden_size(self) -> int:
        """Width of the last stage, the pooled audio feature."""
        return self.stage_dim(len(self.depths) - 1)

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.spec_size // self.patch_stride[0], self.spec_size // self.patch_stride[1])

    @property
    def freq_ratio(self) -> int:
        """How many time slices of the spectrogram are stacked along frequency to make it square."""
        return self.spec_size // self.num_mel_bins

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "ClapAudioConfig":
        values = _known_values(raw, cls, "clap_audio_model", "CLAP audio_config", _AUDIO_DERIVED_KEYS)
        config = cls(**values)
        stated = (raw or {}).get("hidden_size")
        if stated is not None and stated != config.hidden_size:
            raise ConfigError(
                f"CLAP audio_config hidden_size {stated} disagrees with patch_embeds_hidden_size x "
                f"2^(stages - 1) = {config.hidden_size}"
            )
        return config


def _pair(value: Any, name: str, what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ConfigError(f"{what} '{name}' must be an int or a pair, got {value!r}")
    for item in pair:
        check_positive_int(item, name, what)
    return pair


@dataclass(frozen=True)
class ClapConfig:
    """A whole CLAP model: both towers and the joint embedding space they project into."""

    text: ClapTextConfig = field(default_factory=ClapTextConfig)
    audio: ClapAudioConfig = field(default_factory=ClapAudioConfig)

    @property
    def projection_dim(self) -> int:
        return self.text.projection_dim

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ClapConfig":
        """config.json dict -> ClapConfig. As in transformers, the top-level projection_dim and
        projection_hidden_act (default 512, "relu") override the towers' own values."""
        top_level = {"text_config", "audio_config", "projection_dim", "projection_hidden_act",
                     "hidden_size", "num_hidden_layers"}
        check_keys(raw, top_level, "CLAP config",
                   IGNORED_CONFIG_KEYS | _CLAP_IGNORED_KEYS,
                   kind=("model_type", "clap"))
        # transformers' ClapConfig overrides with its own defaults too when config.json omits them.
        joint = {"projection_dim": raw.get("projection_dim", 512),
                 "projection_hidden_act": raw.get("projection_hidden_act", "relu")}
        text = dict(raw.get("text_config") or {}, **joint)
        audio = dict(raw.get("audio_config") or {}, **joint)
        return cls(text=ClapTextConfig.from_dict(text), audio=ClapAudioConfig.from_dict(audio))

    @classmethod
    def from_json_file(cls, path: str | Path) -> "ClapConfig":
        return cls.from_dict(read_json(path, "CLAP config", "a Hugging Face CLAP folder has config.json"))
