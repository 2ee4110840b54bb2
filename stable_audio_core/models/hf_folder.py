"""What the Hugging Face model folders we load (T5, CLAP) share: the activation names their
config.json files use, the config keys that do not change what an encoder computes, how the
safetensors weights of a folder are found (one file or a sharded index; never pickles), and a
compact way to name groups of state-dict keys in errors."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import CheckpointError

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


def group_by_prefix(keys: list[str], depth: int = 3) -> str:
    groups: dict[str, int] = {}
    for key in keys:
        prefix = ".".join(key.split(".")[:depth])
        groups[prefix] = groups.get(prefix, 0) + 1
    return ", ".join(f"{prefix}.* ({count})" if count > 1 else prefix for prefix, count in groups.items())
