"""Training data: windows, timing, metadata sources, prompts and pre-encoded latents."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import tiny_config
from stable_audio_core.audio.io import read_audio, read_audio_window, resample
from stable_audio_core.errors import AudioFileError, InputError
from stable_audio_core.models.autoencoder import build_autoencoder
from stable_audio_core.training.data import AudioFolderDataset, crop_offset, timing_seconds
from stable_audio_core.training.latents import LatentDataset, LatentDatasets, crop_seed, encode_dataset, open_latents
from stable_audio_core.training.prompts import PromptOptions, build_prompt
from stable_audio_core.training.task import latent_padding_mask

RATE = 8000
WINDOW = 4096   # a multiple of the tiny autoencoder's downsampling ratio (16)


def write_tone(path, frames: int, rate: int = RATE, channels: int = 2, seed: int = 0, **kwargs):
    """Noise with a distinct level per channel, so channel mix-ups and offsets show."""
    rng = np.random.default_rng(seed)
    data = 0.2 * rng.standard_normal((frames, channels)).astype(np.float32)
    data *= np.linspace(0.5, 1.0, channels, dtype=np.float32)
    sf.write(str(path), data, rate, **kwargs)
    return data


def write_json(path, value):
    path.write_text(json.dumps(value))


METADATA = {"description": "a bright guitar loop", "instruments": ["Guitar", "Drums"],
            "genre": "Rock", "mood": "Uplifting, Energetic", "bpm": 120, "key": "C major"}


@pytest.fixture
def folder(tmp_path):
    """long.wav (2.5 windows, stereo), short.wav (mono, 3000 frames), both with sidecars."""
    root = tmp_path / "data"
    root.mkdir()
    write_tone(root / "long.wav", 10_000, subtype="FLOAT")
    write_tone(root / "short.wav", 3000, channels=1, seed=1, subtype="FLOAT")
    write_json(root / "long.json", METADATA)
    write_json(root / "short.json", {"instruments": ["Piano"], "mood": "Calm"})
    return root


def dataset(root, **kwargs):
    return AudioFolderDataset(root, sample_rate=RATE, sample_size=WINDOW, **kwargs)


# --------------------------------------------------------------------------------------------
# Windows, masks, timing
# --------------------------------------------------------------------------------------------


def test_items_are_a_function_of_index_and_seed(folder):
    first, second = dataset(folder), dataset(folder)
    a, b = first.get(0, 11), second.get(0, 11)
    assert torch.equal(a["audio"], b["audio"]) and a["metadata"] == b["metadata"]
    offsets = {first.get(0, seed)["metadata"]["crop_offset"] for seed in range(8)}
    assert len(offsets) > 1   # different seeds, different windows


def test_long_file_is_cropped_at_the_recorded_offset_and_fully_real(folder):
    whole, _ = read_audio(folder / "long.wav")
    item = dataset(folder).get(0, 5)
    offset = item["metadata"]["crop_offset"]
    assert 0 <= offset <= 10_000 - WINDOW
    assert torch.equal(item["audio"], whole[:, offset : offset + WINDOW])
    assert item["padding_mask"].dtype == torch.bool and item["padding_mask"].all()


def test_crop_offsets_cover_every_full_window_uniformly():
    offsets = [crop_offset(10, 4, seed) for seed in range(700)]
    counts = np.bincount(offsets, minlength=7)
    assert set(offsets) == set(range(7))
    assert counts.min() > 60   # 100 expected per offset; 60 is > 4 standard deviations below
    assert crop_offset(10, 4, 3, random_crop=False) == 0 and crop_offset(3, 4, 3) == 0


def test_short_mono_file_is_padded_with_silence_duplicated_to_stereo_and_masked(folder):
    mono, _ = read_audio(folder / "short.wav")
    item = dataset(folder).get(1, 0)
    audio, mask = item["audio"], item["padding_mask"]
    assert audio.shape == (2, WINDOW)
    assert torch.equal(audio[0], audio[1]) and torch.equal(audio[0, :3000], mono[0])
    assert (audio[:, 3000:] == 0).all()
    assert mask[:3000].all() and not mask[3000:].any()
    assert item["metadata"]["seconds_start"] == 0 and item["metadata"]["crop_offset"] == 0


def test_seconds_start_floors_the_offset_and_seconds_total_ceils_the_duration(folder):
    items = [dataset(folder).get(0, seed)["metadata"] for seed in range(20)]
    for metadata in items:
        assert metadata["seconds_start"] == metadata["crop_offset"] // RATE
        assert metadata["seconds_total"] == 2   # 10000 samples = 1.25 s -> 2
    assert {m["seconds_start"] for m in items} == {0}   # every offset <= 5904 < one second
    assert timing_seconds(14 * 44100 + 5, 180 * 44100, 44100) == (14, 180)   # the paper's example
    assert timing_seconds(44100, 95 * 44100 + 1, 44100) == (1, 96)


def test_first_window_without_random_crop(folder):
    item = dataset(folder, random_crop=False).get(0, 123)
    whole, _ = read_audio(folder / "long.wav")
    assert item["metadata"]["crop_offset"] == 0 and torch.equal(item["audio"], whole[:, :WINDOW])


def test_other_rates_are_resampled_to_the_model_rate_before_cropping(tmp_path):
    write_tone(tmp_path / "fast.wav", 16_000, rate=16_000, subtype="FLOAT")
    ds = AudioFolderDataset(tmp_path, sample_rate=RATE, sample_size=2048)
    item = ds.get(0, 4)
    full = resample(read_audio(tmp_path / "fast.wav")[0], 16_000, RATE)
    offset = item["metadata"]["crop_offset"]
    assert item["metadata"]["audio_length"] == 8000 and item["metadata"]["seconds_total"] == 1
    # The window decodes only the frames it needs; the same filter taps give the same samples
    # up to float summation order.
    assert (item["audio"] - full[:, offset : offset + 2048]).abs().max() < 1e-5


@pytest.mark.parametrize("rate, target", [(22050, 44100), (48000, 44100), (44100, 16000)])
@pytest.mark.parametrize("fmt, subtype", [("wav", "FLOAT"), ("ogg", None), ("mp3", None)])
def test_audio_windows_equal_slices_of_the_whole_resampled_file(tmp_path, rate, target, fmt, subtype):
    path = tmp_path / f"a.{fmt}"
    write_tone(path, 9001, rate=rate, subtype=subtype)
    full = resample(read_audio(path)[0], rate, target)
    for start in (0, 1234, full.shape[-1] - 700):
        window = read_audio_window(path, start, 1500, target)
        expected = full[:, start : start + 1500]
        assert window.shape == expected.shape
        assert (window - expected).abs().max() < 1e-5   # float summation order only


# --------------------------------------------------------------------------------------------
# Metadata sources, splits, bad files
# --------------------------------------------------------------------------------------------


def test_sidecar_fields_reach_the_item_metadata(folder):
    metadata = dataset(folder).get(0, 0)["metadata"]
    assert metadata["genre"] == "Rock" and metadata["bpm"] == 120
    assert metadata["relpath"] == "long.wav" and metadata["path"].endswith("long.wav")
    assert metadata["prompt"] == "a bright guitar loop"


def test_jsonl_manifest_lists_files_in_its_order_with_their_fields(tmp_path):
    (tmp_path / "audio").mkdir()
    write_tone(tmp_path / "audio" / "b.flac", 5000)
    write_tone(tmp_path / "audio" / "a.wav", 5000)
    lines = [{"path": "audio/b.flac", "genre": "Jazz", "instruments": ["Sax"]},
             {"path": "audio/a.wav", "genre": "Techno", "bpm": 128}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    ds = dataset(tmp_path)   # found without being named
    assert [e.relpath for e in ds.entries] == ["audio/b.flac", "audio/a.wav"]
    assert ds.get(1, 0)["metadata"]["bpm"] == 128 and ds.get(0, 0)["metadata"]["instruments"] == ["Sax"]


def test_csv_manifest_parses_lists_and_drops_empty_cells(tmp_path):
    write_tone(tmp_path / "x.wav", 5000)
    (tmp_path / "meta.csv").write_text(
        'file_name,instruments,mood,bpm,key\nx.wav,"[""Guitar"", ""Bass""]","Dark, Tense",90,\n'
    )
    ds = dataset(tmp_path, manifest=tmp_path / "meta.csv")
    metadata = ds.get(0, 0)["metadata"]
    assert metadata["instruments"] == ["Guitar", "Bass"] and metadata["mood"] == "Dark, Tense"
    assert metadata["bpm"] == "90" and "key" not in metadata


def test_manifest_errors_name_the_line_and_the_missing_files(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"path": "a.wav"}\n{not json\n')
    with pytest.raises(InputError, match="line 2"):
        dataset(tmp_path, manifest=tmp_path / "bad.jsonl")
    (tmp_path / "nopath.jsonl").write_text('{"genre": "Rock"}\n')
    with pytest.raises(InputError, match="names no audio file"):
        dataset(tmp_path, manifest=tmp_path / "nopath.jsonl")
    (tmp_path / "missing.jsonl").write_text('{"path": "gone.wav"}\n')
    with pytest.raises(AudioFileError, match="gone.wav"):
        dataset(tmp_path, manifest=tmp_path / "missing.jsonl")


def test_split_file_selects_entries_by_id_or_stem(folder):
    write_json(folder / "split.json", {"train": ["long"], "held_out": ["short"]})
    assert [e.relpath for e in dataset(folder, split="train").entries] == ["long.wav"]
    assert [e.relpath for e in dataset(folder, split="held_out").entries] == ["short.wav"]
    with pytest.raises(InputError, match="no split 'test'"):
        dataset(folder, split="test")


def test_unreadable_file_raises_an_error_naming_it(folder):
    (folder / "broken.wav").write_text("not audio at all")
    ds = dataset(folder)
    index = [e.relpath for e in ds.entries].index("broken.wav")
    with pytest.raises(AudioFileError, match="broken.wav"):
        ds.get(index, 0)


def test_unreadable_file_can_be_skipped_with_a_warning(folder):
    (folder / "broken.wav").write_text("not audio at all")
    ds = dataset(folder, on_error="skip")
    index = [e.relpath for e in ds.entries].index("broken.wav")
    with pytest.warns(UserWarning, match="broken.wav"):
        item = ds.get(index, 0)
    assert item["metadata"]["relpath"] != "broken.wav"


def test_collate_stacks_tensors_and_keeps_metadata_and_seeds(folder):
    ds = dataset(folder)
    batch = ds.collate([ds.get(0, 1), ds.get(1, 2)], [1, 2])
    assert batch["audio"].shape == (2, 2, WINDOW) and batch["padding_mask"].shape == (2, WINDOW)
    assert batch["seeds"].dtype == torch.int64 and batch["seeds"].tolist() == [1, 2]
    assert [m["relpath"] for m in batch["metadata"]] == ["long.wav", "short.wav"]


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------

FIELDS_ONLY = {k: v for k, v in METADATA.items() if k != "description"}


def test_description_is_used_as_is_unless_fields_are_asked_for():
    assert build_prompt(METADATA, PromptOptions(), seed=3) == "a bright guitar loop"
    options = PromptOptions(fields_instead_probability=1.0)
    assert all(build_prompt(METADATA, options, s) != "a bright guitar loop" for s in range(20))


def test_structured_prompts_label_a_subset_of_fields():
    options = PromptOptions(structured_probability=1.0)
    labels = {"Instruments": {"Guitar", "Drums"}, "Genre": {"Rock"}, "Moods": {"Uplifting", "Energetic"},
              "BPM": {"120"}, "Key": {"C major"}}
    for seed in range(30):
        prompt = build_prompt(FIELDS_ONLY, options, seed)
        for part in prompt.split(" | "):
            label, items = re.fullmatch(r"([A-Za-z]+): (.+)", part).groups()
            assert set(items.split(", ")) == labels[label]   # every item of a chosen field


def test_free_form_prompts_list_items_without_labels():
    options = PromptOptions(structured_probability=0.0)
    prompts = [build_prompt(FIELDS_ONLY, options, seed) for seed in range(30)]
    allowed = {"Guitar", "Drums", "Rock", "Uplifting", "Energetic", "120 BPM", "C major"}
    assert all(set(p.split(", ")) <= allowed and ":" not in p for p in prompts)
    assert max(len(p.split(", ")) for p in prompts) == len(allowed)   # sometimes every field
    assert min(len(p.split(", ")) for p in prompts) < len(allowed)    # sometimes a subset


def test_prompts_are_deterministic_in_the_seed_and_shuffled_across_seeds():
    options = PromptOptions(structured_probability=0.0, min_fields=5)
    assert build_prompt(FIELDS_ONLY, options, 7) == build_prompt(FIELDS_ONLY, options, 7)
    orders = {build_prompt(FIELDS_ONLY, options, seed) for seed in range(10)}
    assert len(orders) > 5
    fixed = PromptOptions(structured_probability=1.0, min_fields=5, shuffle=False)
    assert build_prompt(FIELDS_ONLY, fixed, 1) == (
        "Instruments: Guitar, Drums | Genre: Rock | Moods: Uplifting, Energetic | BPM: 120 | Key: C major"
    )


def test_prompt_without_fields_or_description_is_empty_and_bad_options_are_rejected():
    assert build_prompt({"seed": 3}, PromptOptions(), 0) == ""
    with pytest.raises(InputError, match="structured_probability"):
        PromptOptions(structured_probability=2.0)
    with pytest.raises(InputError, match="unknown prompt option"):
        PromptOptions.from_dict({"feilds": ["genre"]})


# --------------------------------------------------------------------------------------------
# Pre-encoded latents
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def autoencoder():
    torch.manual_seed(0)
    model = build_autoencoder(copy.deepcopy(tiny_config()["model"]["pretransform"]), RATE)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_latent_padding_mask_is_the_references_nearest_rule():
    # Content up to sample 33 of 64 at 16 samples a frame: frames 0-2 hold some of it.
    mask = torch.arange(64) < 33
    assert latent_padding_mask(mask, 4).tolist() == [True, True, True, False]
    assert latent_padding_mask(torch.ones(2, 64, dtype=torch.bool), 4).shape == (2, 4)
    # stable-audio-tools resizes the mask with F.interpolate(mode="nearest"): the same frames, also
    # for masks that are not a prefix and lengths that are not a multiple of the frames.
    generator = torch.Generator().manual_seed(0)
    for samples, frames in ((64, 4), (2048, 32), (1000, 7), (44100, 43), (5, 5)):
        masks = torch.rand(3, samples, generator=generator) < 0.5
        expected = torch.nn.functional.interpolate(masks[:, None].float(), size=frames, mode="nearest")[:, 0].bool()
        assert torch.equal(latent_padding_mask(masks, frames), expected), (samples, frames)
    with pytest.raises(ValueError, match="latent frames"):
        latent_padding_mask(mask, 65)


def test_latents_round_trip_with_crop_timing_and_masks(folder, autoencoder, tmp_path):
    ds = dataset(folder)
    summary = encode_dataset(ds, autoencoder, tmp_path / "lat", crops_per_file=3, batch_size=2)
    assert summary.complete and summary.items == 4   # 3 crops of long.wav, 1 of the short file
    latents = LatentDataset(tmp_path / "lat")
    assert len(latents) == 2 and latents.latent_mode == "mean" and latents.latent_length == WINDOW // 16
    seen = set()
    for seed in range(12):
        item = latents.get(0, seed)
        crop = item["metadata"]["crop"]
        seen.add(crop)
        source = ds.load(0, crop_seed(0, 0, crop))
        assert item["metadata"]["crop_offset"] == source["metadata"]["crop_offset"]
        assert item["metadata"]["seconds_start"] == source["metadata"]["seconds_start"]
        expected = autoencoder.encode(source["audio"][None])[0]
        assert (item["latents"] - expected).abs().max() < 1e-5   # batch of 2 vs 1: float order
    assert seen == {0, 1, 2}
    short = latents.get(1, 0)
    assert short["padding_mask"].tolist() == [i < math.ceil(3000 / 16) for i in range(256)]
    assert short["metadata"]["seconds_total"] == 1
    assert short["metadata"]["prompt"] == ds.get(1, 0)["metadata"]["prompt"]   # same seed, same prompt
    batch = latents.collate([latents.get(0, 1), short], [1, 0])
    assert batch["latents"].shape == (2, 16, 256) and batch["padding_mask"].dtype == torch.bool


def test_several_latent_folders_train_as_one_dataset_in_order(folder, autoencoder, tmp_path):
    encode_dataset(dataset(folder), autoencoder, tmp_path / "a")
    other = tmp_path / "more"
    other.mkdir()
    write_tone(other / "extra.wav", 6000, seed=3, subtype="FLOAT")
    write_json(other / "extra.json", {"description": "an extra clip"})
    encode_dataset(dataset(other), autoencoder, tmp_path / "b")
    a, b = LatentDataset(tmp_path / "a"), LatentDataset(tmp_path / "b")
    both = open_latents([tmp_path / "a", tmp_path / "b"])
    assert isinstance(both, LatentDatasets) and len(both) == 3 and both.latent_length == a.latent_length
    for index, (part, local) in enumerate([(a, 0), (a, 1), (b, 0)]):
        item, expected = both.get(index, 5), part.get(local, 5)
        assert torch.equal(item["latents"], expected["latents"])
        assert item["metadata"]["prompt"] == expected["metadata"]["prompt"]
    assert both.prompts()[2] == "an extra clip"
    assert both.collate([both.get(0, 0), both.get(2, 0)], [0, 1])["latents"].shape == (2, 16, WINDOW // 16)
    with pytest.raises(IndexError):
        both.get(3, 0)
    assert isinstance(open_latents(tmp_path / "a"), LatentDataset)


def test_latent_folders_with_other_settings_are_not_combined(folder, autoencoder, tmp_path):
    encode_dataset(dataset(folder), autoencoder, tmp_path / "a")
    encode_dataset(AudioFolderDataset(folder, sample_rate=RATE, sample_size=WINDOW * 2), autoencoder, tmp_path / "b")
    with pytest.raises(InputError, match="cannot be combined.*sample_size"):
        open_latents([tmp_path / "a", tmp_path / "b"])


def test_interrupted_encoding_resumes_to_the_same_latents(folder, autoencoder, tmp_path):
    write_tone(folder / "third.wav", 6000, seed=3, subtype="FLOAT")
    ds = dataset(folder)
    progress = []
    partial = encode_dataset(ds, autoencoder, tmp_path / "resumed", crops_per_file=2, shard_size=1,
                             should_stop=lambda: True, on_progress=lambda d, t: progress.append((d, t)))
    assert not partial.complete and partial.files_done == 1 and progress == [(1, 3)]
    with pytest.raises(InputError, match="did not finish"):
        LatentDataset(tmp_path / "resumed")
    done = encode_dataset(ds, autoencoder, tmp_path / "resumed", crops_per_file=2, shard_size=1)
    whole = encode_dataset(ds, autoencoder, tmp_path / "whole", crops_per_file=2)
    assert done.complete and done.items == whole.items == 5
    a, b = LatentDataset(tmp_path / "resumed"), LatentDataset(tmp_path / "whole")
    for index in range(3):
        x, y = a.get(index, 9), b.get(index, 9)
        assert (x["latents"] - y["latents"]).abs().max() < 1e-5 and x["metadata"] == y["metadata"]
    with pytest.raises(InputError, match="crops_per_file"):
        encode_dataset(ds, autoencoder, tmp_path / "whole", crops_per_file=3)


def test_sampled_latents_are_seeded_per_crop_and_recorded(folder, autoencoder, tmp_path):
    ds = dataset(folder)
    encode_dataset(ds, autoencoder, tmp_path / "a", latent_mode="sample", batch_size=1)
    encode_dataset(ds, autoencoder, tmp_path / "b", latent_mode="sample", batch_size=2)
    encode_dataset(ds, autoencoder, tmp_path / "mean")
    a, b, mean = (LatentDataset(tmp_path / n) for n in ("a", "b", "mean"))
    assert a.latent_mode == "sample" and a.settings["latent_mode"] == "sample"
    assert torch.allclose(a.get(0, 0)["latents"], b.get(0, 0)["latents"], atol=1e-5)
    assert not torch.allclose(a.get(0, 0)["latents"], mean.get(0, 0)["latents"], atol=1e-3)


def test_encoding_skips_unreadable_files_when_asked(folder, autoencoder, tmp_path):
    (folder / "broken.wav").write_text("not audio")
    with pytest.raises(AudioFileError, match="broken.wav"):
        encode_dataset(dataset(folder), autoencoder, tmp_path / "strict")
    with pytest.warns(UserWarning, match="broken.wav"):
        summary = encode_dataset(dataset(folder, on_error="skip"), autoencoder, tmp_path / "lenient")
    assert summary.skipped == ["broken.wav"] and len(LatentDataset(tmp_path / "lenient")) == 2


def test_dataset_must_fit_the_autoencoder(folder, autoencoder, tmp_path):
    ds = AudioFolderDataset(folder, sample_rate=RATE, sample_size=4001)
    with pytest.raises(InputError, match="multiple of the downsampling"):
        encode_dataset(ds, autoencoder, tmp_path / "x")


def test_dataset_for_a_model_config_takes_its_rate_window_and_channels(folder):
    model_config = {"sample_rate": RATE, "sample_size": 1024, "audio_channels": 1}
    ds = AudioFolderDataset.for_model_config(folder, model_config)
    item = ds.get(0, 0)
    assert item["audio"].shape == (1, 1024) and ds.sample_rate == RATE
    with pytest.raises(InputError, match="sample_size"):
        AudioFolderDataset.for_model_config(folder, {"sample_rate": RATE})


def test_autoencoder_loads_from_an_autoencoder_or_a_full_model_checkpoint(autoencoder, tmp_path):
    from safetensors.torch import save_file
    from stable_audio_core.factory import load_autoencoder
    config = tiny_config()
    config["sample_rate"] = RATE
    state = {k: v.contiguous() for k, v in autoencoder.state_dict().items()}
    save_file(state, str(tmp_path / "vae.safetensors"))
    save_file({"pretransform.model." + k: v for k, v in state.items()}, str(tmp_path / "full.safetensors"))
    audio = torch.randn(1, 2, 256) * 0.1
    expected = autoencoder.encode(audio)
    vae_config = {"model_type": "autoencoder", "sample_rate": RATE,
                  "model": config["model"]["pretransform"]["config"]}
    for model_config, name in ((vae_config, "vae"), (config, "full")):
        loaded = load_autoencoder(model_config, tmp_path / f"{name}.safetensors")
        assert torch.equal(loaded.encode(audio), expected) and not loaded.training
    with pytest.raises(Exception, match="no autoencoder"):
        load_autoencoder({"model_type": "diffusion_cond", "sample_rate": RATE, "model": {}})
