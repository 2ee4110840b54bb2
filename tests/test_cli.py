"""The `stable-audio-toolkit generate` command on a small checkpoint built in the test."""

import json

import soundfile as sf

from stable_audio_host.cli import main as cli_main, output_paths, sanitize_filename

from helpers import perturbed_model, save_checkpoint, tiny_config


def _model_files(tmp_path):
    """A tiny model whose "prompt" conditioner takes numbers (so prompts here are numerals)."""
    config = tiny_config()
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    save_checkpoint(perturbed_model(config), tmp_path / "model.safetensors")
    return ["--config", str(tmp_path / "model_config.json"), "--checkpoint", str(tmp_path / "model.safetensors")]


def test_generate_writes_stereo_audio_of_the_requested_duration(tmp_path, capsys):
    out = tmp_path / "out" / "clip.wav"
    seconds = 800 / 44100
    code = cli_main(["generate", "3", "--seconds", str(seconds), "--steps", "2", "--seed", "4",
                     "--sampler", "dpmpp-2m", "-o", str(out), *_model_files(tmp_path)])
    assert code == 0
    info = sf.info(str(out))
    assert info.samplerate == 44100 and info.channels == 2 and info.frames == 800
    assert "seed 4" in capsys.readouterr().out


def test_batch_writes_one_file_per_item_with_its_seed(tmp_path):
    folder = tmp_path / "renders"
    code = cli_main(["generate", "2", "--steps", "1", "--batch", "2", "--seed-per-item", "--seed", "10",
                     "-o", str(folder), "--format", "flac", *_model_files(tmp_path)])
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["2_10_0.flac", "2_11_1.flac"]


def test_flac_output_carries_the_prompt_and_the_settings_that_reproduce_it(tmp_path):
    from stable_audio_core.audio.tags import read_tags
    files = _model_files(tmp_path)
    code = cli_main(["generate", "3", "--steps", "2", "--seed", "9", "--sampler", "dpmpp-2m",
                     "--cfg-scale", "3", "-o", str(tmp_path / "a.flac"), *files])
    assert code == 0
    tags = read_tags(tmp_path / "a.flac")
    settings = json.loads(tags["stable_audio_settings"])
    assert tags["DESCRIPTION"] == "3"
    assert settings["seed"] == 9 and settings["steps"] == 2 and settings["cfg_scale"] == 3.0
    assert settings["sampler"] == "dpmpp-2m" and settings["prompt"] == "3"
    again = ["generate", settings["prompt"], "--steps", str(settings["steps"]), "--seed", str(settings["seed"]),
             "--sampler", settings["sampler"], "--cfg-scale", str(settings["cfg_scale"]),
             "-o", str(tmp_path / "b.flac"), *files]
    assert cli_main(again) == 0
    assert (sf.read(str(tmp_path / "a.flac"))[0] == sf.read(str(tmp_path / "b.flac"))[0]).all()
    assert cli_main(["generate", "3", "--steps", "1", "-o", str(tmp_path / "c.wav"), *files]) == 0
    assert not (tmp_path / "c.wav.json").exists()   # other formats stay a single file
    assert cli_main(["generate", "3", "--steps", "1", "-o", str(tmp_path / "d.opus"), *files]) == 0
    opus_tags = read_tags(tmp_path / "d.opus")   # Ogg Opus carries the same tags as FLAC
    assert opus_tags["DESCRIPTION"] == "3" and json.loads(opus_tags["stable_audio_settings"])["steps"] == 1
    assert sf.info(str(tmp_path / "d.opus")).samplerate == 48000


def test_generate_with_a_checkpoint_but_no_config_explains_what_to_pass(capsys):
    assert cli_main(["generate", "hello", "--checkpoint", "model.safetensors"]) == 2
    assert "--config" in capsys.readouterr().err


def test_generate_without_a_model_and_without_the_bundled_files_names_what_is_missing(tmp_path, monkeypatch, capsys):
    from stable_audio_core import default_model
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", tmp_path)
    assert cli_main(["generate", "hello", "-o", str(tmp_path / "x.wav")]) != 0
    assert "bundled default model is incomplete" in capsys.readouterr().err


def test_bad_duration_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    code = cli_main(["generate", "1", "--seconds", "999", *_model_files(tmp_path)])
    assert code == 2
    assert "longer than the generation window" in capsys.readouterr().err


def test_file_names_are_sanitized_and_stay_in_the_output_folder():
    assert sanitize_filename("../../etc/passwd; rm -rf") == "etc_passwd_rm_-rf"
    assert sanitize_filename("") == "audio"
    paths = output_paths("out", "a/b", [1], "wav")
    assert paths[0].parent.name == "out" and "/" not in paths[0].name
