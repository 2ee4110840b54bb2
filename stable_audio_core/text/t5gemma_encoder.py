"""Prompt -> T5Gemma token features, as Stable Audio 3's T5Gemma conditioner computes them
before its padding embedding.

Loads a local Hugging Face T5Gemma folder (`t5gemma-b-b-ul2` style: config.json holding a
T5GemmaConfig whose "encoder" part is read, model.safetensors with `model.encoder.*` keys and the
decoder's keys skipped, tokenizer.json), in the stored dtype as transformers' `dtype="auto"` picks
it. Tokenizes to 256 tokens with truncation and max-length padding, runs the frozen encoder and
returns its last_hidden_state with the token mask. Not an nn.Module on purpose: like the
reference, the T5Gemma weights live in their own folder, never in a model checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, InputError
from ..models.hf_folder import CONFIG_FILE, read_json, read_weights, weight_files
from .t5gemma import T5GemmaEncoder, T5GemmaEncoderConfig
from .tokenizer import TOKENIZER_CONFIG_FILE, TextTokenizer

MAX_LENGTH = 256  # the Stable Audio 3 conditioner's max_length
# The encoder's keys in a full T5GemmaForConditionalGeneration / T5GemmaModel / encoder-only save.
ENCODER_PREFIXES = ("model.encoder.", "encoder.")
IGNORED_KEY_PREFIXES = ("model.decoder.", "decoder.", "lm_head.")
# transformers 5's GemmaTokenizer pads on the left unless tokenizer_config.json says otherwise.
LEFT_PADDING_TOKENIZER_CLASSES = {"GemmaTokenizer", "GemmaTokenizerFast"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _stored_dtype(raw_config: dict[str, Any], first_floating: torch.dtype | None) -> torch.dtype:
    """transformers' dtype="auto": config.json's dtype (or torch_dtype), else the weights' own."""
    named = raw_config.get("dtype", raw_config.get("torch_dtype"))
    if named is None:
        return first_floating or torch.float32
    if named not in _DTYPES:
        raise ConfigError(f"T5Gemma config.json dtype {named!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[named]


def _encoder_key(key: str) -> str | None:
    """A stored key without its encoder prefix; None for keys of no encoder."""
    prefix = next((p for p in ENCODER_PREFIXES if key.startswith(p)), None)
    return None if prefix is None else key[len(prefix):]


def load_t5gemma_encoder(
    folder: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> T5GemmaEncoder:
    """A Hugging Face T5Gemma folder -> the frozen encoder in eval mode on `device`.

    dtype None keeps the stored dtype (config.json's "dtype", else the weights'); bfloat16 stays
    bfloat16 unless float32 is asked for.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"T5Gemma folder {folder} not found; point at a local t5gemma-b-b-ul2 folder")
    raw = read_json(folder / CONFIG_FILE, "T5Gemma config")
    config = T5GemmaEncoderConfig.from_dict(raw)
    with torch.device("meta"):
        model = T5GemmaEncoder(config)
    state = read_weights(weight_files(folder), model.state_dict(), None, f"T5Gemma weights in {folder}",
                         skip=lambda key: key.startswith(IGNORED_KEY_PREFIXES), rename=_encoder_key)
    floating = next((t.dtype for t in state.values() if t.is_floating_point()), None)
    target = dtype or _stored_dtype(raw, floating)
    model.load_state_dict({k: v.to(target) for k, v in state.items()}, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_t5gemma_tokenizer(folder: str | Path, pad_token_id: int | None = 0) -> TextTokenizer:
    """tokenizer.json of the folder, padded on the side transformers' AutoTokenizer picks."""
    folder = Path(folder)
    tokenizer = TextTokenizer.from_folder(folder, default_pad_token_id=pad_token_id)
    settings_path = folder / TOKENIZER_CONFIG_FILE
    settings = read_json(settings_path, "tokenizer settings") if settings_path.is_file() else {}
    if "padding_side" not in settings and settings.get("tokenizer_class") in LEFT_PADDING_TOKENIZER_CLASSES:
        tokenizer.padding_side = "left"
    return tokenizer


class T5GemmaTextEncoder:
    """A tokenizer and a frozen T5Gemma encoder; `encode(texts)` -> (features [B, L, D], mask [B, L])."""

    def __init__(self, tokenizer: TextTokenizer, model: T5GemmaEncoder, max_length: int = MAX_LENGTH):
        if not isinstance(max_length, int) or max_length < 1:
            raise InputError(f"max_length must be a positive int, got {max_length!r}")
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        max_length: int = MAX_LENGTH,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> "T5GemmaTextEncoder":
        """Load a Hugging Face T5Gemma folder (config.json, safetensors, tokenizer.json); dtype None
        keeps the stored dtype."""
        model = load_t5gemma_encoder(folder, dtype=dtype, device=device)
        tokenizer = load_t5gemma_tokenizer(folder, model.config.pad_token_id)
        return cls(tokenizer, model, max_length)

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "T5GemmaTextEncoder":
        self.model.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """list[str] (B) -> (last_hidden_state Tensor[B, max_length, D] in the model dtype, padded
        positions left as the encoder computed them; mask BoolTensor[B, max_length], True = token),
        both on the model's device."""
        input_ids, mask = self.tokenizer(texts, self.max_length)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        return self.model(input_ids, mask), mask
