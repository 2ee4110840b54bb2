"""Prompt -> T5 token features, as stable-audio-tools' T5 conditioner computes them before proj_out.

Tokenize with padding to `max_length` (Stable Audio Open 1.0: t5-base, 128), run the frozen
encoder, zero the features of padded positions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from .t5 import T5Encoder
from .encoder import FrozenTextEncoder
from .tokenizer import TextTokenizer


class T5TextEncoder(FrozenTextEncoder):
    """A tokenizer and a frozen T5 encoder; `encode(texts)` -> (features [B, L, D], mask [B, L])."""

    default_max_length = 128

    def __init__(self, tokenizer: TextTokenizer, model: T5Encoder, max_length: int = 128):
        if not isinstance(max_length, int) or max_length < 1:
            raise InputError(f"max_length must be a positive int, got {max_length!r}")
        super().__init__(tokenizer, model, max_length)

    @classmethod
    def load_model(cls, folder: str | Path, dtype: torch.dtype, device: torch.device | str) -> T5Encoder:
        return T5Encoder.from_pretrained(folder, dtype=dtype, device=device)

    @property
    def dim(self) -> int:
        return self.model.dim

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """list[str] (B) -> (features Tensor[B, max_length, D] in the model dtype, zero where
        padded; mask BoolTensor[B, max_length], True = real token), both on the model's device."""
        input_ids, mask = self.tokenize(texts)
        features = self.model(input_ids, mask)
        return features * mask.unsqueeze(-1).to(features.dtype), mask
