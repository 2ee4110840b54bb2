"""The synthetic dataset generator (tools/synthdata): determinism, metadata contract, captions,
sound effects, the missing-package message, and (when fluidsynth is installed) real rendering."""

from __future__ import annotations

import functools
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

from synthdata import cli, render  # noqa: E402
from synthdata.captions import EXTRA_FIELDS, FIELDS  # noqa: E402
from synthdata.compose import compose_song  # noqa: E402
from synthdata.dataset import compose_metadata, generate_dataset, plan_dataset, split_ids  # noqa: E402
from synthdata.merge import MergeError, merge_datasets  # noqa: E402
from synthdata.midi import song_to_midi  # noqa: E402
from synthdata.postprocess import finish_clip  # noqa: E402
from synthdata.render import fold_to_mono  # noqa: E402
from synthdata.sfx import SFX_KINDS, synthesize_sfx  # noqa: E402
from synthdata.vocab import DRUMS, GENRES, INSTRUMENTS, MOODS  # noqa: E402

SR = 44100
HAS_RENDERER = not render.missing_requirements()


@pytest.fixture
def mido():
    return pytest.importorskip("mido", reason="mido writes the MIDI files (pip install mido)")


@functools.lru_cache(maxsize=None)
def _metadata_sample(count: int = 200, seed: int = 5) -> tuple[dict, ...]:
    return tuple(compose_metadata(p) for p in plan_dataset(seed, count, sfx_fraction=0.2))


def _db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


# --- composition ---------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_midi_and_other_seeds_differ(mido):
    first = [song_to_midi(compose_song(seed, 1.0 + seed * 0.45)) for seed in range(20)]
    again = [song_to_midi(compose_song(seed, 1.0 + seed * 0.45)) for seed in range(20)]
    assert first == again
    assert len(set(first)) == len(first)


def test_midi_starts_at_zero_ends_at_duration_and_uses_the_named_programs(mido):
    for seed in range(40):
        duration = 1.0 + (seed * 0.73) % 9.0
        song = compose_song(seed, duration)
        midi = mido.MidiFile(file=io.BytesIO(song_to_midi(song)))
        # the end-of-track events sit at the clip's end; 1 ms covers tick rounding at 480 ticks per beat
        assert midi.length == pytest.approx(duration, abs=1e-3)
        assert len(midi.tracks) == len(song.parts) + 1
        starts = []
        for part, track in zip(song.parts, midi.tracks[1:]):
            programs = [m.program for m in track if m.type == "program_change"]
            drums = part.instrument == DRUMS
            expected = GENRES[song.genre].drum_kit if drums else INSTRUMENTS[part.instrument].program
            assert programs == [expected]
            tick, first_on, last_off = 0, None, 0
            for message in track:
                tick += message.time
                if message.type == "note_on" and first_on is None:
                    first_on = tick
                if message.type == "note_off":
                    last_off = tick
            assert first_on <= 480, f"{part.instrument} {part.role} waits more than a beat"  # offbeat styles
            assert last_off <= round(song.beats * 480)
            starts.append(first_on)
        assert min(starts) == 0  # the music begins at the clip's start


def test_fast_decaying_instruments_roll_long_notes_so_the_sound_lasts(mido):
    rolled = [p for seed in range(300) for p in compose_song(seed, 8.0).parts if p.instrument == "marimba"]
    assert rolled
    assert max(n.length for part in rolled for n in part.notes) <= 1.0  # a marimba note dies in ~1 beat


def test_plans_are_deterministic_and_a_larger_count_extends_the_same_clips():
    small, large = plan_dataset(9, 50), plan_dataset(9, 120)
    assert small == plan_dataset(9, 50)
    assert large[:50] == small
    assert plan_dataset(10, 50) != small


def test_durations_vary_over_the_whole_window():
    durations = np.array([p.duration for p in plan_dataset(3, 600, min_seconds=1.0, max_seconds=10.0)])
    assert durations.min() >= 1.0 and durations.max() <= 10.0
    counts, _ = np.histogram(durations, bins=9, range=(1.0, 10.0))
    assert counts.min() >= 0.05 * len(durations), counts  # roughly uniform: each second holds >= 5 %
    assert np.allclose(durations * 100, np.round(durations * 100))  # 10 ms steps: whole samples


def test_sfx_fraction_sets_the_share_of_sound_effects():
    kinds = [p.kind for p in plan_dataset(4, 2000, sfx_fraction=0.2)]
    assert 0.17 < kinds.count("sfx") / len(kinds) < 0.23  # binomial sd ~0.009
    assert {p.kind for p in plan_dataset(4, 50, sfx_fraction=0.0)} == {"music"}
    assert {p.kind for p in plan_dataset(4, 50, sfx_fraction=1.0)} == {"sfx"}


# --- metadata and captions -----------------------------------------------------------------------

def test_solo_fraction_makes_lone_melodies_of_every_instrument_in_any_genre():
    plans = plan_dataset(11, 400, sfx_fraction=0.0, solo_fraction=1.0)
    assert all(p.solo and p.kind == "music" for p in plans)
    songs = [compose_song(p.seed, p.duration, p.solo) for p in plans[:150]]
    assert all(len(s.parts) == 1 and s.parts[0].role == "melody" for s in songs)
    heard = {s.parts[0].instrument for s in songs}
    assert heard == {name for name, i in INSTRUMENTS.items() if "melody" in i.ranges}
    # instruments outside their genre's own melody palette too (e.g. a flute in a rock tune)
    assert any(s.parts[0].instrument not in GENRES[s.genre].melody for s in songs)
    for p in plans[:40]:
        meta = compose_metadata(p)
        assert meta["instruments"] == [compose_song(p.seed, p.duration, True).parts[0].instrument]
        assert f"{meta['instruments'][0]} melody" in meta["description"]
    mixed = plan_dataset(11, 400, sfx_fraction=0.2, solo_fraction=0.5)
    solos = sum(p.solo for p in mixed) / sum(p.kind == "music" for p in mixed)
    assert 0.4 < solos < 0.6 and not any(p.solo for p in mixed if p.kind == "sfx")


def test_solo_fraction_zero_keeps_the_plans_of_datasets_made_before_it():
    before = plan_dataset(5, 200, sfx_fraction=0.2)
    assert plan_dataset(5, 200, sfx_fraction=0.2, solo_fraction=0.0) == before
    with_solos = plan_dataset(5, 200, sfx_fraction=0.2, solo_fraction=0.3)
    assert [(p.kind, p.duration, p.seed) for p in with_solos] == [(p.kind, p.duration, p.seed) for p in before]
    song = compose_song(before[0].seed, before[0].duration)
    assert compose_song(before[0].seed, before[0].duration, solo=False) == song


def test_metadata_has_exactly_the_contract_fields_in_range(mido):
    for meta in _metadata_sample():
        assert set(meta) == set(FIELDS) | set(EXTRA_FIELDS)
        assert isinstance(meta["description"], str) and meta["description"]
        assert 1.0 <= meta["duration"] <= 10.0
        assert isinstance(meta["seed"], int) and 0 <= meta["seed"] < 2 ** 31
        assert meta["instruments"] and len(set(meta["instruments"])) == len(meta["instruments"])
        if meta["kind"] == "music":
            genre = GENRES[meta["genre"]]
            assert genre.bpm_range[0] <= meta["bpm"] <= genre.bpm_range[1]
            assert meta["mood"] in MOODS and meta["density"] in ("sparse", "moderate", "busy")
            assert set(meta["instruments"]) <= set(INSTRUMENTS) | {DRUMS}
            if meta["instruments"] == [DRUMS]:
                assert meta["key"] is None
            else:
                assert re.fullmatch(r"[A-G][#b]? (major|minor)", meta["key"])
        else:
            assert meta["kind"] == "sfx" and meta["genre"] == "sound effect"
            assert meta["instruments"][0] in SFX_KINDS and meta["key"] is None
            assert meta["bpm"] is None or (isinstance(meta["bpm"], int) and 30 <= meta["bpm"] <= 300)


def test_caption_names_every_instrument_and_the_mood_bpm_and_key(mido):
    for meta in _metadata_sample():
        text = meta["description"]
        for instrument in meta["instruments"]:
            assert instrument in text, (instrument, text)
        if meta["kind"] == "music":
            assert meta["mood"] in text and f"{meta['bpm']} BPM" in text and meta["genre"] in text
            if meta["key"]:
                assert meta["key"] in text
        elif meta["bpm"]:
            assert f"{meta['bpm']} BPM" in text


def test_every_instrument_genre_and_mood_is_heard(mido):
    metas = [m for m in _metadata_sample(400, seed=8) if m["kind"] == "music"]
    heard = {i for m in metas for i in m["instruments"]}
    assert heard == set(INSTRUMENTS) | {DRUMS}
    assert {m["genre"] for m in metas} == set(GENRES)
    assert {m["mood"] for m in metas} == set(MOODS)
    assert len({m["description"] for m in metas}) == len(metas)


def test_split_is_deterministic_disjoint_and_about_five_percent():
    ids = [f"{i:06d}" for i in range(2000)]
    split = split_ids(ids, 1234, 0.05)
    assert split == split_ids(ids, 1234, 0.05)
    assert sorted(split["train"] + split["held_out"]) == ids
    assert 0.035 < len(split["held_out"]) / len(ids) < 0.065  # binomial sd ~0.005
    assert split_ids(ids[:2], 1234, 0.05)["held_out"]  # small sets still hold one clip out


# --- sound effects and post-processing -----------------------------------------------------------

def _sfx_by_kind() -> dict:
    found, seed = {}, 0
    while len(found) < len(SFX_KINDS):
        duration = 1.0 + (seed * 0.37) % 4.0
        audio, info = synthesize_sfx(seed, duration)
        found.setdefault(info.label, (seed, duration, audio, info))
        seed += 1
    return found


def test_every_sound_effect_fills_its_duration_at_a_sane_level():
    for label, (seed, duration, audio, info) in _sfx_by_kind().items():
        samples = int(round(duration * SR))
        assert audio.shape == (samples, 2) and audio.dtype == np.float32
        assert label in info.detail
        clip = finish_clip(audio, samples, SR)
        assert np.isfinite(clip).all()
        peak = float(np.abs(clip).max())
        assert 0.05 < peak <= 10 ** (-1 / 20) + 1e-6, label  # normalised, under the -1 dBFS ceiling
        assert -36.0 < _db(clip) < -19.5, label  # RMS target -20 dBFS, less for clicky effects
        frames = clip[: samples // 882 * 882].reshape(-1, 882, 2)  # 20 ms frames
        loud = np.sqrt(np.mean(frames ** 2, axis=(1, 2)))
        last_loud = np.nonzero(loud > loud.max() * 0.01)[0][-1]  # within 40 dB of the loudest frame
        assert (len(loud) - 1 - last_loud) * 0.02 <= 0.25, f"{label} goes quiet before its end"


def test_sound_effects_are_deterministic():
    for seed in range(12):
        first, info = synthesize_sfx(seed, 2.5)
        again, info_again = synthesize_sfx(seed, 2.5)
        assert info == info_again and np.array_equal(first, again)


def test_finish_clip_cuts_or_pads_to_length_and_fades_the_end():
    tone = np.full((SR, 2), 0.3, dtype=np.float32)
    assert finish_clip(tone, SR // 2, SR).shape == (SR // 2, 2)
    padded = finish_clip(tone, 2 * SR, SR)
    assert padded.shape == (2 * SR, 2) and not padded[SR:].any()
    cut = finish_clip(tone, SR // 2, SR)
    assert abs(cut[-1]).max() < 1e-3 and abs(cut[-int(0.04 * SR) - 1]).max() > 0.05


def test_opposite_phase_parts_fold_to_mono_keeping_their_level():
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    antiphase = np.stack([noise, -noise], axis=1)
    folded = fold_to_mono(antiphase, pan=64)
    assert np.corrcoef(folded[:, 0], folded[:, 1])[0, 1] > 0.999
    assert abs(_db(folded) - _db(antiphase)) < 0.2  # centre pan at equal power keeps the level


# --- the missing-package message -----------------------------------------------------------------

def _hide_tools(monkeypatch):
    real_find_spec = render.importlib.util.find_spec
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    monkeypatch.setattr(render.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mido" else real_find_spec(name, *a))
    monkeypatch.setattr(render, "SOUNDFONT_CANDIDATES", ())
    monkeypatch.delenv(render.SOUNDFONT_ENV, raising=False)


def test_missing_tools_are_named_with_their_install_commands(monkeypatch):
    _hide_tools(monkeypatch)
    with pytest.raises(render.MissingToolsError) as error:
        render.check_requirements()
    message = str(error.value)
    for words in ("fluidsynth", "FluidR3_GM", "mido", "apt-get install fluidsynth fluid-soundfont-gm",
                  "pip install mido"):
        assert words in message


def test_cli_exits_with_the_message_and_writes_nothing_when_tools_are_missing(monkeypatch, tmp_path, capsys):
    _hide_tools(monkeypatch)
    out = tmp_path / "data"
    assert cli.main(["--out", str(out), "--count", "3", "--seed", "1", "--sfx-fraction", "0"]) == 2
    assert "apt-get install fluidsynth fluid-soundfont-gm" in capsys.readouterr().err
    assert not out.exists()


# --- the dataset on disk -------------------------------------------------------------------------

def _check_layout(out: Path, count: int) -> list[dict]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"{i:06d}" for i in range(count)]
    for row in rows:
        sidecar = json.loads((out / "audio" / f"{row['id']}.json").read_text())
        assert {k: v for k, v in row.items() if k != "path"} == sidecar
        assert row["path"] == f"audio/{row['id']}.wav"
        info = sf.info(str(out / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 2, "PCM_16")
        assert info.frames == int(round(row["duration"] * SR))
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["held_out"]) == [r["id"] for r in rows]
    return rows


def test_sound_effect_dataset_is_written_resumable_and_identical_without_fluidsynth(tmp_path, monkeypatch):
    _hide_tools(monkeypatch)  # sound effects alone need none of the music tools
    logs: list[str] = []
    summary = generate_dataset(tmp_path / "a", count=5, seed=2, sfx_fraction=1.0, max_seconds=2.0,
                               log=logs.append)
    assert summary["made"] == 5
    _check_layout(tmp_path / "a", 5)
    assert generate_dataset(tmp_path / "a", count=5, seed=2, sfx_fraction=1.0, max_seconds=2.0,
                            log=logs.append)["made"] == 0
    generate_dataset(tmp_path / "b", count=5, seed=2, sfx_fraction=1.0, max_seconds=2.0, log=logs.append)
    clips = [f"audio/{i:06d}.{ext}" for i in range(5) for ext in ("wav", "json")]
    for name in ["manifest.jsonl", "split.json"] + clips:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with pytest.raises(ValueError, match="other parameters"):
        generate_dataset(tmp_path / "a", count=5, seed=3, sfx_fraction=1.0, max_seconds=2.0, log=logs.append)
    # a dataset made before solo_fraction existed resumes as solo_fraction 0, and only as that
    described = json.loads((tmp_path / "a" / "dataset.json").read_text())
    del described["solo_fraction"]
    (tmp_path / "a" / "dataset.json").write_text(json.dumps(described))
    assert generate_dataset(tmp_path / "a", count=6, seed=2, sfx_fraction=1.0, max_seconds=2.0,
                            log=logs.append)["made"] == 1
    with pytest.raises(ValueError, match="solo_fraction: 0.0 there, 0.5 now"):
        generate_dataset(tmp_path / "a", count=6, seed=2, sfx_fraction=1.0, max_seconds=2.0, solo_fraction=0.5,
                         log=logs.append)


def test_merged_datasets_train_as_one_with_every_split_and_no_copies(tmp_path, monkeypatch):
    from stable_audio_core.training.data import AudioFolderDataset

    _hide_tools(monkeypatch)
    for name, count, seed in (("first", 40, 2), ("second", 30, 5)):
        generate_dataset(tmp_path / name, count=count, seed=seed, sfx_fraction=1.0, max_seconds=1.5,
                         log=lambda line: None)
    counts = merge_datasets([tmp_path / "first", tmp_path / "second"], tmp_path / "both")
    splits = [json.loads((tmp_path / name / "split.json").read_text()) for name in ("first", "second")]
    assert counts == {"items": 70, "train": sum(len(s["train"]) for s in splits),
                      "held_out": sum(len(s["held_out"]) for s in splits)}
    assert not (tmp_path / "both" / "audio").exists()  # referenced, not copied
    rows = [json.loads(line) for line in (tmp_path / "both" / "manifest.jsonl").read_text().splitlines()]
    assert rows[0]["id"] == "first-000000" and rows[0]["path"] == "../first/audio/000000.wav"
    assert rows[40]["id"] == "second-000000" and rows[40]["description"] == json.loads(
        (tmp_path / "second" / "audio" / "000000.json").read_text())["description"]
    for split, expected in (("train", counts["train"]), ("held_out", counts["held_out"])):
        dataset = AudioFolderDataset(tmp_path / "both", sample_rate=44100, sample_size=4096, split=split)
        assert len(dataset.entries) == expected
        # the same id in both sources stays two items, each with its own audio
        ids = [entry.metadata["id"] for entry in dataset.entries]
        assert len(set(ids)) == len(ids)
    item = AudioFolderDataset(tmp_path / "both", sample_rate=44100, sample_size=4096).get(40, seed=0)
    assert item["audio"].shape == (2, 4096) and item["metadata"]["prompt"]
    with pytest.raises(MergeError, match="already holds a manifest"):
        merge_datasets([tmp_path / "first", tmp_path / "second"], tmp_path / "both")
    with pytest.raises(MergeError, match="no manifest"):
        merge_datasets([tmp_path / "first", tmp_path / "both" / "missing"], tmp_path / "other")


@pytest.mark.skipif(not HAS_RENDERER, reason="needs fluidsynth, fluid-soundfont-gm and mido "
                    "(apt-get install fluidsynth fluid-soundfont-gm; pip install mido)")
def test_rendered_music_has_the_contract_format_and_is_byte_identical_across_runs(tmp_path):
    kwargs = dict(seed=11, sfx_fraction=0.0, min_seconds=1.0, max_seconds=3.0, log=lambda line: None)
    generate_dataset(tmp_path / "a", count=3, **kwargs)
    generate_dataset(tmp_path / "b", count=2, **kwargs)  # a smaller count: the same first clips
    rows = _check_layout(tmp_path / "a", 3)
    for row in rows[:2]:
        for name in (row["path"], f"audio/{row['id']}.json", f"midi/{row['id']}.mid"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for row in rows:
        audio, _ = sf.read(str(tmp_path / "a" / row["path"]), dtype="float32")
        assert -21.0 < _db(audio) < -19.0 or np.abs(audio).max() > 0.85  # RMS target unless peak-limited
        tail = audio[-int(0.3 * SR):-int(0.05 * SR)]
        assert _db(tail) > _db(audio) - 30.0, "music must sound until the clip's end"
