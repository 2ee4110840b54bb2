"""What the Hugging Face model folders we load (T5, CLAP) share: reading and checking their JSON
files (config.json, preprocessor_config.json, tokenizer settings), the activation names their
config.json files use, the config keys that do not change what an encoder computes, how the
safetensors weights of a folder are found (one file or a sharded index; never pickles) and read
strictly, and a compact way to name groups of state-dict keys in errors."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from safetensors import safe_open

from ..errors import CheckpointError, ConfigError, InputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"


def _gelu_tanh_spelled_out(x: torch.Tensor) -> torch.Tensor:
    # transformers' "gelu_new": the tanh approximation written out, not F.gelu(approximate="tanh"),
    # whose rounding differs in the last bits.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _relu_squared(x: torch.Tensor) -> torch.Tensor:
    return torch.square(F.relu(x))


def _gelu_clipped_10(x: torch.Tensor) -> torch.Tensor:
    return torch.clip(F.gelu(x), -10, 10)


# Names as config.json spells them in `dense_act_fn` (transformers' activation names).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": _gelu_tanh_spelled_out,
    "gelu_accurate": _gelu_tanh_spelled_out,
    "gelu_python_tanh": _gelu_tanh_spelled_out,
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "gelu_fast": _gelu_fast,
    "gelu_10": _gelu_clipped_10,
    "quick_gelu": _quick_gelu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "relu2": _relu_squared,
    "relu6": F.relu6,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
}

# config.json keys that do not change what the encoder computes: the decoder's and training's
# settings, generation defaults, and transformers' bookkeeping.
IGNORED_CONFIG_KEYS = {
    "architectures", "model_type", "_name_or_path", "transformers_version", "torch_dtype", "dtype",
    "num_decoder_layers", "decoder_start_token_id", "is_encoder_decoder", "use_cache",
    "tie_word_embeddings", "scale_decoder_outputs", "tie_encoder_decoder", "add_cross_attention",
    "cross_attention_hidden_size", "dropout_rate", "classifier_dropout", "initializer_factor",
    "gradient_checkpointing", "n_positions", "output_past", "task_specific_params", "prefix",
    "bos_token_id", "sep_token_id", "forced_bos_token_id", "forced_eos_token_id",
    "max_length", "min_length", "num_beams", "num_beam_groups", "early_stopping", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "repetition_penalty", "temperature",
    "top_k", "top_p", "typical_p", "do_sample", "diversity_penalty", "num_return_sequences",
    "bad_words_ids", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "output_scores", "return_dict_in_generate",
    "id2label", "label2id", "num_labels", "finetuning_task", "problem_type", "tokenizer_class",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "pruned_heads", "chunk_size_feed_forward", "tf_legacy_loss", "use_return_dict",
}


def read_json(path: str | Path, what: str, hint: str = "") -> dict[str, Any]:
    """The JSON object in `path`; ConfigError naming `what` and the file when it is missing
    (followed by `hint`), unreadable, not UTF-8, not JSON, or not an object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} not found" + (f"; {hint}" if hint else "")) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{what} {path} nests its JSON too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_keys(raw: Any, known: set[str], what: str, ignored: set[str] = frozenset(),
               kind: tuple[str, str] | None = None) -> dict[str, Any]:
    """The values of the `known` keys of a config.json object `raw`. ConfigError when `raw` is
    not an object, when its `kind` = (key, expected value) entry names another model (an absent
    entry passes), or naming every key neither known nor `ignored`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(raw).__name__}")
    if kind is not None:
        key, expected = kind
        found = raw.get(key, expected)
        if found != expected:
            raise ConfigError(f"{what} has {key} {found!r}; expected {expected!r}")
    unknown = sorted(set(raw) - set(known) - set(ignored))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {what}; known: {sorted(known)} (transformers' dropout, "
            "initialisation and bookkeeping keys are ignored)"
        )
    return {key: value for key, value in raw.items() if key in known}


def check_positive_int(value: Any, name: str, what: str) -> None:
    """ConfigError unless the setting `name` of `what` is a positive int (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{what} '{name}' must be a positive integer, got {value!r}")


def weight_files(folder: Path) -> list[Path]:
    single = folder / WEIGHTS_FILE
    if single.is_file():
        return [single]
    index_path = folder / WEIGHTS_INDEX_FILE
    if index_path.is_file():
        try:
            with open(index_path, encoding="utf-8") as handle:
                weight_map = json.load(handle)["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read shard index {index_path}: {exc}") from exc
        shards = [folder / name for name in sorted(set(weight_map.values()))]
        absent = [str(path.name) for path in shards if not path.is_file()]
        if absent:
            raise CheckpointError(f"{index_path} names shard(s) missing from {folder}: {absent}")
        return shards
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickle weights {pickles}; pickle files can run code and are never "
            "loaded. Convert them to model.safetensors (e.g. save_pretrained(..., safe_serialization=True))"
        )
    raise CheckpointError(f"no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in {folder}")


def _safetensors_items(files: list[Path]) -> Iterator[tuple[str, Callable[[], torch.Tensor]]]:
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    yield key, partial(handle.get_tensor, key)
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc


def _name_keys(keys: list[str], depth: int) -> str:
    """A few keys in full; many grouped by prefix."""
    return ", ".join(keys) if len(keys) <= 8 else group_by_prefix(keys, depth)


def read_weights(files: list[Path], expected: dict[str, torch.Tensor], dtype: torch.dtype | None, what: str,
                 **checks) -> dict[str, torch.Tensor]:
    """The tensors named in `expected` read from safetensors `files`; see `select_weights`."""
    return select_weights(_safetensors_items(files), expected, dtype, what, **checks)


def select_weights(items: Iterable[tuple[str, Callable[[], torch.Tensor]]], expected: dict[str, torch.Tensor],
                   dtype: torch.dtype | None, what: str, *,
                   skip: Callable[[str], bool] = lambda key: False,
                   derived: Callable[[str], torch.Tensor | None] = lambda key: None,
                   rename: Callable[[str], str | None] = lambda key: key,
                   tied: tuple[str, ...] = (), depth: int = 3, hint: str = "") -> dict[str, torch.Tensor]:
    """The tensors named in `expected` (meta tensors giving the shapes) taken from `items`
    ((key, load) pairs, loaded only when needed), floating ones cast to `dtype` (None: kept as
    stored). Keys that `skip` accepts are passed over; `rename` maps a stored key to the model's
    (None: not one of its keys); a key that `derived` gives a value for is a buffer the model
    computes itself: checked against that value, not returned. The keys in `tied` name one shared
    table, stored under any of them. Anything missing, unexpected, of another value or shape
    raises one CheckpointError naming `what`."""
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    wrong_derived: list[str] = []
    for key, load in items:
        if skip(key):
            continue
        reference = derived(key)
        if reference is not None:
            if not torch.equal(load().long(), reference):
                wrong_derived.append(key)
            continue
        name = rename(key)
        if name not in expected or name in state:
            unexpected.append(key)
            continue
        tensor = load()
        state[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    table = next((state[key] for key in tied if key in state), None)
    if table is not None:
        state.update(dict.fromkeys(tied, table))

    missing = sorted(set(expected) - set(state))
    problems = []
    if missing:
        problems.append(f"missing keys: {_name_keys(missing, depth)}")
    if unexpected:
        problems.append(f"unexpected keys: {_name_keys(sorted(unexpected), depth)}")
    if wrong_derived:
        shown = ", ".join(wrong_derived[:5]) + (f" (and {len(wrong_derived) - 5} more)" if len(wrong_derived) > 5 else "")
        problems.append(f"buffers with values this implementation does not reproduce: {shown}")
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs config {tuple(meta.shape)}"
        for key, meta in expected.items() if key in state and state[key].shape != meta.shape
    ]
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched[:10])
                        + (f" (and {len(mismatched) - 10} more)" if len(mismatched) > 10 else ""))
    if problems:
        raise CheckpointError(
            f"{what} does not match its config.json ({'; '.join(problems)}); check that config.json "
            f"belongs to these weights{hint}"
        )
    return state


def token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """A text encoder's inputs checked: input_ids LongTensor[B, L], attention_mask Bool/0-1
    Tensor[B, L] or None (every position a token) -> BoolTensor[B, L] on input_ids' device."""
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise InputError(
            f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    return attention_mask.to(device=input_ids.device, dtype=torch.bool)


def group_by_prefix(keys: list[str], depth: int = 3) -> str:
    groups: dict[str, int] = {}
    for key in keys:
        prefix = ".".join(key.split(".")[:depth])
        groups[prefix] = groups.get(prefix, 0) + 1
    return ", ".join(f"{prefix}.* ({count})" if count > 1 else prefix for prefix, count in groups.items())
