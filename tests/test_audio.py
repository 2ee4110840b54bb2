"""Audio I/O: resampling accuracy, channel mapping, safe writes and clear read errors."""

import math

import pytest
import torch

from stable_audio_core.audio.io import fit_length, prepare_audio, read_audio, resample, set_channels, write_audio
from stable_audio_core.errors import AudioFileError, InputError
from stable_audio_core.audio.postprocess import detect_content_end, trim_silence


@pytest.mark.parametrize("orig, new", [(48000, 44100), (22050, 44100), (44100, 16000)])
def test_resampled_sine_matches_the_analytic_sine(orig, new):
    t = torch.arange(orig) / orig
    tone = torch.sin(2 * math.pi * 1000 * t)[None]
    out = resample(tone, orig, new)
    assert out.shape[-1] == new
    expected = torch.sin(2 * math.pi * 1000 * torch.arange(new) / new)
    # Away from the edges a 1 kHz tone passes the windowed-sinc filter with < 1e-3 error.
    assert (out[0, 300:-300] - expected[300:-300]).abs().max() < 1e-3


def test_mono_becomes_stereo_and_surround_is_cut():
    assert set_channels(torch.ones(1, 5), 2).shape == (2, 5)
    assert set_channels(torch.ones(6, 5), 2).shape == (2, 5)
    assert prepare_audio(torch.ones(100), 44100, 44100, 2, 150).shape == (1, 2, 150)
    assert fit_length(torch.ones(2, 10), 4).shape == (2, 4)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_write_then_read_round_trips(tmp_path, fmt):
    audio = 0.5 * torch.sin(torch.linspace(0, 200, 4410))[None].repeat(2, 1)
    path = write_audio(tmp_path / f"a.{fmt}", audio, 44100)
    back, rate = read_audio(path)
    assert rate == 44100 and back.shape[0] == 2
    assert abs(back.shape[1] - 4410) <= 0 if fmt != "ogg" else True
    if fmt in ("wav", "flac"):
        assert (back - audio).abs().max() < 1e-3  # 16-bit quantisation
    assert not list(tmp_path.glob(".partial-*"))


def test_unknown_format_and_non_audio_file_errors(tmp_path):
    with pytest.raises(InputError, match="unknown audio format"):
        write_audio(tmp_path / "a.xyz", torch.zeros(2, 10), 44100)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(AudioFileError, match="could not be decoded"):
        read_audio(text)
    assert not (tmp_path / "a.xyz").exists()


def test_energy_detector_finds_where_the_sound_stops():
    rate = 44100
    audio = torch.zeros(2, 3 * rate)
    audio[:, : int(1.5 * rate)] = 0.5 * torch.randn(2, int(1.5 * rate))
    assert abs(detect_content_end(audio, rate) - 1.5) <= 0.02
    assert trim_silence(audio, rate).shape[-1] == pytest.approx(1.5 * rate, abs=0.02 * rate)
    assert trim_silence(audio, rate, seconds_total=2.0).shape[-1] == 2 * rate
