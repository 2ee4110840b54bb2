"""The training nodes in our host: tiny data and models built here, progress reported, clean stops.

The pack is loaded as ComfyUI loads it, so the nodes use the pack's copy of the core; the
checks below read what the nodes wrote with the same copy.
"""

from __future__ import annotations

import copy
import importlib
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_host.runtime import Interrupted
from helpers import SAMPLE_RATE, FIXTURES, session, t5_config

KEYS = ["TrainDataset", "TrainPreEncode", "TrainVAE", "TrainCLAP", "TrainDiffusion", "TrainLoadModel"]
TRAIN_CATEGORY = "audio/stable audio/training"


def write_songs(folder):
    """Three clips at the tiny model's rate (one mono, one longer than the window) + sidecars."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, (name, seconds, channels) in enumerate((("a", 1.5, 2), ("b", 0.4, 1), ("c", 3.0, 2))):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        tone = 0.3 * np.sin(2 * np.pi * (110 + 50 * index) * t)[:, None]
        tone = tone + 0.05 * rng.standard_normal((len(t), channels))
        sf.write(str(folder / f"{name}.wav"), tone.astype(np.float32), SAMPLE_RATE)
        (folder / f"{name}.json").write_text(json.dumps({"instruments": ["Piano"], "mood": "Calm", "bpm": 90}))
    return folder


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from helpers import make_folders
    folders = make_folders(tmp_path_factory.mktemp("training_nodes"))
    write_songs(folders["input"] / "songs")
    # 2048 samples: the STFT loss's largest window (2048) needs at least 1025.
    vae_config = {"model_type": "autoencoder", "sample_rate": SAMPLE_RATE, "sample_size": 2048,
                  "audio_channels": 2, "model": copy.deepcopy(t5_config()["model"]["pretransform"]["config"])}
    (folders["models"] / "checkpoints" / "tiny_vae.json").write_text(json.dumps(vae_config))
    return session(folders)


def run_node(host, key: str, **inputs):
    cls = host.pack.classes["StableAudio_" + key]
    host.runtime.current_node = key
    return getattr(cls(), cls.FUNCTION)(**inputs)


def core(host, module: str):
    return importlib.import_module(f"{host.pack.name}.stable_audio_core.{module}")


def dataset(host, **overrides):
    inputs = dict(folder="songs", manifest="", split="", random_crop=True, skip_bad_files=False,
                  window_seconds=0.0, prompt_fields="instruments, mood, bpm", structured_probability=0.5,
                  fields_instead_probability=0.0)
    inputs.update(overrides)
    return run_node(host, "TrainDataset", **inputs)[0]


TRAIN_ARGS = dict(steps=4, batch_size=2, learning_rate=1e-3, checkpoint_every=100, seed=0, resume=True,
                  mixed_precision="no", device="cpu", trainer_options='{"log_every": 1, "ema_decay": 0.9}')
# A discriminator-free VAE loss keeps the test fast; the adversarial path is the VAE task's test.
VAE_ARGS = dict(model_config="tiny_vae.json", phase=1, start_checkpoint="",
                task_options='{"adversarial": 0, "feature_matching": 0}')


def test_training_nodes_are_registered_in_their_own_category(host):
    for key in KEYS:
        cls = host.pack.classes["StableAudio_" + key]
        assert cls.CATEGORY == TRAIN_CATEGORY
        assert host.pack.display_names["StableAudio_" + key].startswith("Stable Audio · ")
    writers = ("TrainPreEncode", "TrainVAE", "TrainCLAP", "TrainDiffusion")
    assert all(host.pack.classes["StableAudio_" + key].OUTPUT_NODE for key in writers)


def test_dataset_node_checks_the_folder_when_it_runs(host):
    spec = dataset(host)
    assert spec.files == 3 and spec.kind == "audio"
    songs = host.runtime.folders.input / "songs"
    (songs / "two.jsonl").write_text('{"path": "a.wav", "genre": "Jazz"}\n{"path": "c.wav"}\n')
    assert dataset(host, manifest="two.jsonl").files == 2   # a manifest name inside the folder
    with pytest.raises(Exception, match="not found"):
        dataset(host, folder="no_such_folder")
    with pytest.raises(Exception, match="no split file"):
        dataset(host, split="train")


def test_vae_node_trains_with_progress_and_writes_a_loadable_checkpoint(host):
    host.runtime.progress_log.clear()
    checkpoint, config = run_node(host, "TrainVAE", dataset=dataset(host), run_name="training/vae", **VAE_ARGS,
                                  **TRAIN_ARGS)
    assert [entry[1:] for entry in host.runtime.progress_log] == [(step, 4) for step in (1, 2, 3, 4)]
    assert checkpoint.endswith("step-00000004/model.safetensors")
    autoencoder = core(host, "factory").load_autoencoder(json.loads(open(config).read()), checkpoint)
    latents = autoencoder.encode(torch.randn(1, 2, 512) * 0.1)
    assert latents.shape == (1, 16, 32) and torch.isfinite(latents).all()


def test_interrupted_training_stops_cleanly_and_the_same_node_resumes(host, monkeypatch):
    state = core(host, "training.state")
    real_progress = host.runtime.progress

    def interrupt_after_step_two(done, total):
        real_progress(done, total)
        if done == 2:
            host.runtime.interrupt()

    monkeypatch.setattr(host.runtime, "progress", interrupt_after_step_two)
    with pytest.raises(Interrupted):
        run_node(host, "TrainVAE", dataset=dataset(host), run_name="training/stopped", **VAE_ARGS, **TRAIN_ARGS)
    run_dir = host.runtime.folders.output / "training" / "stopped"
    latest = state.read_latest(run_dir)
    assert latest is not None and latest.name == "step-00000002"
    saved = json.loads((latest / "model_config.json").read_text())
    core(host, "factory").load_autoencoder(saved, latest / "model.safetensors")   # loads strictly
    monkeypatch.setattr(host.runtime, "progress", real_progress)
    checkpoint, _ = run_node(host, "TrainVAE", dataset=dataset(host), run_name="training/stopped", **VAE_ARGS,
                             **TRAIN_ARGS)
    assert checkpoint.endswith("step-00000004/model.safetensors")


def test_pre_encode_then_diffusion_training_gives_a_model_the_loader_nodes_load(host):
    latents = run_node(host, "TrainPreEncode", dataset=dataset(host), model_config="tiny.json",
                       vae_checkpoint="tiny.safetensors", name="latents/songs", crops_per_file=2,
                       latent_mode="mean", batch_size=4, seed=0, device="cpu")[0]
    assert latents.kind == "latents" and latents.files == 3
    checkpoint, config = run_node(
        host, "TrainDiffusion", dataset=latents, model_config="tiny.json", run_name="training/dit",
        pretransform_checkpoint="", text_encoder="tiny-t5", base_checkpoint="tiny.safetensors", lora_rank=0,
        export_name="my_trained", **{**TRAIN_ARGS, "steps": 2})
    assert checkpoint.endswith("step-00000002/model.safetensors")
    loaded = run_node(host, "LoadCheckpoint", ckpt_name="my_trained.safetensors", config="auto",
                      text_encoder="tiny-t5", device="cpu", dtype="float32")[0]
    same = run_node(host, "TrainLoadModel", checkpoint=checkpoint, text_encoder="tiny-t5", device="cpu",
                    dtype="float32")[0]
    result = core(host, "pipeline").generate(loaded, "calm piano", seconds_total=1.0, steps=2, seed=1,
                                             sample_size=4096, decode=False)
    again = core(host, "pipeline").generate(same, "calm piano", seconds_total=1.0, steps=2, seed=1,
                                            sample_size=4096, decode=False)
    assert torch.isfinite(result.latents).all() and torch.equal(result.latents, again.latents)


def test_a_training_workflow_runs_in_the_host_with_progress_per_node(host):
    prompt = {
        "1": {"class_type": "StableAudio_TrainDataset", "inputs": {
            "folder": "songs", "manifest": "", "split": "", "random_crop": True, "skip_bad_files": False,
            "window_seconds": 0.0, "prompt_fields": "instruments", "structured_probability": 1.0,
            "fields_instead_probability": 0.0}},
        "2": {"class_type": "StableAudio_TrainVAE", "inputs": {
            "dataset": ["1", 0], "run_name": "training/workflow", **VAE_ARGS, **TRAIN_ARGS, "steps": 2}},
    }
    host.runtime.progress_log.clear()
    result = host.executor.run(prompt)
    assert result.executed == ["1", "2"] and result.outputs["2"][0].endswith("model.safetensors")
    assert ("2", 2, 2) in host.runtime.progress_log


def test_clap_node_fine_tunes_a_clap_folder_and_writes_one(host):
    checkpoint, config, folder = run_node(
        host, "TrainCLAP", dataset=dataset(host), model_config=str(FIXTURES / "clap" / "model"),
        run_name="training/clap", sample_rate=48000, window_seconds=1.0, tokenizer="",
        **{**TRAIN_ARGS, "steps": 2, "trainer_options": "{}"})
    assert checkpoint.endswith("step-00000002/model.safetensors")
    model = core(host, "models.clap").ClapModel.from_pretrained(folder)
    assert model is not None
