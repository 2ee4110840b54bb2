"""The model config format: stable-audio-tools' model_config.json, validated with clear errors."""

import json

import pytest

from stable_audio_core.config import load_model_config
from stable_audio_core.errors import ConfigError
from stable_audio_core.factory import build_model

from helpers import ROOT


def test_bundled_sao_configs_parse_with_their_reference_fields():
    cfg = load_model_config(ROOT / "stable_audio_core" / "configs" / "stable_audio_open_1.0.json")
    assert cfg.sample_rate == 44100 and cfg.sample_size == 2097152
    assert cfg.diffusion_type == "dit" and cfg.objective == "v"
    assert cfg.cross_attention_cond_ids == ("prompt", "seconds_start", "seconds_total")
    assert cfg.global_cond_ids == ("seconds_start", "seconds_total")
    small = load_model_config(ROOT / "stable_audio_core" / "configs" / "stable_audio_open_small.json")
    assert small.objective == "rf_denoiser" and small.conditioner_ids == ("prompt", "seconds_total")


def test_unknown_top_level_key_is_named_in_the_error(config):
    config["modle"] = {}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['modle'\]"):
        load_model_config(config)


def test_unknown_model_type_lists_the_supported_ones(config):
    config["model_type"] = "lm"
    with pytest.raises(ConfigError, match="model_type 'lm' is not supported.*diffusion_cond"):
        load_model_config(config)


def test_unknown_conditioner_type_names_the_conditioner(config):
    config["model"]["conditioning"]["configs"][0]["type"] = "mystery"
    with pytest.raises(ConfigError, match="conditioner 'prompt' has unknown type 'mystery'"):
        build_model(config)


def test_unknown_conditioner_option_is_rejected(config):
    config["model"]["conditioning"]["configs"][1]["config"]["maxval"] = 3
    with pytest.raises(ConfigError, match="maxval"):
        build_model(config)


def test_cond_ids_must_name_defined_conditioners(config):
    config["model"]["diffusion"]["global_cond_ids"] = ["seconds_end"]
    with pytest.raises(ConfigError, match="seconds_end"):
        load_model_config(config)


def test_unknown_diffusion_type_lists_supported(config):
    config["model"]["diffusion"]["type"] = "unet9000"
    with pytest.raises(ConfigError, match="'unet9000' is not supported"):
        build_model(config)


def test_unknown_objective_is_rejected(config):
    config["model"]["diffusion"]["diffusion_objective"] = "eps"
    with pytest.raises(ConfigError, match="diffusion_objective 'eps'"):
        load_model_config(config)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "model_config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="model_config.json is not valid JSON"):
        load_model_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_model_config(tmp_path / "missing.json")


@pytest.mark.parametrize("content,message", [
    (None, r"T5 config .*config.json not found; a Hugging Face T5 folder has config.json"),
    (b"\xff\xfe{}", r"T5 config .*config.json is not UTF-8 text"),
    (b"{not json", r"T5 config .*config.json is not valid JSON"),
    (b"[1, 2]", r"T5 config .*config.json must hold a JSON object, got list"),
])
def test_hugging_face_json_file_errors_name_what_and_the_file(tmp_path, content, message):
    from stable_audio_core.text.t5 import T5Config
    path = tmp_path / "config.json"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(ConfigError, match=message):
        T5Config.from_json_file(path)


def test_configs_we_ship_are_plain_reference_json(tmp_path):
    # Our config files are stable-audio-tools files: a dict round-trips through JSON unchanged.
    path = ROOT / "stable_audio_core" / "configs" / "stable_audio_open_1.0.json"
    raw = json.loads(path.read_text())
    assert load_model_config(raw).raw == raw
