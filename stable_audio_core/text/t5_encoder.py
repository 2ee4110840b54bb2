"""Prompt -> T5 token features, as stable-audio-tools' T5 conditioner computes them before proj_out.

Tokenize with padding to `max_length` (Stable Audio Open 1.0: t5-base, 128), run the frozen
encoder, zero the features of padded positions. Not an nn.Module on purpose: like the
reference, the T5 weights live in their own Hugging Face folder, never in a model checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..models.t5 import T5Encoder
from .tokenizer import TextTokenizer


class T5TextEncoder:
    """A tokenizer and a frozen T5 encoder; `encode(texts)` -> (features [B, L, D], mask [B, L])."""

    def __init__(self, tokenizer: TextTokenizer, model: T5Encoder, max_length: int = 128):
        if not isinstance(max_length, int) or max_length < 1:
            raise InputError(f"max_length must be a positive int, got {max_length!r}")
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        max_length: int = 128,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> "T5TextEncoder":
        """Load a Hugging Face T5 folder (config.json, safetensors, tokenizer.json).

        The pad token comes from the tokenizer files, else config.json's pad_token_id.
        """
        model = T5Encoder.from_pretrained(folder, dtype=dtype, device=device)
        tokenizer = TextTokenizer.from_folder(folder, default_pad_token_id=model.config.pad_token_id)
        return cls(tokenizer, model, max_length)

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "T5TextEncoder":
        self.model.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """list[str] (B) -> (features Tensor[B, max_length, D] in the model dtype, zero where
        padded; mask BoolTensor[B, max_length], True = real token), both on the model's device."""
        input_ids, mask = self.tokenizer(texts, self.max_length)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        features = self.model(input_ids, mask)
        return features * mask.unsqueeze(-1).to(features.dtype), mask
