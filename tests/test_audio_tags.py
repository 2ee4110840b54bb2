"""Saved audio formats and the tags they carry: every writable format reads back with its length,
rate and channels; FLAC, Ogg Vorbis, Opus and MP3 carry the prompt and workflow where ComfyUI's
frontend looks for them; Opus is resampled to 48 kHz without changing the duration."""

import json
import math
import struct

import pytest
import soundfile as sf
import torch

from stable_audio_core.audio.io import resampled_length, read_audio, write_audio, writable_formats
from stable_audio_core.audio.tags import TAGGED_FORMATS, _ogg_crc, read_tags, write_tags

RATE = 44100
LOSSY = ("ogg", "opus", "mp3")
PROMPT = {"3": {"class_type": "StableAudio_SaveAudio", "inputs": {"format": "opus", "x": [1, 0]}}}
WORKFLOW = {"nodes": [{"id": 3, "type": "StableAudio_SaveAudio", "title": "Save {audio}"}], "links": []}


def _tone(seconds=1.0, hz=440.0, channels=2):
    t = torch.arange(int(RATE * seconds)) / RATE
    return (0.5 * torch.sin(2 * math.pi * hz * t))[None].repeat(channels, 1)


def _comfy_tags(workflow=WORKFLOW):
    return {"prompt": json.dumps(PROMPT), "workflow": json.dumps(workflow)}


def _ogg_pages(data):
    """[(sequence number, stored crc, crc of the page with its crc field zeroed)]"""
    pages, pos = [], 0
    while pos < len(data):
        seq, crc, count = struct.unpack_from("<IIB", data, pos + 18)
        end = pos + 27 + count + sum(data[pos + 27:pos + 27 + count])
        page = bytearray(data[pos:end])
        page[22:26] = bytes(4)
        pages.append((seq, crc, _ogg_crc(bytes(page))))
        pos = end
    return pages


def test_every_format_is_writable_here():
    assert writable_formats() == ["wav", "flac", "ogg", "opus", "mp3"]


@pytest.mark.parametrize("fmt", TAGGED_FORMATS)
def test_tagged_formats_round_trip_audio_and_tags(tmp_path, fmt):
    tags = _comfy_tags()
    path = write_audio(tmp_path / f"a.{fmt}", _tone(channels=1 if fmt == "mp3" else 2), RATE,
                       tags=tags)
    back, rate = read_audio(path)
    expected_rate = 48000 if fmt == "opus" else RATE
    assert rate == expected_rate and back.shape == (1 if fmt == "mp3" else 2, expected_rate)
    assert read_tags(path) == tags
    assert not list(tmp_path.glob(".partial-*"))


def test_opus_is_resampled_to_48k_keeping_duration_and_pitch(tmp_path):
    path = write_audio(tmp_path / "a.opus", _tone(seconds=2.5, hz=1000.0), RATE)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate) == ("OGG", "OPUS", 48000)
    assert info.frames == resampled_length(int(RATE * 2.5), RATE, 48000) == 120000
    back, _ = read_audio(path)
    spectrum = torch.fft.rfft(back[0, 4800:-4800]).abs()
    peak_hz = spectrum.argmax().item() * 48000 / (back.shape[-1] - 9600)
    assert abs(peak_hz - 1000.0) < 1.0   # one FFT bin is 0.43 Hz here


@pytest.mark.parametrize("fmt", ["ogg", "opus"])
def test_ogg_pages_keep_valid_checksums_and_sequence_after_retagging(tmp_path, fmt):
    path = write_audio(tmp_path / f"a.{fmt}", _tone(), RATE)
    original = _ogg_pages(path.read_bytes())
    assert all(stored == computed for _, stored, computed in original)   # libsndfile's CRCs agree
    # a workflow larger than one Ogg page (65025 bytes) moves every audio page back
    big = {"nodes": [{"id": i, "widgets_values": ["x" * 200]} for i in range(400)]}
    write_tags(path, _comfy_tags(big))
    pages = _ogg_pages(path.read_bytes())
    assert len(pages) > len(original)
    assert [seq for seq, _, _ in pages] == list(range(len(pages)))
    assert all(stored == computed for _, stored, computed in pages)
    assert json.loads(read_tags(path)["workflow"]) == big
    assert sf.info(str(path)).frames == sf.info(str(path)).samplerate


@pytest.mark.parametrize("fmt", ["ogg", "opus"])
def test_ogg_comments_read_the_way_comfyuis_frontend_reads_them(tmp_path, fmt):
    # The frontend decodes the first pages as Latin-1 text and takes, for `prompt` and
    # `workflow`: from "<key>={" to the first NUL after the next "}", then the outer {...}.
    path = write_audio(tmp_path / f"a.{fmt}", _tone(), RATE, tags=_comfy_tags())
    text = path.read_bytes().decode("latin-1")
    for key, expected in (("prompt", PROMPT), ("workflow", WORKFLOW)):
        start = text.index(f"{key}={{") + len(key) + 1
        end = text.index("\0", text.index("}", start))
        found = text[start:end]
        assert json.loads(found[found.index("{"):found.rindex("}") + 1]) == expected


def test_mp3_tags_read_the_way_comfyuis_frontend_reads_them(tmp_path):
    # ID3 TXXX frames: "<key>\0{json}\0" before the first MPEG frame (0xFF 0xFB)
    path = write_audio(tmp_path / "a.mp3", _tone(), RATE, tags=_comfy_tags())
    data = path.read_bytes()
    head = data[:data.index(b"\xff\xfb")].decode("latin-1")
    for key, expected in (("prompt", PROMPT), ("workflow", WORKFLOW)):
        start = head.index(f"{key}\0{{") + len(key) + 1
        assert json.loads(head[start:head.index("\0", start)]) == expected


def test_retagging_an_mp3_replaces_its_id3_tag(tmp_path):
    path = write_audio(tmp_path / "a.mp3", _tone(), RATE, tags={"prompt": "{}", "old": "x"})
    write_tags(path, {"prompt": '{"1": {}}'})
    assert read_tags(path) == {"prompt": '{"1": {}}'}
    assert path.read_bytes().count(b"ID3") == 1
    assert sf.info(str(path)).frames == RATE


def test_wav_takes_no_tags(tmp_path):
    from stable_audio_core.errors import InputError
    with pytest.raises(InputError, match="not wav; write a sidecar"):
        write_audio(tmp_path / "a.wav", _tone(), RATE, tags={"prompt": "{}"})
    assert not list(tmp_path.iterdir())
