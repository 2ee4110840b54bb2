"""CLAP: text and audio towers, log-mel front end and the clap_text conditioner.

Fixtures (tests/fixtures/clap/, written by tools/make_clap_fixtures.py in the transformers venv):
`model/` is a tiny perturbed fused ClapModel folder (config.json, model.safetensors, tokenizer.json,
preprocessor_config.json); expected.safetensors holds transformers' tokenization, text hidden
states / pooled / projected outputs, fused and unfused audio tokens / pooled / projected
outputs, logits, and ClapFeatureExtractor outputs for the clips listed in inputs.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from stable_audio_core.audio.features import ClapFeatureExtractor, fusion_crop_ranges, mel_filterbank
from stable_audio_core.config import ConditionerSpec
from stable_audio_core.errors import CheckpointError, ConfigError, InputError
from stable_audio_core.models.clap import ClapModel
from stable_audio_core.models.clap_config import ClapConfig
from stable_audio_core.models.conditioners import CONDITIONER_TYPES, build_conditioner
from stable_audio_core.text.conditioners import CLAPTextConditioner
from stable_audio_core.text.clap_encoder import ClapTextEncoder
from stable_audio_core.text.tokenizer import TextTokenizer

from fixture_inputs import audio_test_features, sample_clip

FIXTURES = Path(__file__).parent / "fixtures" / "clap"
MODEL = FIXTURES / "model"
# float32 on both sides; the towers differ from transformers only in summation order (fused
# attention kernels, the pooled mean): measured <= 1.2e-6. 1e-5 is the bound.
FLOAT32_TOLERANCE = 1e-5
FUSION_KEYS = (".fusion_model.", ".mel_conv2d.")




@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "expected.safetensors"))


@pytest.fixture(scope="module")
def inputs() -> dict:
    return json.loads((FIXTURES / "inputs.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def clap() -> ClapModel:
    return ClapModel.from_pretrained(MODEL)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def copy_model(tmp_path: Path, name: str = "clap") -> Path:
    folder = tmp_path / name
    shutil.copytree(MODEL, folder)
    return folder


def edit_folder(folder: Path, config_edit=None, weights_edit=None) -> Path:
    if config_edit is not None:
        config = json.loads((folder / "config.json").read_text())
        config_edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    if weights_edit is not None:
        weights = load_file(str(folder / "model.safetensors"))
        weights_edit(weights)
        save_file(weights, str(folder / "model.safetensors"))
    return folder


def unfused_folder(tmp_path: Path) -> Path:
    """The fixture's weights without the fusion branch, as an unfused CLAP folder."""
    def drop_fusion(weights):
        for key in [k for k in weights if any(part in k for part in FUSION_KEYS)]:
            del weights[key]

    return edit_folder(copy_model(tmp_path, "unfused"),
                       lambda c: c["audio_config"].update(enable_fusion=False), drop_fusion)


# --- text tower -------------------------------------------------------------------------------

def test_tokenizer_ids_and_mask_equal_transformers_padding_max_length(expected, inputs):
    tokenizer = TextTokenizer.from_folder(MODEL, default_pad_token_id=1)

    ids, mask = tokenizer(inputs["texts"], inputs["max_length"])

    assert torch.equal(ids, expected["input_ids"])
    assert torch.equal(mask, expected["attention_mask"])
    assert mask.sum(1).tolist()[1] == 2 and bool(mask[2].all())  # "" -> <s></s>; long text truncated


def test_text_hidden_states_pooled_and_projection_match_transformers(clap, expected):
    with torch.no_grad():
        out = clap.text(expected["input_ids"], expected["attention_mask"])

    assert len(out.hidden_states) == clap.config.text.num_hidden_layers + 1  # embeddings + layers
    assert max_error(out.hidden_states[-2], expected["text.penultimate"]) < FLOAT32_TOLERANCE
    assert max_error(out.pooled, expected["text.pooled"]) < FLOAT32_TOLERANCE
    assert max_error(out.text_embeds, expected["text.text_embeds"]) < FLOAT32_TOLERANCE


def test_text_model_rejects_more_tokens_than_positions(clap):
    too_long = clap.config.text.max_text_length + 1

    with pytest.raises(InputError, match="positions"):
        clap.text(torch.zeros(1, too_long, dtype=torch.long))


# --- audio tower ------------------------------------------------------------------------------

def test_audio_test_features_reproduce_the_fixture_inputs(expected):
    assert torch.equal(audio_test_features(2, 4)[:, :, :1], expected["audio.input_slice"])


def test_fused_audio_tokens_pooled_and_projection_match_transformers(clap, expected, inputs):
    is_longer = torch.tensor(inputs["is_longer"])  # one clip through the fusion branch, one not

    with torch.no_grad():
        out = clap.audio(audio_test_features(2, 4), is_longer)

    assert max_error(out.tokens, expected["audio.fused.tokens"]) < FLOAT32_TOLERANCE
    assert max_error(out.pooled, expected["audio.fused.pooled"]) < FLOAT32_TOLERANCE
    assert max_error(out.audio_embeds, expected["audio.fused.audio_embeds"]) < FLOAT32_TOLERANCE


def test_unfused_audio_matches_transformers(tmp_path, expected):
    model = ClapModel.from_pretrained(unfused_folder(tmp_path), towers=("audio",))

    with torch.no_grad():
        out = model.audio(audio_test_features(2, 4)[:, :1])

    assert max_error(out.tokens, expected["audio.unfused.tokens"]) < FLOAT32_TOLERANCE
    assert max_error(out.pooled, expected["audio.unfused.pooled"]) < FLOAT32_TOLERANCE
    assert max_error(out.audio_embeds, expected["audio.unfused.audio_embeds"]) < FLOAT32_TOLERANCE


def test_logits_match_transformers(clap, expected, inputs):
    with torch.no_grad():
        text = clap.text_embedding(expected["input_ids"], expected["attention_mask"])
        audio = clap.audio_embedding(audio_test_features(2, 4), torch.tensor(inputs["is_longer"]))
        per_text, per_audio = clap.logits(text, audio)

    # logits are cosines times exp(logit_scale) ~ 14: scale the bound with them.
    assert max_error(per_text, expected["logits_per_text"]) < 20 * FLOAT32_TOLERANCE
    assert max_error(per_audio, expected["logits_per_audio"]) < 20 * FLOAT32_TOLERANCE


@pytest.mark.parametrize("channels,is_longer,message", [
    (1, [True, False], "4 feature channels"),
    (4, [True], "is_longer has 1 entries"),
])
def test_fused_audio_rejects_inputs_it_cannot_use(clap, channels, is_longer, message):
    with pytest.raises(InputError, match=message):
        clap.audio(torch.zeros(2, channels, 1001, 64), torch.tensor(is_longer))


def test_audio_rejects_wrong_mel_bins_and_too_many_frames(clap):
    with pytest.raises(InputError, match="64 mel bins"):
        clap.audio(torch.zeros(1, 4, 1001, 32))
    with pytest.raises(InputError, match="at most 1024 frames"):
        clap.audio(torch.zeros(1, 4, 1025, 64))


# --- feature extractor ------------------------------------------------------------------------

def feature_cases() -> list[dict]:
    return json.loads((FIXTURES / "inputs.json").read_text(encoding="utf-8"))["feature_cases"]


@pytest.fixture(scope="module")
def extractor() -> ClapFeatureExtractor:
    return ClapFeatureExtractor.from_folder(MODEL)


@pytest.mark.parametrize("case", feature_cases(), ids=lambda case: case["name"])
def test_log_mel_features_match_transformers_extractor(extractor, expected, case):
    clip = sample_clip(case["samples"])

    features, _ = extractor.clip_features(clip, case["truncation"], case["padding"], case["max_length"],
                                          crops=tuple(case["crops"]) or None)

    assert features.dtype == torch.float32
    assert features.shape == (case["channels"], case["frames"], 64)
    reference = expected[f"features.{case['name']}"]
    if case["identical_channels"]:
        assert all(torch.equal(features[0], channel) for channel in features)
    # Both sides compute in float64 and round to float32 (dB values within +-128): at most one
    # float32 ulp apart (7.6e-6). Measured: 0.0.
    assert max_error(features[: reference.shape[0], :: case["frame_stride"]], reference) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("case", feature_cases(), ids=lambda case: case["name"])
def test_is_longer_matches_transformers_extractor(extractor, case):
    generator = torch.Generator().manual_seed(0)

    out = extractor(sample_clip(case["samples"]), sampling_rate=48_000, truncation=case["truncation"],
                    padding=case["padding"], max_length=case["max_length"], generator=generator)

    assert out.is_longer.tolist() == [case["is_longer"]]


def test_fusion_batch_without_a_longer_clip_marks_exactly_one(extractor):
    clips = [sample_clip(4000), sample_clip(6000), sample_clip(8000)]

    out = extractor(clips, truncation="fusion", max_length=12_000, generator=torch.Generator().manual_seed(1))

    assert out.input_features.shape == (3, 4, 26, 64)
    assert out.is_longer.sum().item() == 1


def test_fusion_crops_are_drawn_from_front_middle_and_back_thirds(extractor):
    # numpy.array_split of the 38 possible starts into 13 + 13 + 12
    assert fusion_crop_ranges(63, 26) == [(0, 13), (13, 13), (26, 12)]
    assert fusion_crop_ranges(27, 26) == [(0, 1), (1, 1), (0, 1)]  # an empty third -> start 0
    clip = sample_clip(30_000)
    generator = torch.Generator().manual_seed(3)

    features, longer = extractor.clip_features(clip, "fusion", max_length=12_000, generator=generator)
    whole = extractor.log_mel(clip.double(), "fusion")

    assert longer
    for crop, (first, count) in zip(features[1:], fusion_crop_ranges(63, 26)):
        starts = [s for s in range(first, first + count) if torch.equal(whole[s:s + 26], crop)]
        assert starts, "each crop is a window of the whole mel from its third"


def test_ten_second_clip_gives_1001_frames(extractor):
    features = extractor(sample_clip(480_000), sampling_rate=48_000, truncation="rand_trunc").input_features

    assert features.shape == (1, 1, 1001, 64)


def test_slaney_filters_have_equal_area_and_htk_filters_peak_at_one():
    slaney = mel_filterbank(513, 64, 50, 14_000, 48_000, "slaney", slaney_norm=True)
    htk = mel_filterbank(513, 64, 50, 14_000, 48_000, "htk")

    assert slaney.shape == htk.shape == (513, 64)
    assert htk.max().item() <= 1.0 and bool((htk.max(dim=0).values > 0).all())
    assert bool((slaney >= 0).all())


def test_extractor_rejects_other_sample_rates_and_modes(extractor):
    with pytest.raises(InputError, match="resample"):
        extractor(sample_clip(1000), sampling_rate=44_100)
    with pytest.raises(InputError, match="truncation"):
        extractor(sample_clip(1000), truncation="crop")
    with pytest.raises(ConfigError, match="unknown key"):
        ClapFeatureExtractor.from_dict({"feature_size": 64, "n_mels": 64})


# --- text encoder and conditioner --------------------------------------------------------------

@pytest.fixture(scope="module")
def text_encoder() -> ClapTextEncoder:
    return ClapTextEncoder.from_folder(MODEL)


def test_text_encoder_returns_penultimate_layer_with_padding_kept(text_encoder, expected, inputs):
    features, mask = text_encoder.encode(inputs["texts"], layer_ix=-2)

    assert torch.equal(mask, expected["attention_mask"])
    assert max_error(features, expected["text.penultimate"]) < FLOAT32_TOLERANCE
    # laion-clap leaves the encoder's outputs at padded positions (they are not zeroed).
    assert features[~mask].abs().sum().item() > 0


def test_text_encoder_embedding_is_normalised_projection(text_encoder, expected, inputs):
    embeddings = text_encoder.embed(inputs["texts"])

    assert max_error(embeddings, F.normalize(expected["text.text_embeds"], dim=-1)) < FLOAT32_TOLERANCE
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(inputs["texts"])))


def test_text_encoder_rejects_layer_index_out_of_range(text_encoder):
    with pytest.raises(InputError, match="out of range"):
        text_encoder.encode(["a dog"], layer_ix=3)


def test_clap_text_is_a_registered_conditioner_type():
    assert CONDITIONER_TYPES["clap_text"] is CLAPTextConditioner


def test_conditioner_text_features_are_projected_penultimate_layer(text_encoder, expected, inputs):
    torch.manual_seed(0)
    conditioner = CLAPTextConditioner(8, use_text_features=True, feature_layer_ix=-2, text_width=32)
    conditioner.attach_text_encoder(text_encoder)

    with torch.no_grad():
        tokens, mask = conditioner(inputs["texts"], "cpu")
        target = conditioner.proj_out(expected["text.penultimate"])

    assert tokens.shape == (len(inputs["texts"]), 77, 8)
    assert torch.equal(mask, expected["attention_mask"])
    assert max_error(tokens, target) < FLOAT32_TOLERANCE


def test_conditioner_embedding_mode_gives_one_normalised_token(text_encoder, expected, inputs):
    conditioner = CLAPTextConditioner(16, embedding_dim=16)  # width == output_dim: no proj_out
    conditioner.attach_text_encoder(text_encoder)

    tokens, mask = conditioner(inputs["texts"], "cpu")

    assert isinstance(conditioner.proj_out, torch.nn.Identity)
    assert tokens.shape == (len(inputs["texts"]), 1, 16) and mask.shape == (len(inputs["texts"]), 1)
    assert max_error(tokens[:, 0], F.normalize(expected["text.text_embeds"], dim=-1)) < FLOAT32_TOLERANCE


def test_conditioner_from_stable_audio_tools_config_keeps_reference_widths():
    config = {"clap_ckpt_path": "/models/clap.ckpt", "use_text_features": True, "feature_layer_ix": -2,
              "audio_model_type": "HTSAT-base", "enable_fusion": True}

    conditioner = build_conditioner(ConditionerSpec("prompt", "clap_text", config), cond_dim=768)
    no_features = build_conditioner(ConditionerSpec("prompt", "clap_text", {}), cond_dim=768)

    assert isinstance(conditioner.proj_out, torch.nn.Identity)  # 768 -> 768
    assert tuple(no_features.proj_out.weight.shape) == (768, 512)
    assert set(conditioner.state_dict()) == set()  # CLAP weights are never in the checkpoint


def test_conditioner_errors_name_the_fix(text_encoder):
    with pytest.raises(ConfigError, match="unknown key"):
        build_conditioner(ConditionerSpec("prompt", "clap_text", {"clap_model": "x"}), cond_dim=8)
    with pytest.raises(ConfigError, match="finetune"):
        CLAPTextConditioner(8, finetune=True)
    with pytest.raises(InputError, match="CLAP folder|CLAP model"):
        CLAPTextConditioner(8)(["a dog"], "cpu")
    with pytest.raises(InputError, match="hidden size is 32"):
        CLAPTextConditioner(8, use_text_features=True).attach_text_encoder(text_encoder)


# --- loading ------------------------------------------------------------------------------------

def test_state_dict_keys_are_transformers_keys(clap):
    saved = set(load_file(str(MODEL / "model.safetensors")))
    ours = {key.split(".", 1)[1] if key.startswith(("text.", "audio.")) else key for key in clap.state_dict()}

    derived = {k for k in saved if k.endswith(("position_ids", "token_type_ids", "num_batches_tracked"))}
    assert ours == saved - derived


def test_text_tower_alone_skips_the_audio_weights():
    model = ClapModel.from_pretrained(MODEL, towers=("text",))

    assert model.audio is None
    with pytest.raises(InputError, match="without its audio tower"):
        model.audio_embedding(torch.zeros(1, 4, 1001, 64))


def test_saved_relative_position_index_is_accepted_and_checked(tmp_path, expected):
    index = expected["relative_position_index_8"].long()
    key = "audio_model.audio_encoder.layers.0.blocks.1.attention.self.relative_position_index"
    good = edit_folder(copy_model(tmp_path, "good"), weights_edit=lambda w: w.__setitem__(key, index))
    bad = edit_folder(copy_model(tmp_path, "bad"), weights_edit=lambda w: w.__setitem__(key, index.flip(0)))

    ClapModel.from_pretrained(good)
    with pytest.raises(CheckpointError, match="does not reproduce.*layers.0.blocks.1"):
        ClapModel.from_pretrained(bad)


def test_fused_weights_with_unfused_config_name_the_fusion_keys(tmp_path):
    folder = edit_folder(copy_model(tmp_path), lambda c: c["audio_config"].update(enable_fusion=False))

    with pytest.raises(CheckpointError, match=r"unexpected keys: .*patch_embed\.fusion_model.*enable_fusion"):
        ClapModel.from_pretrained(folder)


def test_missing_key_and_shape_mismatch_raise_checkpoint_error(tmp_path):
    missing = edit_folder(copy_model(tmp_path, "missing"),
                          weights_edit=lambda w: w.pop("text_model.pooler.dense.weight"))
    wide = edit_folder(copy_model(tmp_path, "wide"),
                       lambda c: c["text_config"].update(intermediate_size=65))

    with pytest.raises(CheckpointError, match=r"missing keys: text_model\.pooler\.dense\.weight"):
        ClapModel.from_pretrained(missing)
    with pytest.raises(CheckpointError, match="intermediate.dense.weight: checkpoint"):
        ClapModel.from_pretrained(wide)


def test_float16_load_casts_the_weights():
    model = ClapModel.from_pretrained(MODEL, dtype=torch.float16, towers=("text",))

    assert model.text.text_projection.linear1.weight.dtype == torch.float16


# --- config -------------------------------------------------------------------------------------

def test_transformers_4_27_style_config_is_accepted():
    # The key set transformers 4.27 wrote into laion/clap-htsat-* configs (generic keys included).
    generic = {"return_dict": True, "output_hidden_states": False, "torchscript": False, "torch_dtype": None,
               "use_bfloat16": False, "pruned_heads": {}, "tie_word_embeddings": True, "is_encoder_decoder": False,
               "is_decoder": False, "add_cross_attention": False, "max_length": 20, "num_beams": 1,
               "bos_token_id": None, "pad_token_id": None, "eos_token_id": None, "architectures": None,
               "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}, "_name_or_path": "",
               "transformers_version": "4.27.0.dev0", "chunk_size_feed_forward": 0}
    raw = {
        "architectures": ["ClapModel"], "model_type": "clap", "projection_dim": 512, "hidden_size": 768,
        "logit_scale_init_value": 14.285714285714285, "num_hidden_layers": 16, "initializer_factor": 1.0,
        "projection_hidden_act": "relu", "torch_dtype": "float32", "transformers_version": "4.27.0.dev0",
        "text_config": {**generic, "model_type": "clap_text_model", "vocab_size": 50265, "pad_token_id": 1,
                        "bos_token_id": 0, "eos_token_id": 2, "position_embedding_type": "absolute",
                        "use_cache": True, "hidden_dropout_prob": 0.1, "classifier_dropout": None,
                        "max_position_embeddings": 514, "projection_hidden_act": "relu"},
        "audio_config": {**generic, "model_type": "clap_audio_model", "hidden_size": 768, "depths": [2, 2, 6, 2],
                         "num_hidden_layers": 4, "enable_fusion": True, "fusion_type": None,
                         "num_classes": 527, "drop_path_rate": 0.0, "patch_stride": [4, 4]},
    }

    config = ClapConfig.from_dict(raw)

    assert (config.text.hidden_size, config.audio.hidden_size, config.projection_dim) == (768, 768, 512)
    assert config.audio.enable_fusion and config.audio.grid_size == (64, 64)


def test_top_level_projection_dim_overrides_the_towers():
    config = ClapConfig.from_dict({"projection_dim": 64, "text_config": {"projection_dim": 512}})

    assert config.text.projection_dim == config.audio.projection_dim == 64


@pytest.mark.parametrize("raw,message", [
    ({"text_config": {"rotary_dim": 8}}, r"unknown key\(s\) \['rotary_dim'\]"),
    ({"audio_config": {"hidden_size": 1024}}, "hidden_size 1024 disagrees"),
    ({"audio_config": {"fusion_type": "channel_map"}}, "fusion_type"),
    ({"audio_config": {"depths": [2, 2], "num_attention_heads": [4]}}, "equal length"),
    ({"model_type": "clip"}, "model_type 'clip'"),
    ({"text_config": {"position_embedding_type": "relative_key"}}, "position_embedding_type"),
])
def test_bad_config_raises_config_error_naming_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        ClapConfig.from_dict(raw)


def test_attach_text_encoder_gives_clap_conditioners_their_encoder():
    """factory.attach_text_encoder loads the CLAP folder into a model's clap_text conditioner."""
    import json

    from helpers import FIXTURES, perturbed_model, tiny_config
    from stable_audio_core.factory import attach_text_encoder
    from stable_audio_core.text.conditioners import CLAPTextConditioner

    folder = FIXTURES / "clap" / "model"
    width = json.loads((folder / "config.json").read_text())["text_config"]["hidden_size"]
    model = perturbed_model(tiny_config())
    # The fixture tower is narrower than the real 768: size the conditioner to it by hand.
    model.conditioner.conditioners["prompt"] = CLAPTextConditioner(
        32, use_text_features=True, feature_layer_ix=-2, project_out=True, text_width=width)
    attach_text_encoder(model, folder)
    tokens = model.condition([{"prompt": "soft rain", "seconds_start": 0, "seconds_total": 1}]).cross_attn_cond
    assert tokens.shape == (1, 77 + 2, 32) and torch.isfinite(tokens).all()
