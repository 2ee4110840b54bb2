"""The Stable Audio 3 duration conditioner (stable-audio-3's `NumberConditioner`, expo features).

seconds_total is clamped to [min_val, max_val] (0..384 s in the released models), scaled to
[0, 1], mapped to exponential Fourier features and projected to the conditioning width. The one
token it gives is both the last cross-attention token and the global conditioning of the DiT.
Keys as in a checkpoint's `conditioner.conditioners.seconds_total.*`: `embedder.embedding.1.*`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError
from .sa3_dit import TIMESTEP_FEATURES, ExpoFourierFeatures

FOURIER_FEATURES_TYPES = ("expo",)
_CONFIG_KEYS = {"output_dim", "min_val", "max_val", "fourier_features_type"}


class ExpoNumberEmbedder(nn.Module):
    """Tensor[B] in [0, 1] -> Tensor[B, features]: Fourier features, then a linear map."""

    def __init__(self, features: int, fourier_dim: int = TIMESTEP_FEATURES):
        super().__init__()
        self.embedding = nn.Sequential(ExpoFourierFeatures(fourier_dim), nn.Linear(fourier_dim, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class ExpoNumberConditioner(nn.Module):
    """A number per item (seconds_total) -> (tokens Tensor[B, 1, D], mask Tensor[B, 1] of ones)."""

    def __init__(self, output_dim: int, min_val: float = 0.0, max_val: float = 1.0):
        super().__init__()
        if max_val <= min_val:
            raise ConfigError(f"number conditioner needs max_val > min_val, got {min_val}..{max_val}")
        self.min_val, self.max_val = float(min_val), float(max_val)
        self.embedder = ExpoNumberEmbedder(output_dim)

    @classmethod
    def from_config(cls, config: dict, where: str = "conditioner config") -> "ExpoNumberConditioner":
        """Build from a `number` conditioner's config (with `output_dim` = the conditioning's cond_dim)."""
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed keys are {sorted(_CONFIG_KEYS)}")
        kind = config.get("fourier_features_type", "learned")
        if kind not in FOURIER_FEATURES_TYPES:
            raise ConfigError(f"{where}: fourier_features_type {kind!r} is not handled here; "
                              f"use one of {FOURIER_FEATURES_TYPES}")
        if "output_dim" not in config:
            raise ConfigError(f"{where} needs output_dim (the conditioning's cond_dim)")
        return cls(int(config["output_dim"]), config.get("min_val", 0.0), config.get("max_val", 1.0))

    def forward(self, values: list[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            numbers = torch.tensor([float(v) for v in values]).to(device)
        except (TypeError, ValueError) as exc:
            raise InputError(f"number conditioner expects numbers, got {values!r}") from exc
        numbers = numbers.clamp(self.min_val, self.max_val)
        normalized = (numbers - self.min_val) / (self.max_val - self.min_val)
        dtype = self.embedder.embedding[1].weight.dtype
        tokens = self.embedder(normalized.to(dtype)).unsqueeze(1)
        return tokens, torch.ones(tokens.shape[0], 1, device=device)
