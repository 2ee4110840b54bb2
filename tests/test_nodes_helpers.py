"""Helpers shared by the node, host and workflow tests (no tests here): a models folder with a
tiny T5-conditioned checkpoint, a tiny T5 folder and an input clip, all built in the test.

The model is SAO-1.0-shaped (T5 prompt + number timing, Oobleck VAE, DiT) at a 2 kHz sample
rate so that seconds of audio stay a few hundred latent frames (125 per second).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file

from conftest import FIXTURES, perturbed_model, save_checkpoint, tiny_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 2000
RATIO = 16  # tiny_config's VAE downsampling ratio
T5_WIDTH = 512  # t5-small's width, which the conditioner's proj_out expects


def t5_config() -> dict:
    config = copy.deepcopy(tiny_config())
    config["sample_rate"] = SAMPLE_RATE
    config["sample_size"] = RATIO * 256
    prompt = config["model"]["conditioning"]["configs"][0]
    prompt.update({"type": "t5", "config": {"t5_model_name": "t5-small", "max_length": 16}})
    return config


def make_t5_folder(folder: Path, seed: int = 3) -> Path:
    """A Hugging Face T5 folder with t5-small's width, random weights and the test tokenizer."""
    from stable_audio_core.models.t5 import T5Encoder
    from test_t5 import build_test_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((FIXTURES / "t5" / "relu" / "config.json").read_text())
    config["d_model"] = T5_WIDTH
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    encoder = T5Encoder.from_config(config)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(state, str(folder / "model.safetensors"))
    build_test_tokenizer().save(str(folder / "tokenizer.json"))
    return folder


def write_clip(path: Path, seconds: float, rate: int = 8000, channels: int = 1) -> Path:
    """A mono test clip: two tones with a slow amplitude swell, at `rate`."""
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * math.pi * 220 * t) + 0.2 * np.sin(2 * math.pi * 330 * t)
    tone *= 0.6 + 0.4 * np.sin(2 * math.pi * 0.5 * t)
    data = np.stack([tone] * channels, axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate)
    return path


def make_folders(root: Path) -> dict[str, Path]:
    """root/models/{checkpoints,text_encoders}, root/input (clip.wav, 3 s), root/output."""
    models = root / "models"
    checkpoints = models / "checkpoints"
    checkpoints.mkdir(parents=True)
    config = t5_config()
    (checkpoints / "tiny.json").write_text(json.dumps(config))
    save_checkpoint(perturbed_model(config), checkpoints / "tiny.safetensors")
    make_t5_folder(models / "text_encoders" / "tiny-t5")
    write_clip(root / "input" / "clip.wav", 3.0)
    (root / "output").mkdir()
    return {"models": models, "input": root / "input", "output": root / "output"}


def session(folders: dict[str, Path]):
    from stable_audio_host.runtime import Folders
    from stable_audio_host.session import Session
    return Session(Folders(models=folders["models"], input=folders["input"], output=folders["output"]),
                   device="cpu", show_progress=False, pack_folder=ROOT)


# Overrides that point a shipped workflow at the tiny model and keep it fast.
TINY_MODEL = [
    "StableAudio_LoadCheckpoint.ckpt_name=tiny.safetensors",
    "StableAudio_LoadCheckpoint.config=tiny.json",
    "StableAudio_LoadCheckpoint.text_encoder=tiny-t5",
    "StableAudio_DPMSolverSampler.steps=4",
]


def copy_workflow(name: str, dest: Path) -> Path:
    shutil.copy(ROOT / "workflows" / name, dest / name)
    return dest / name
