"""The default model that ships in the package: its files load, it stays under the size limit,
and `stable-audio-toolkit generate PROMPT --seconds S` with no model arguments writes S seconds of
44.1 kHz stereo."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch

from stable_audio_core.default_model import DEFAULT_MODEL_DIR, default_model_files, load_default_model
from stable_audio_core.text.conditioners import CLAPTextConditioner
from stable_audio_core.pipeline import defaults_for, generate
from stable_audio_host.cli import main as cli_main

SIZE_LIMIT_BYTES = 60_000_000   # issue 6: the whole default model stays under 60 MB in the repository
# The fast cases generate in a window just over the request; the heavy ones in the model's own
# window (about 10 s), as a user does.
SHORT_WINDOW_SECONDS = 3.5


@pytest.fixture(scope="module")
def model():
    return load_default_model()


def test_the_bundled_files_are_there_and_under_the_size_limit():
    files = default_model_files()
    assert files.checkpoint.stat().st_size > 1_000_000   # real weights, not a pointer file
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file())
    assert total < SIZE_LIMIT_BYTES


def test_the_bundled_model_loads_with_its_clap_text_encoder(model):
    assert (model.sample_rate, model.audio_channels) == (44100, 2)
    clap = model.conditioner.conditioners["prompt"]
    assert isinstance(clap, CLAPTextConditioner) and clap.text_encoder is not None
    settings = defaults_for(model)
    assert settings["steps"] == model.config.raw["sampling_defaults"]["steps"]


@pytest.mark.parametrize("window_seconds", [
    pytest.param(SHORT_WINDOW_SECONDS, id="short-window"),
    pytest.param(None, id="model-window", marks=pytest.mark.heavy)])
def test_a_short_generation_has_the_requested_duration(model, window_seconds):
    sample_size = int(window_seconds * model.sample_rate) if window_seconds else None
    result = generate(model, "warm piano chords, 90 BPM", seconds_total=2.5, steps=4, seed=0,
                      sample_size=sample_size)
    assert result.audio.shape == (1, 2, int(2.5 * 44100))
    assert torch.isfinite(result.audio).all() and result.audio.abs().max() > 0


@pytest.mark.parametrize("window", [
    pytest.param(["--window", str(SHORT_WINDOW_SECONDS)], id="short-window"),
    pytest.param([], id="model-window", marks=pytest.mark.heavy)])
def test_generate_command_needs_no_model_arguments(tmp_path, window):
    out = tmp_path / "clip.wav"
    code = cli_main(["generate", "warm piano chords, 90 BPM", "--seconds", "3", "--steps", "4",
                     "--seed", "1", "-o", str(out), *window])
    assert code == 0
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 3 * 44100)
