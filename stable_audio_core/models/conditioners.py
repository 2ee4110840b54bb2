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
from ..text.conditioners import CLAPTextConditioner, T5Conditioner, T5GemmaConditioner

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
