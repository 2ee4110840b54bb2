"""T5Gemma text encoder: parity with transformers' T5GemmaEncoderModel (sdpa), loading rules, errors.

Fixtures (tests/fixtures/t5gemma/, written by tools/make_t5gemma_fixtures.py in the Stable Audio 3
reference venv, transformers 5.8): one tiny random T5GemmaForConditionalGeneration saved in
float32 and in bfloat16, each with a Gemma-style tokenizer (the float32 folder's
tokenizer_config.json names no padding side, so transformers pads it on the left; the bfloat16
folder says "right"), and transformers' token ids, masks and last_hidden_state for the prompts in
inputs.json, loaded the way the reference's T5GemmaConditioner loads them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fixture_inputs import build_t5gemma_test_tokenizer
from stable_audio_core.errors import CheckpointError, ConfigError
from stable_audio_core.text.t5gemma import T5GemmaEncoderConfig, attention_masks
from stable_audio_core.text.t5gemma_encoder import T5GemmaTextEncoder, load_t5gemma_encoder

FIXTURES = Path(__file__).parent / "fixtures" / "t5gemma"
# Same operations in the same order and dtype as transformers' sdpa path, on the same CPU kernels:
# the measured error is 0.0 in float32 and in bfloat16; 1e-5 leaves room for another CPU's kernels.
TOLERANCE = 1e-5




@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "expected.safetensors"))


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return json.loads((FIXTURES / "inputs.json").read_text(encoding="utf-8"))["prompts"]


@pytest.fixture(scope="module")
def encoders() -> dict[str, T5GemmaTextEncoder]:
    return {name: T5GemmaTextEncoder.from_folder(FIXTURES / name) for name in ("float32", "bfloat16")}


def max_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.float() - reference.float()).abs().max())


def copy_folder(tmp_path: Path, name: str = "float32") -> Path:
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    return folder


# --- tokenization -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_token_ids_and_masks_equal_transformers(encoders, expected, prompts, name):
    input_ids, mask = encoders[name].tokenizer(prompts, 256)
    assert torch.equal(input_ids, expected[f"{name}.input_ids"])
    assert torch.equal(mask, expected[f"{name}.attention_mask"])


def test_padding_side_is_the_one_transformers_picks(encoders, expected):
    # No padding_side in tokenizer_config.json + tokenizer_class GemmaTokenizer: left, as
    # transformers 5 pads; an explicit "right" is kept.
    assert encoders["float32"].tokenizer.padding_side == "left"
    assert encoders["bfloat16"].tokenizer.padding_side == "right"
    left, right = expected["float32.attention_mask"][1], expected["bfloat16.attention_mask"][1]
    assert not left[0] and left[-1] and right[0] and not right[-1]


def test_long_prompt_is_truncated_to_256_tokens_keeping_bos_and_eos(encoders, prompts):
    input_ids, mask = encoders["bfloat16"].tokenizer([prompts[2]], 256)
    assert input_ids.shape == (1, 256) and bool(mask.all())
    assert input_ids[0, 0] == 2 and input_ids[0, -1] == 1


def test_tokenizer_built_here_gives_transformers_ids(tmp_path, expected, prompts):
    folder = copy_folder(tmp_path, "bfloat16")
    build_t5gemma_test_tokenizer().save(str(folder / "tokenizer.json"))
    encoder = T5GemmaTextEncoder.from_folder(folder)
    input_ids, mask = encoder.tokenizer(prompts, 256)
    assert torch.equal(input_ids, expected["bfloat16.input_ids"])
    assert torch.equal(mask, expected["bfloat16.attention_mask"])


# --- encoder parity -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_last_hidden_state_equals_transformers_sdpa(encoders, expected, prompts, name):
    encoder = encoders[name]
    assert encoder.dtype == getattr(torch, name)  # the stored dtype: bfloat16 stays bfloat16
    features, mask = encoder.encode(prompts)
    assert features.shape == (4, 256, 48) and features.dtype == encoder.dtype
    assert torch.equal(mask, expected[f"{name}.attention_mask"])
    assert max_error(features, expected[f"{name}.batch"]) < TOLERANCE
    # Unpadded: sdpa gets no mask on the full-attention layer and groups k/v heads itself.
    single = encoder.model(expected["single.input_ids"])
    assert max_error(single, expected[f"{name}.single"]) < TOLERANCE


def test_matches_the_sdpa_path_that_ignores_softcapping_not_eager(encoders, expected, prompts):
    # transformers' eager attention applies attn_logit_softcapping (2.0 in the fixture), sdpa does
    # not; the Stable Audio 3 reference runs sdpa. Compared on real tokens only.
    features, mask = encoders["float32"].encode(prompts[:2])
    valid = mask[..., None]
    eager = expected["float32.eager_softcapped"]
    assert float(((features - eager) * valid).abs().max()) > 0.1
    assert float(((features - expected["float32.batch"][:2]) * valid).abs().max()) < TOLERANCE


def test_softcap_value_in_config_does_not_change_the_output(tmp_path, encoders, expected, prompts):
    folder = copy_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["attn_logit_softcapping"] = 0.5
    (folder / "config.json").write_text(json.dumps(config))
    features, _ = T5GemmaTextEncoder.from_folder(folder).encode(prompts)
    assert max_error(features, expected["float32.batch"]) < TOLERANCE


def test_float32_on_request_from_a_bfloat16_folder(expected, prompts):
    encoder = T5GemmaTextEncoder.from_folder(FIXTURES / "bfloat16", dtype=torch.float32)
    assert encoder.dtype == torch.float32
    features, _ = encoder.encode(prompts)
    # bfloat16 activations round to 8 bits of mantissa (steps of 1/32 near the outputs' largest 5.0).
    assert max_error(features, expected["bfloat16.batch"]) < 0.1


def test_sliding_window_mask_is_inclusive_and_hides_padding():
    padding = torch.tensor([[True] * 6 + [False] * 2])
    masks = attention_masks(padding, sliding_window=2)
    sliding = masks["sliding_attention"][0, 0]
    assert sliding[3].tolist() == [False, True, True, True, True, True, False, False]
    assert masks["full_attention"][0, 0, 7].tolist() == [True] * 6 + [False] * 2
    unpadded = attention_masks(torch.ones(1, 5, dtype=torch.bool), sliding_window=8)
    assert unpadded == {"full_attention": None, "sliding_attention": None}


# --- config and folder errors -------------------------------------------------------------------

def test_config_reads_the_encoder_part_with_layer_types():
    raw = json.loads((FIXTURES / "float32" / "config.json").read_text())
    config = T5GemmaEncoderConfig.from_dict(raw)
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (48, 4, 2)
    assert config.layer_types == ("sliding_attention", "full_attention") and config.sliding_window == 4
    assert config.query_pre_attn_scalar == 24 and config.rope_theta == 10000.0


def test_config_without_layer_types_alternates_sliding_and_full():
    config = T5GemmaEncoderConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=3,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=4)
    assert config.layer_types == ("sliding_attention", "full_attention", "sliding_attention")


@pytest.mark.parametrize("change, message", [
    ({"surprise": 1}, "unknown key"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "default rotary"),
    ({"layer_types": ["full_attention"]}, "layer_types"),
    ({"num_key_value_heads": 3}, "multiple"),
    ({"hidden_activation": "nope"}, "hidden_activation"),
])
def test_bad_config_raises_config_error(tmp_path, change, message):
    folder = copy_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"].update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_t5gemma_encoder(folder)


def test_missing_folder_and_config_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_t5gemma_encoder(tmp_path / "absent")
    folder = copy_folder(tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json"):
        load_t5gemma_encoder(folder)


def test_weight_mismatches_are_listed(tmp_path):
    folder = copy_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    weights.pop("model.encoder.layers.1.mlp.up_proj.weight")
    weights["model.encoder.layers.0.extra.weight"] = torch.zeros(2)
    weights["model.encoder.norm.weight"] = torch.zeros(7)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_t5gemma_encoder(folder)
    text = str(error.value)
    assert "missing keys" in text and "layers.1.mlp.up_proj.weight" in text
    assert "unexpected keys" in text and "model.encoder.layers.0" in text
    assert "norm.weight: checkpoint (7,) vs config (48,)" in text


def test_decoder_weights_are_skipped_and_encoder_only_keys_load(tmp_path, expected):
    folder = copy_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    assert any(key.startswith("model.decoder.") for key in weights)  # the fixture holds a decoder
    encoder_only = {key.removeprefix("model."): value for key, value in weights.items()
                    if key.startswith("model.encoder.")}
    save_file(encoder_only, str(folder / "model.safetensors"))
    model = load_t5gemma_encoder(folder)
    out = model(expected["single.input_ids"])
    assert max_error(out, expected["float32.single"]) < TOLERANCE
