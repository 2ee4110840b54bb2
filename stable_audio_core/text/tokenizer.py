"""Text -> fixed-length token ids, as a Hugging Face fast tokenizer does with padding="max_length".

A thin wrapper over `tokenizers.Tokenizer` (the `tokenizer.json` of a Hugging Face folder). The
backend's own truncation and padding are used, so special tokens added by the tokenizer's
post-processor (T5's trailing `</s>`, RoBERTa's `<s> ... </s>`) always fit inside `max_length`,
exactly as transformers' `PreTrainedTokenizerFast(texts, padding="max_length", truncation=True,
max_length=...)` behaves. Nothing here is specific to one model family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from ..errors import ConfigError, InputError
from ..models.hf_folder import read_json

TOKENIZER_FILE = "tokenizer.json"
# Side files of a Hugging Face tokenizer folder that may name the pad token and padding sides.
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
_SIDES = ("left", "right")


def _token_text(value: Any) -> str | None:
    """A special token as saved by transformers: a plain string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _side(settings: dict[str, Any], key: str, source: Path) -> str:
    side = settings.get(key, "right")
    if side not in _SIDES:
        raise ConfigError(f"{key} in {source} must be one of {list(_SIDES)}, got {side!r}")
    return side


class TextTokenizer:
    """Batches of strings -> (input_ids, attention_mask) padded and truncated to `max_length`.

    `padding_side` / `truncation_side` are "right" (the Hugging Face default) or "left".
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        pad_token: str,
        padding_side: str = "right",
        truncation_side: str = "right",
    ):
        pad_token_id = tokenizer.token_to_id(pad_token)
        if pad_token_id is None:
            raise ConfigError(
                f"pad token {pad_token!r} is not in the tokenizer's vocabulary; "
                "name an existing token as pad_token"
            )
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in _SIDES:
                raise ConfigError(f"{name} must be one of {list(_SIDES)}, got {side!r}")
        self.backend = tokenizer
        self.pad_token = pad_token
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        # Settings saved inside tokenizer.json are overridden per call, as transformers does.
        self.backend.no_padding()
        self.backend.no_truncation()

    @classmethod
    def from_file(
        cls, path: str | Path, pad_token: str | None = None, default_pad_token_id: int | None = None
    ) -> "TextTokenizer":
        """Load `tokenizer.json`; the pad token and sides come from the files beside it.

        Pad token, first found wins: `pad_token`; `tokenizer_config.json`; `special_tokens_map.json`;
        the padding section of `tokenizer.json`; the token with id `default_pad_token_id` (e.g. a
        model config's `pad_token_id`).
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"tokenizer file {path} not found; point at a Hugging Face tokenizer.json")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust backend raises plain Exceptions with its parse error
            raise ConfigError(f"cannot load tokenizer {path}: {exc}") from exc

        folder = path.parent
        tokenizer_config: dict[str, Any] = {}
        config_path = folder / TOKENIZER_CONFIG_FILE
        if config_path.is_file():
            tokenizer_config = read_json(config_path, "tokenizer settings")
        special_tokens: dict[str, Any] = {}
        if (folder / SPECIAL_TOKENS_FILE).is_file():
            special_tokens = read_json(folder / SPECIAL_TOKENS_FILE, "tokenizer settings")
        saved_padding = backend.padding or {}

        candidates = [
            pad_token,
            _token_text(tokenizer_config.get("pad_token")),
            _token_text(special_tokens.get("pad_token")),
            _token_text(saved_padding.get("pad_token")),
        ]
        if default_pad_token_id is not None:
            candidates.append(backend.id_to_token(int(default_pad_token_id)))
        chosen = next((token for token in candidates if token is not None), None)
        if chosen is None:
            raise ConfigError(
                f"no pad token found for {path}: none in {TOKENIZER_CONFIG_FILE}, "
                f"{SPECIAL_TOKENS_FILE} or tokenizer.json; pass pad_token explicitly"
            )
        return cls(
            backend,
            pad_token=chosen,
            padding_side=_side(tokenizer_config, "padding_side", config_path),
            truncation_side=_side(tokenizer_config, "truncation_side", config_path),
        )

    @classmethod
    def from_folder(
        cls, folder: str | Path, pad_token: str | None = None, default_pad_token_id: int | None = None
    ) -> "TextTokenizer":
        """Load `<folder>/tokenizer.json` (see `from_file`)."""
        return cls.from_file(Path(folder) / TOKENIZER_FILE, pad_token, default_pad_token_id)

    @property
    def num_special_tokens(self) -> int:
        """How many tokens the post-processor adds to one text (T5: 1, RoBERTa: 2)."""
        return self.backend.num_special_tokens_to_add(is_pair=False)

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """list[str] of length B -> (input_ids LongTensor[B, max_length], mask BoolTensor[B, max_length])."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise InputError(f"texts must be a list of strings, got {texts!r}")
        if not isinstance(max_length, int) or max_length < max(1, self.num_special_tokens):
            raise InputError(
                f"max_length must be an int >= {max(1, self.num_special_tokens)} "
                f"(the tokens the tokenizer adds itself), got {max_length!r}"
            )
        self.backend.enable_truncation(
            max_length, stride=0, strategy="longest_first", direction=self.truncation_side
        )
        self.backend.enable_padding(
            direction=self.padding_side,
            pad_id=self.pad_token_id,
            pad_type_id=0,
            pad_token=self.pad_token,
            length=max_length,
        )
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=True)
        input_ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        attention_mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)
        return input_ids.reshape(len(texts), max_length), attention_mask.reshape(len(texts), max_length)
