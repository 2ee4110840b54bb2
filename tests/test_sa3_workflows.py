"""Stable Audio 3 in the nodes and the host: every shipped sa3_* workflow runs on a tiny SA3
checkpoint (the complete small_pingpong_apg fixture copied into a models folder) and gives the
requested duration; inpainting and extending leave the kept ranges as encoded; a LoRA node at
strength 0 is the plain model and chains without changing its input."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from helpers import ROOT, SA3_RATIO, SA3_SAMPLE_RATE, add_sa3_model, session, write_clip, write_sa3_lora

TINY_SA3 = ["StableAudio_LoadCheckpoint.ckpt_name=sa3_tiny.safetensors", "StableAudio_LoadCheckpoint.config=auto",
            "StableAudio_LoadCheckpoint.text_encoder=sa3_tiny-t5gemma", "StableAudio_DPMSolverSampler.steps=2"]
CLIP_SECONDS = 3.0
# Per workflow: overrides that keep it fast and fit the 3 s clip, and the duration asked for.
SETTINGS = {
    "sa3_text_to_audio": (["StableAudio_EmptyLatentAudio.seconds=1.0", "StableAudio_TimingCondition.seconds_total=1.0"], 1.0),
    "sa3_audio_to_audio": (["StableAudio_TimingCondition.seconds_total=3.0"], 3.0),
    "sa3_inpaint": (["StableAudio_EmptyLatentAudio.seconds=3.0", "StableAudio_TimingCondition.seconds_total=3.0",
                     "StableAudio_SA3InpaintCondition.start_seconds=1.0",
                     "StableAudio_SA3InpaintCondition.end_seconds=2.0"], 3.0),
    "sa3_extend": (["StableAudio_EmptyLatentAudio.seconds=4.5", "StableAudio_TimingCondition.seconds_total=4.5"], 4.5),
    "sa3_lora": (["StableAudio_EmptyLatentAudio.seconds=1.0", "StableAudio_TimingCondition.seconds_total=1.0",
                  "StableAudio_LoadLoRA.lora_name=tiny_lora.safetensors"], 1.0),
}


def load(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text())


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("sa3_workflows")
    files = add_sa3_model(root / "models")
    from stable_audio_core.factory import load_model
    model = load_model(files["config"], files["checkpoint"], text_encoder=files["text_encoder"])
    write_sa3_lora(root / "models" / "loras" / "tiny_lora.safetensors", model)
    write_clip(root / "input" / "clip.wav", CLIP_SECONDS)
    (root / "output").mkdir()
    return session({"models": root / "models", "input": root / "input", "output": root / "output"})


@pytest.mark.parametrize("name", list(SETTINGS))
def test_sa3_workflow_references_an_sa3_checkpoint_with_its_defaults(name):
    nodes = {n["class_type"]: n["inputs"] for n in load(f"api/{name}.json").values()}
    assert nodes["StableAudio_LoadCheckpoint"]["config"] == "bundled/stable-audio-3-small-music.json"
    assert "StableAudio_T5GemmaEncode" in nodes
    sampler = nodes["StableAudio_DPMSolverSampler"]
    assert (sampler["sampler"], sampler["steps"], sampler["cfg"]) == ("default", 8, 1.0)  # default: pingpong


@pytest.mark.parametrize("name", list(SETTINGS))
def test_sa3_workflow_runs_in_the_host_and_gives_the_requested_duration(host, name):
    sets, seconds = SETTINGS[name]

    result = host.run(load(f"{name}.json"), TINY_SA3 + sets)

    files = host.saved_files(result)
    assert len(files) == 1 and files[0].suffix == ".flac"
    info = sf.info(str(files[0]))
    assert info.samplerate == SA3_SAMPLE_RATE and info.channels == 2
    assert abs(info.frames / info.samplerate - seconds) <= 1 / SA3_SAMPLE_RATE  # cut to int(seconds * sr)


def kept_and_sampled(result) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keep mask [L] bool, source latents, sampled latents [C, L]) of an inpaint/extend run."""
    local = result.outputs["12"][0]["inpaint"]["local_add_cond"][0]
    return local[0].bool(), local[1:], result.outputs["5"][0]["samples"][0]


def test_inpainting_regenerates_the_range_and_keeps_the_source_latents_elsewhere(host):
    # Measured on the latents: SAME decoding adds its (reference) noise everywhere, so decoded
    # audio differs slightly even where the latents are equal; outside the range the latents
    # are the encoded source exactly, and the decoder sees nothing else there.
    sets, _ = SETTINGS["sa3_inpaint"]

    keep, source, sampled = kept_and_sampled(host.run(load("sa3_inpaint.json"), TINY_SA3 + sets))

    # Frame f starts at sample f * 4096: regenerated from 1 s to 2 s and past seconds_total (3 s).
    starts = torch.arange(keep.shape[0]) * SA3_RATIO
    expected = (starts < 1 * SA3_SAMPLE_RATE) | ((starts >= 2 * SA3_SAMPLE_RATE) & (starts < 3 * SA3_SAMPLE_RATE))
    assert torch.equal(keep, expected)
    assert torch.equal(sampled[:, keep], source[:, keep])
    regenerated = ~keep & (starts < 3 * SA3_SAMPLE_RATE)
    assert (sampled[:, regenerated] - source[:, regenerated]).abs().mean() > 0.1


def test_without_keep_source_the_kept_frames_are_regenerated_as_the_reference_does(host):
    sets, _ = SETTINGS["sa3_inpaint"]

    keep, source, sampled = kept_and_sampled(
        host.run(load("sa3_inpaint.json"), TINY_SA3 + sets + ["StableAudio_SA3InpaintCondition.keep_source=false"]))

    assert not torch.equal(sampled[:, keep], source[:, keep])


def test_extend_keeps_the_clip_and_generates_up_to_the_longer_duration(host):
    sets, seconds = SETTINGS["sa3_extend"]

    keep, source, sampled = kept_and_sampled(host.run(load("sa3_extend.json"), TINY_SA3 + sets))

    starts = torch.arange(keep.shape[0]) * SA3_RATIO
    assert torch.equal(keep, starts < CLIP_SECONDS * SA3_SAMPLE_RATE)
    assert torch.equal(sampled[:, keep], source[:, keep])


def test_lora_at_strength_zero_is_the_plain_model_and_at_one_changes_the_output(host):
    sets, _ = SETTINGS["sa3_lora"]
    plain_sets = [s for s in sets if "LoadLoRA" not in s]
    plain = host.run(load("sa3_text_to_audio.json"), TINY_SA3 + plain_sets)
    off = host.run(load("sa3_lora.json"), TINY_SA3 + sets + ["StableAudio_LoadLoRA.strength=0.0"])
    on = host.run(load("sa3_lora.json"), TINY_SA3 + sets)

    plain_latents = plain.outputs["5"][0]["samples"]
    # Same seed and conditioning; strength 0 leaves every adapted weight W + 0 * BA = W.
    assert torch.allclose(off.outputs["5"][0]["samples"], plain_latents, atol=1e-5)
    assert (on.outputs["5"][0]["samples"] - plain_latents).abs().max() > 1e-2

