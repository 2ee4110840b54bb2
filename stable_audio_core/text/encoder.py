"""What the frozen text encoders share: a tokenizer padding and truncating to `max_length`, a
text model in eval mode without gradients, and loading both from one Hugging Face folder.

Not an nn.Module on purpose: like the reference, the encoder weights live in their own folder,
never in a model checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .tokenizer import TextTokenizer


class FrozenTextEncoder:
    """A tokenizer and a frozen text model. A subclass says how its model loads from a folder
    (`load_model`), how long its token sequences are by default and what it returns."""

    default_max_length: int

    def __init__(self, tokenizer: TextTokenizer, model: nn.Module, max_length: int):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length

    @classmethod
    def load_model(cls, folder: str | Path, dtype: torch.dtype, device: torch.device | str) -> nn.Module:
        """The folder's text model (with a `config.pad_token_id`), in `dtype` on `device`."""
        raise NotImplementedError

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        max_length: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> "FrozenTextEncoder":
        """Load a Hugging Face folder (config.json, safetensors, tokenizer.json). The pad token
        comes from the tokenizer files, else config.json's pad_token_id."""
        model = cls.load_model(folder, dtype, device)
        tokenizer = TextTokenizer.from_folder(folder, default_pad_token_id=model.config.pad_token_id)
        return cls(tokenizer, model, cls.default_max_length if max_length is None else max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "FrozenTextEncoder":
        self.model.to(device=device, dtype=dtype)
        return self

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """list[str] (B) -> (input_ids LongTensor[B, max_length], mask BoolTensor[B, max_length],
        True = real token), on the model's device."""
        input_ids, mask = self.tokenizer(texts, self.max_length)
        return input_ids.to(self.device), mask.to(self.device)
