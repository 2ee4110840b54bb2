"""Conditioners: turn metadata (prompt, seconds_start, seconds_total, ...) into token tensors.

Each conditioner maps a list of per-item values to `(tokens [B, N, D], mask [B, N])`, with the
state-dict layout of stable-audio-tools (`conditioner.conditioners.<id>.*` in a checkpoint).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..config import ConditionerSpec, check_keys
from ..errors import ConfigError, InputError

Conditioning = dict[str, tuple[torch.Tensor, torch.Tensor]]


class LearnedFourierFeatures(nn.Module):
    """x -> [x, sin(2 pi w x), cos(2 pi w x)] with learned frequencies w (paper sec. 3.2 timing)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"learned Fourier feature width must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B] -> Tensor[B, dim + 1]"""
        x = x[:, None]
        angles = x * self.weights[None, :] * (2 * math.pi)
        return torch.cat([x, angles.sin(), angles.cos()], dim=-1)


class NumberEmbedder(nn.Module):
    def __init__(self, features: int, fourier_dim: int = 256):
        super().__init__()
        self.embedding = nn.Sequential(
            LearnedFourierFeatures(fourier_dim), nn.Linear(fourier_dim + 1, features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class NumberConditioner(nn.Module):
    """A float (e.g. seconds_total), clamped to [min_val, max_val], normalised to [0, 1], embedded."""

    def __init__(self, output_dim: int, min_val: float = 0.0, max_val: float = 1.0):
        super().__init__()
        if max_val <= min_val:
            raise ConfigError(f"number conditioner needs max_val > min_val, got {min_val}..{max_val}")
        self.min_val, self.max_val = float(min_val), float(max_val)
        self.embedder = NumberEmbedder(output_dim)

    def forward(self, values: list[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            floats = torch.tensor([float(v) for v in values], device=device)
        except (TypeError, ValueError) as exc:
            raise InputError(f"number conditioner expects numbers, got {values!r}") from exc
        floats = floats.clamp(self.min_val, self.max_val)
        normalized = (floats - self.min_val) / (self.max_val - self.min_val)
        dtype = self.embedder.embedding[1].weight.dtype
        tokens = self.embedder(normalized.to(dtype)).unsqueeze(1)
        return tokens, torch.ones(tokens.shape[0], 1, device=device)


class IntConditioner(nn.Module):
    """An integer (e.g. whole seconds) looked up in a learned table: the paper's per-second embedding."""

    def __init__(self, output_dim: int, min_val: int = 0, max_val: int = 512):
        super().__init__()
        self.min_val, self.max_val = int(min_val), int(max_val)
        self.int_embedder = nn.Embedding(self.max_val - self.min_val + 1, output_dim)

    def forward(self, values: list[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ints = torch.tensor([int(v) for v in values], device=device)
        except (TypeError, ValueError) as exc:
            raise InputError(f"int conditioner expects integers, got {values!r}") from exc
        # The reference indexes the table with the clamped value itself (no min_val offset).
        tokens = self.int_embedder(ints.clamp(self.min_val, self.max_val)).unsqueeze(1)
        return tokens, torch.ones(tokens.shape[0], 1, device=device)


class TextConditioner(nn.Module):
    """Text through a frozen encoder attached after construction, then `proj_out`.

    The encoder's weights live in their own Hugging Face folder, never in a stable-audio-tools
    checkpoint: only `proj_out` is (a Linear when the encoder's `width` differs from the
    model's conditioning width or project_out is set, else an Identity). A subclass names its
    encoder and says how wide an attached one is and how it turns texts into tokens.
    """

    # stable-audio-tools' T5 conditioner zeroes the padded tokens after the projection; its CLAP
    # conditioner keeps what the encoder left there.
    zero_padding = False

    def __init__(self, output_dim: int, width: int, project_out: bool):
        super().__init__()
        self.width = width
        self.proj_out = nn.Linear(width, output_dim) if (width != output_dim or project_out) else nn.Identity()
        self.text_encoder = None  # set by attach_text_encoder; kept out of the state dict

    def encoder_width(self, encoder) -> int:
        """How wide the tokens of `encoder` are, to compare with `width`."""
        raise NotImplementedError

    def width_error(self, width: int) -> Exception:
        """The error for an encoder `width` wide where `self.width` is expected."""
        raise NotImplementedError

    def missing_encoder_error(self) -> Exception:
        """The error for a forward call before an encoder was attached."""
        raise NotImplementedError

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (tokens Tensor[B, N, width], mask [B, N]) from the attached encoder."""
        raise NotImplementedError

    def attach_text_encoder(self, encoder) -> None:
        """Attach a text encoder (stable_audio_core.text); it is not a submodule."""
        width = self.encoder_width(encoder)
        if width != self.width:
            raise self.width_error(width)
        self.__dict__["text_encoder"] = encoder

    def forward(self, texts: list[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_encoder is None:
            raise self.missing_encoder_error()
        tokens, mask = self.encode(["" if t is None else str(t) for t in texts])
        tokens, mask = tokens.to(device), mask.to(device)
        if not isinstance(self.proj_out, nn.Identity):
            tokens = self.proj_out(tokens.to(self.proj_out.weight.dtype))
        if self.zero_padding:
            tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return tokens, mask


# What the error for a missing text encoder tells the user to pass.
_ENCODER_FOLDER_HINT = "(config.json, *.safetensors, tokenizer.json) as text_encoder / --text-encoder"


class T5Conditioner(TextConditioner):
    """Text through a frozen T5 encoder (`T5TextEncoder`, stable_audio_core.text.t5_encoder).

    The width comes from the T5's name; a local or custom T5 (a path as name) must be as wide as
    the conditioning, checked when the encoder is attached.
    """

    T5_WIDTHS = {
        "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
        "google/t5-v1_1-xl": 2048, "google/t5-v1_1-xxl": 4096, "google/flan-t5-small": 512,
        "google/flan-t5-base": 768, "google/flan-t5-large": 1024, "google/flan-t5-3b": 1024,
        "google/flan-t5-11b": 1024, "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096,
    }
    zero_padding = True

    def __init__(self, output_dim: int, t5_model_name: str = "t5-base", max_length: int = 128,
                 enable_grad: bool = False, project_out: bool = False):
        width = self.T5_WIDTHS.get(t5_model_name)
        if width is None:
            # The projection's shape cannot be known before the encoder is attached.
            if project_out:
                raise ConfigError(
                    f"t5 conditioner: t5_model_name '{t5_model_name}' is not a known T5 "
                    f"({sorted(self.T5_WIDTHS)}), so project_out cannot be sized; use a known name"
                )
            width = output_dim
        if enable_grad:
            raise ConfigError("t5 conditioner: enable_grad=true (fine-tuning T5) is not supported")
        super().__init__(output_dim, width, project_out)
        self.t5_model_name = t5_model_name
        self.max_length = int(max_length)

    def encoder_width(self, encoder) -> int:
        return encoder.dim

    def width_error(self, width: int) -> Exception:
        return ConfigError(
            f"the T5 encoder is {width} wide but this model's text conditioner expects "
            f"{self.width} ({self.t5_model_name}); pass the matching T5 folder"
        )

    def missing_encoder_error(self) -> Exception:
        return InputError(
            f"this model's text conditioner needs a T5 encoder ({self.t5_model_name}); pass the "
            f"folder of a local Hugging Face T5 model {_ENCODER_FOLDER_HINT}"
        )

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder.encode(texts)


class CLAPTextConditioner(TextConditioner):
    """Text through a frozen CLAP text tower (`ClapTextEncoder`, stable_audio_core.text.clap_encoder).

    With use_text_features, the tokens are one hidden layer of the text encoder (feature_layer_ix,
    -2 = penultimate; 77 tokens, padded positions kept as the encoder left them, as the reference
    does) and the mask marks real tokens. Otherwise a single token: the L2-normalised joint-space
    text embedding. The reference's clap_ckpt_path (a laion-clap file) is accepted but the
    weights come from the attached encoder. The reference fixes the widths at 768 (roberta-base)
    and 512 (joint space); the config keys `text_width` / `embedding_dim` (this project's
    extension, absent from stable-audio-tools configs) declare other CLAP sizes, such as the
    bundled default model's.
    """

    def __init__(self, output_dim: int, clap_ckpt_path: str | None = None, use_text_features: bool = False,
                 feature_layer_ix: int = -1, audio_model_type: str = "HTSAT-base", enable_fusion: bool = True,
                 project_out: bool = False, finetune: bool = False, *, text_width: int = 768,
                 embedding_dim: int = 512):
        if finetune:
            raise ConfigError("clap_text conditioner: finetune=true (training CLAP) is not supported")
        if not isinstance(feature_layer_ix, int) or isinstance(feature_layer_ix, bool):
            raise ConfigError(f"clap_text conditioner: feature_layer_ix must be an int, got {feature_layer_ix!r}")
        super().__init__(output_dim, text_width if use_text_features else embedding_dim, project_out)
        self.clap_ckpt_path = clap_ckpt_path
        self.use_text_features = bool(use_text_features)
        self.feature_layer_ix = feature_layer_ix

    def encoder_width(self, encoder) -> int:
        return encoder.hidden_size if self.use_text_features else encoder.projection_dim

    def width_error(self, width: int) -> Exception:
        what = "hidden size" if self.use_text_features else "projection dim"
        return InputError(
            f"the CLAP text encoder's {what} is {width}, but this clap_text conditioner expects "
            f"{self.width}; use the CLAP model the diffusion checkpoint was trained with"
        )

    def missing_encoder_error(self) -> Exception:
        return InputError(
            "this model's text conditioner needs a CLAP text encoder; pass the folder of a local "
            f"Hugging Face CLAP model {_ENCODER_FOLDER_HINT}"
        )

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_text_features:
            return self.text_encoder.encode(texts, layer_ix=self.feature_layer_ix)
        tokens = self.text_encoder.embed(texts).unsqueeze(1)
        return tokens, torch.ones(tokens.shape[0], 1)


PADDING_MODES = ("learned", "zero", "none")


class T5GemmaConditioner(TextConditioner):
    """Text through a frozen T5Gemma encoder (`T5GemmaTextEncoder`, stable_audio_core.text), as
    Stable Audio 3's conditioner: the encoder's last_hidden_state, `proj_out`, then the padded
    positions replaced by a learned `padding_embedding` ("learned"), zeroed ("zero") or kept
    ("none"). Returns (tokens [B, max_length, output_dim], mask [B, max_length] bool).

    The encoder comes from `model_path` (a local Hugging Face folder; a relative path is read
    against the model config's folder) or from the folder passed to `load_model`.
    """

    T5GEMMA_WIDTHS = {"google/t5gemma-b-b-ul2": 768}

    def __init__(self, output_dim: int, model_name: str = "google/t5gemma-b-b-ul2", max_length: int = 128,
                 enable_grad: bool = False, project_out: bool = False, padding_mode: str = "zero",
                 model_path: str | None = None, repo_id: str | None = None, subfolder: str | None = None):
        if model_name not in self.T5GEMMA_WIDTHS:
            raise ConfigError(f"t5gemma conditioner: model_name {model_name!r} is not one of "
                              f"{sorted(self.T5GEMMA_WIDTHS)}")
        if enable_grad:
            raise ConfigError("t5gemma conditioner: enable_grad=true (fine-tuning T5Gemma) is not supported")
        if padding_mode not in PADDING_MODES:
            raise ConfigError(f"t5gemma conditioner: padding_mode {padding_mode!r} is not one of {PADDING_MODES}")
        super().__init__(output_dim, self.T5GEMMA_WIDTHS[model_name], project_out)
        self.model_name = model_name
        self.max_length = int(max_length)
        self.padding_mode = padding_mode
        self.model_path, self.repo_id, self.subfolder = model_path, repo_id, subfolder
        if padding_mode == "learned":
            self.padding_embedding = nn.Parameter(torch.randn(output_dim) * 0.02)

    def encoder_width(self, encoder) -> int:
        return encoder.dim

    def width_error(self, width: int) -> Exception:
        return ConfigError(f"the T5Gemma encoder is {width} wide but this model's text conditioner "
                           f"expects {self.width} ({self.model_name}); pass the matching T5Gemma folder")

    def missing_encoder_error(self) -> Exception:
        return InputError(f"this model's text conditioner needs a T5Gemma encoder ({self.model_name}); "
                          f"pass the folder of a local Hugging Face T5Gemma model (config.json, "
                          f"*.safetensors, tokenizer.json) as text_encoder / --text-encoder, or set "
                          f"the conditioner's model_path")

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder.encode(texts)

    def forward(self, texts: list[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = super().forward(texts, device)
        mask = mask.bool()
        if self.padding_mode == "learned":
            # The stored dtype's tokens (bf16) promote to the embedding's dtype, as in the reference.
            tokens = torch.where(mask[..., None], tokens, self.padding_embedding)
        elif self.padding_mode == "zero":
            tokens = tokens * mask[..., None].to(tokens.dtype)
        return tokens, mask


def build_number_conditioner(output_dim: int, min_val: float = 0.0, max_val: float = 1.0,
                             fourier_features_type: str = "learned") -> nn.Module:
    """`number`: learned Fourier features (stable-audio-tools) or exponential ones (Stable Audio 3)."""
    if fourier_features_type == "expo":
        from .sa3_conditioning import ExpoNumberConditioner
        return ExpoNumberConditioner(output_dim, min_val, max_val)
    if fourier_features_type != "learned":
        raise ConfigError(f"number conditioner: fourier_features_type {fourier_features_type!r} is not "
                          f"one of ['learned', 'expo']")
    return NumberConditioner(output_dim, min_val, max_val)


CONDITIONER_TYPES: dict[str, Callable[..., nn.Module]] = {
    "number": build_number_conditioner,
    "t5gemma": T5GemmaConditioner,
    "int": IntConditioner,
    "t5": T5Conditioner,
    "clap_text": CLAPTextConditioner,
}

_CONDITIONER_ARGS = {
    "number": {"min_val", "max_val", "fourier_features_type"},
    "t5gemma": {"model_name", "max_length", "enable_grad", "project_out", "padding_mode", "model_path",
                "repo_id", "subfolder"},
    "int": {"min_val", "max_val"},
    "t5": {"t5_model_name", "max_length", "enable_grad", "project_out"},
    "clap_text": {"clap_ckpt_path", "use_text_features", "feature_layer_ix", "audio_model_type",
                  "enable_fusion", "project_out", "finetune", "text_width", "embedding_dim"},
}


def build_conditioner(spec: ConditionerSpec, cond_dim: int) -> nn.Module:
    if spec.type not in CONDITIONER_TYPES:
        raise ConfigError(
            f"conditioner '{spec.id}' has unknown type '{spec.type}'; supported: {sorted(CONDITIONER_TYPES)}"
        )
    check_keys(spec.config, _CONDITIONER_ARGS[spec.type] | {"output_dim"},
               f"the config of conditioner '{spec.id}' ({spec.type})")
    kwargs = {"output_dim": cond_dim, **spec.config}
    return CONDITIONER_TYPES[spec.type](**kwargs)


class MultiConditioner(nn.Module):
    """Runs every conditioner over a batch of metadata dicts: {id: (tokens, mask)}."""

    def __init__(self, conditioners: dict[str, nn.Module], default_keys: dict[str, str] | None = None):
        super().__init__()
        self.conditioners = nn.ModuleDict(conditioners)
        self.default_keys = dict(default_keys or {})

    @classmethod
    def from_specs(cls, specs, cond_dim: int, default_keys: dict[str, str] | None = None):
        return cls({s.id: build_conditioner(s, cond_dim) for s in specs}, default_keys)

    def forward(self, metadata: list[dict[str, Any]], device: torch.device | str) -> Conditioning:
        if not metadata:
            raise InputError("conditioning needs at least one metadata dict")
        output = {}
        for key, conditioner in self.conditioners.items():
            values = []
            for i, item in enumerate(metadata):
                source = key if key in item else self.default_keys.get(key)
                if source is None or source not in item:
                    raise InputError(
                        f"conditioning item {i} has no value for '{key}' (this model needs "
                        f"{list(self.conditioners)}); got keys {sorted(item)}"
                    )
                value = item[source]
                # Collated batches wrap single values in one-element lists.
                if isinstance(value, (list, tuple)) and len(value) == 1:
                    value = value[0]
                values.append(value)
            output[key] = conditioner(values, device)
        return output
