"""T5 text encoder: tokenizer + encoder parity with transformers, loading rules, errors.

Fixtures (tests/fixtures/t5/, written by tools/make_t5_fixtures.py in the transformers venv):
two tiny perturbed T5EncoderModel folders (relu = t5-base layout, gated-gelu = Flan-T5 layout)
with transformers' token ids, masks and last_hidden_state for the texts in inputs.json.
The tokenizer is built by tests/fixture_inputs.py and must reproduce transformers' ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stable_audio_core.errors import CheckpointError, ConfigError, InputError
from stable_audio_core.text.t5 import T5Config, T5Encoder, relative_position_bucket
from stable_audio_core.text.t5_encoder import T5TextEncoder
from stable_audio_core.text.tokenizer import TextTokenizer

from fixture_inputs import build_test_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "t5"
VARIANTS = ["relu", "gated-gelu"]
# float32 on both sides with the same operation order; 1e-5 leaves room for a different CPU's
# kernels (the measured error is 0.0 on the machine that wrote the fixtures).
FLOAT32_TOLERANCE = 1e-5




@pytest.fixture(scope="module")
def inputs() -> dict:
    return json.loads((FIXTURES / "inputs.json").read_text())


def expected(variant: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / variant / "expected.safetensors"))


def make_folder(tmp_path: Path, variant: str) -> Path:
    """A Hugging Face-style T5 folder: the fixture's config + weights, our tokenizer.json."""
    folder = tmp_path / variant
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURES / variant / name, folder / name)
    build_test_tokenizer().save(str(folder / "tokenizer.json"))
    return folder


# --- parity with transformers ---------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_tokenizer_ids_and_mask_equal_transformers_padding_max_length(tmp_path, inputs, variant):
    tokenizer = TextTokenizer.from_folder(make_folder(tmp_path, variant), default_pad_token_id=0)

    ids, mask = tokenizer(inputs["texts"], inputs["max_length"])

    reference = expected(variant)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert torch.equal(ids, reference["input_ids"])
    assert torch.equal(mask, reference["attention_mask"])


def test_truncated_text_keeps_eos_as_last_token(tmp_path, inputs):
    tokenizer = TextTokenizer.from_folder(make_folder(tmp_path, "relu"), default_pad_token_id=0)

    ids, mask = tokenizer(inputs["texts"], inputs["max_length"])

    longest = max(range(len(inputs["texts"])), key=lambda i: len(inputs["texts"][i]))
    assert bool(mask[longest].all()) and ids[longest, -1].item() == 1  # </s>
    empty = inputs["texts"].index("")
    assert ids[empty, 0].item() == 1 and mask[empty].sum().item() == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_last_hidden_state_matches_transformers(variant):
    model = T5Encoder.from_pretrained(FIXTURES / variant)
    reference = expected(variant)

    with torch.no_grad():
        hidden = model(reference["input_ids"], reference["attention_mask"])

    assert hidden.shape == reference["last_hidden_state"].shape
    assert (hidden - reference["last_hidden_state"]).abs().max().item() < FLOAT32_TOLERANCE


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_encoder_returns_reference_features_with_padding_zeroed(tmp_path, inputs, variant):
    encoder = T5TextEncoder.from_folder(make_folder(tmp_path, variant), max_length=inputs["max_length"])
    reference = expected(variant)

    features, mask = encoder.encode(inputs["texts"])

    assert torch.equal(mask, reference["attention_mask"])
    assert features.shape == (len(inputs["texts"]), inputs["max_length"], encoder.dim)
    assert torch.all(features[~mask] == 0)
    target = reference["last_hidden_state"] * mask.unsqueeze(-1)
    assert (features - target).abs().max().item() < FLOAT32_TOLERANCE


def test_float16_encoder_matches_transformers_float16():
    # stable-audio-tools runs T5 in float16. A float16 ulp is ~2e-3 at these magnitudes (<4):
    # allow two ulps for kernels that round differently (measured error: 0.0).
    model = T5Encoder.from_pretrained(FIXTURES / "relu", dtype=torch.float16)
    reference = expected("relu")

    with torch.no_grad():
        hidden = model(reference["input_ids"], reference["attention_mask"])

    assert hidden.dtype == torch.float16
    assert (hidden.float() - reference["last_hidden_state_float16"].float()).abs().max().item() < 4e-3


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 10)])
def test_relative_position_buckets_match_transformers(num_buckets, max_distance):
    table = load_file(str(FIXTURES / "buckets.safetensors"))

    buckets = relative_position_bucket(table["relative_position"], num_buckets, max_distance)

    assert torch.equal(buckets, table[f"buckets_{num_buckets}_{max_distance}"])


# --- loading ----------------------------------------------------------------------------------

def test_state_dict_keys_are_transformers_keys():
    model = T5Encoder.from_pretrained(FIXTURES / "gated-gelu")
    saved = set(load_file(str(FIXTURES / "gated-gelu" / "model.safetensors")))

    keys = set(model.state_dict())

    assert keys == saved | {"encoder.embed_tokens.weight"}  # the tied table under both names
    assert model.shared.weight is model.encoder.embed_tokens.weight


def test_sharded_checkpoint_gives_same_output_as_single_file(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(FIXTURES / "relu" / "config.json", folder / "config.json")
    state = load_file(str(FIXTURES / "relu" / "model.safetensors"))
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(folder / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    reference = expected("relu")

    with torch.no_grad():
        sharded = T5Encoder.from_pretrained(folder)(reference["input_ids"], reference["attention_mask"])
        single = T5Encoder.from_pretrained(FIXTURES / "relu")(reference["input_ids"], reference["attention_mask"])

    assert torch.equal(sharded, single)


def test_full_encoder_decoder_checkpoint_loads_encoder_only(tmp_path):
    # Published t5-base is a T5ForConditionalGeneration: decoder.* and lm_head.* are skipped.
    folder = make_folder(tmp_path, "relu")
    state = load_file(str(folder / "model.safetensors"))
    state["decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(32, 32)
    state["lm_head.weight"] = torch.zeros(100, 32)
    # Embedding stored under the encoder's name only.
    state["encoder.embed_tokens.weight"] = state.pop("shared.weight")
    save_file(state, str(folder / "model.safetensors"))
    reference = expected("relu")

    with torch.no_grad():
        hidden = T5Encoder.from_pretrained(folder)(reference["input_ids"], reference["attention_mask"])

    assert (hidden - reference["last_hidden_state"]).abs().max().item() < FLOAT32_TOLERANCE


def test_missing_and_unexpected_keys_raise_checkpoint_error_naming_them(tmp_path):
    folder = make_folder(tmp_path, "relu")
    state = load_file(str(folder / "model.safetensors"))
    del state["encoder.final_layer_norm.weight"]
    state["encoder.extra.weight"] = torch.zeros(3)
    save_file(state, str(folder / "model.safetensors"))

    with pytest.raises(CheckpointError, match=r"missing keys: encoder\.final_layer_norm.*unexpected keys: encoder\.extra"):
        T5Encoder.from_pretrained(folder)


def test_shape_mismatch_raises_checkpoint_error(tmp_path):
    folder = make_folder(tmp_path, "relu")
    config = json.loads((folder / "config.json").read_text())
    config["d_ff"] = 65
    (folder / "config.json").write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match="DenseReluDense.wi.weight: checkpoint"):
        T5Encoder.from_pretrained(folder)


def test_pickle_only_folder_is_refused(tmp_path):
    folder = make_folder(tmp_path, "relu")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")

    with pytest.raises(CheckpointError, match="pickle"):
        T5Encoder.from_pretrained(folder)


# --- config -----------------------------------------------------------------------------------

def test_published_t5_base_config_is_accepted():
    # Key set of t5-base's config.json on the Hugging Face hub (SAO 1.0's text encoder).
    raw = {
        "architectures": ["T5ForConditionalGeneration"], "d_ff": 3072, "d_kv": 64, "d_model": 768,
        "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1, "initializer_factor": 1.0,
        "is_encoder_decoder": True, "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
        "num_heads": 12, "num_layers": 12, "output_past": True, "pad_token_id": 0,
        "relative_attention_num_buckets": 32, "vocab_size": 32128,
        "task_specific_params": {"summarization": {"prefix": "summarize: "}},
    }

    config = T5Config.from_dict(raw)

    assert (config.d_model, config.num_layers, config.dense_act_fn, config.is_gated_act) == (768, 12, "relu", False)
    assert config.relative_attention_max_distance == 128


@pytest.mark.parametrize(
    "raw,act,gated",
    [
        ({"feed_forward_proj": "gated-gelu"}, "gelu_new", True),  # Flan-T5 / T5 v1.1
        ({"feed_forward_proj": "gated-silu"}, "silu", True),
        ({"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu"}, "gelu", True),  # stated wins
        ({"feed_forward_proj": "relu"}, "relu", False),
    ],
)
def test_feed_forward_activation_resolves_like_transformers(raw, act, gated):
    config = T5Config.from_dict(raw)

    assert (config.dense_act_fn, config.is_gated_act) == (act, gated)


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"d_model": 64, "rotary_dim": 8}, r"unknown key\(s\) \['rotary_dim'\]"),
        ({"feed_forward_proj": "gelu-gated"}, "feed_forward_proj"),
        ({"feed_forward_proj": "gated-swiglu"}, "activation 'swiglu'"),
        ({"model_type": "umt5"}, "model_type 'umt5'"),
        ({"num_heads": 0}, "num_heads"),
    ],
)
def test_bad_config_raises_config_error_naming_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        T5Config.from_dict(raw)


# --- tokenizer settings ---------------------------------------------------------------------

def test_pad_token_and_padding_side_come_from_tokenizer_config(tmp_path):
    folder = make_folder(tmp_path, "relu")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": {"content": "<unk>", "special": True}, "padding_side": "left"}
    ))
    tokenizer = TextTokenizer.from_folder(folder, default_pad_token_id=0)

    ids, mask = tokenizer(["a dog"], 6)

    assert tokenizer.pad_token_id == 2
    assert mask.tolist() == [[False, False, False, True, True, True]]
    assert ids[0, :3].tolist() == [2, 2, 2] and ids[0, -1].item() == 1


def test_tokenizer_without_any_pad_token_raises_config_error(tmp_path):
    folder = make_folder(tmp_path, "relu")

    with pytest.raises(ConfigError, match="no pad token"):
        TextTokenizer.from_folder(folder)


@pytest.mark.parametrize("texts,max_length", [("a dog", 8), (["a dog", None], 8), (["a dog"], 0)])
def test_tokenizer_rejects_bad_arguments(tmp_path, texts, max_length):
    tokenizer = TextTokenizer.from_folder(make_folder(tmp_path, "relu"), default_pad_token_id=0)

    with pytest.raises(InputError):
        tokenizer(texts, max_length)
