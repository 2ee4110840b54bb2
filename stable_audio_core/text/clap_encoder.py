"""Prompt -> CLAP text features, as stable-audio-tools' CLAP conditioner computes them.

laion-clap tokenizes with its RoBERTa tokenizer, padding and truncating to 77 tokens, and either
takes one hidden layer of the text encoder as token features (the padded positions keep their
encoder outputs: the reference does not zero them) or the L2-normalised joint-space embedding.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..models.clap import ClapModel
from ..models.clap_text import ClapTextModel
from .encoder import FrozenTextEncoder
from .tokenizer import TextTokenizer

CLAP_MAX_LENGTH = 77  # laion-clap's tokenizer setting


class ClapTextEncoder(FrozenTextEncoder):
    """A tokenizer and a frozen CLAP text tower.

    `encode(texts, layer_ix)` -> (hidden states of one layer [B, L, D], mask [B, L]);
    `embed(texts)` -> normalised embeddings [B, P].
    """

    default_max_length = CLAP_MAX_LENGTH

    def __init__(self, tokenizer: TextTokenizer, model: ClapTextModel, max_length: int = CLAP_MAX_LENGTH):
        if not isinstance(max_length, int) or not 1 <= max_length <= model.config.max_text_length:
            raise InputError(
                f"max_length must be an int in 1..{model.config.max_text_length} (the text model's "
                f"positions), got {max_length!r}"
            )
        super().__init__(tokenizer, model, max_length)

    @classmethod
    def load_model(cls, folder: str | Path, dtype: torch.dtype, device: torch.device | str) -> ClapTextModel:
        """The text tower alone; the audio weights in the folder are skipped."""
        return ClapModel.from_pretrained(folder, dtype=dtype, device=device, towers=("text",)).text

    @property
    def hidden_size(self) -> int:
        return self.model.hidden_size

    @property
    def projection_dim(self) -> int:
        return self.model.projection_dim

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def _run(self, texts: list[str]):
        input_ids, mask = self.tokenize(texts)
        return self.model(input_ids, mask), mask

    @torch.no_grad()
    def encode(self, texts: list[str], layer_ix: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """list[str] (B) -> (hidden_states[layer_ix] Tensor[B, max_length, D] in the model dtype,
        mask BoolTensor[B, max_length], True = real token). Index 0 is the embedding output,
        -1 the last layer, -2 the penultimate."""
        layers = self.num_layers + 1
        if not isinstance(layer_ix, int) or not -layers <= layer_ix < layers:
            raise InputError(
                f"feature layer index {layer_ix!r} is out of range for a CLAP text model with "
                f"{self.num_layers} layers (valid: {-layers}..{layers - 1})"
            )
        output, mask = self._run(texts)
        return output.hidden_states[layer_ix], mask

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """list[str] (B) -> Tensor[B, P], the L2-normalised joint-space embedding."""
        output, _ = self._run(texts)
        return torch.nn.functional.normalize(output.text_embeds, dim=-1)
