"""Helpers shared by the tests (no tests here; conftest.py holds the fixtures), all built in the
test, never downloaded:

- `tiny_config`, `perturbed_model`, `save_checkpoint`: a small SAO-1.0-shaped model and its file.
- For the node, host and workflow tests: a models folder with a tiny T5-conditioned checkpoint, a
  tiny T5 folder and an input clip, and a tiny stand-in for the bundled default model.

The models-folder model is SAO-1.0-shaped (T5 prompt + number timing, Oobleck VAE, DiT) at a
2 kHz sample rate so that seconds of audio stay a few hundred latent frames (125 per second).
The bundled stand-in has the bundled model's kind at toy width (CLAP prompt + int timing, 1/1024
Oobleck VAE, adp_cfg_1d U-Net, the same window and sampling_defaults), so the shipped workflows
run on it as they are; the real bundled weights play no part in the tests.

- For Stable Audio 3: `add_sa3_model` copies a complete tiny SA3 checkpoint (config, weights and
  T5Gemma folder, from tests/fixtures/sa3_parity) into a models folder; `write_sa3_lora` writes a
  stable-audio-3 LoRA file for it.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def tiny_config(objective: str = "v", timing: str = "number") -> dict:
    """A small SAO-1.0-shaped config: Oobleck VAE (ratio 16), DiT, number/int timing, number prompt."""
    layers = {"channels": 8, "c_mults": [1, 2, 2], "strides": [2, 2, 4], "use_snake": True}
    timing_conf = {"min_val": 0, "max_val": 512}
    diffusion = {
        "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
        "global_cond_ids": ["seconds_start", "seconds_total"],
        "type": "dit",
        "config": {"io_channels": 16, "embed_dim": 64, "depth": 2, "num_heads": 2,
                   "cond_token_dim": 32, "global_cond_dim": 64, "project_cond_tokens": False,
                   "transformer_type": "continuous_transformer"},
    }
    if objective != "v":
        diffusion["diffusion_objective"] = objective
    return {
        "model_type": "diffusion_cond", "sample_size": 16 * 64, "sample_rate": 44100, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "config": {
                "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 32, **layers}},
                "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": 16,
                                                          "final_tanh": False, **layers}},
                "bottleneck": {"type": "vae"}, "latent_dim": 16, "downsampling_ratio": 16,
                "io_channels": 2}},
            "conditioning": {"cond_dim": 32, "configs": [
                {"id": "prompt", "type": "number", "config": {"min_val": 0, "max_val": 10}},
                {"id": "seconds_start", "type": timing, "config": dict(timing_conf)},
                {"id": "seconds_total", "type": timing, "config": dict(timing_conf)},
            ]},
            "diffusion": diffusion,
            "io_channels": 16,
        },
    }


def perturbed_model(config: dict, seed: int = 0):
    """A model from `config` with every parameter moved off its (often zero) init."""
    from stable_audio_core.factory import build_model
    torch.manual_seed(seed)
    model = build_model(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def save_checkpoint(model, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


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
    from stable_audio_core.text.t5 import T5Encoder
    from fixture_inputs import build_test_tokenizer

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
    """root/models/{checkpoints,text_encoders}, root/input (clip.wav, 3 s; short.wav, 1 s), root/output."""
    models = root / "models"
    checkpoints = models / "checkpoints"
    checkpoints.mkdir(parents=True)
    config = t5_config()
    (checkpoints / "tiny.json").write_text(json.dumps(config))
    save_checkpoint(perturbed_model(config), checkpoints / "tiny.safetensors")
    make_t5_folder(models / "text_encoders" / "tiny-t5")
    write_clip(root / "input" / "clip.wav", 3.0)
    write_clip(root / "input" / "short.wav", 1.0)  # fits the tiny model's 2.048 s window with room to extend
    (root / "output").mkdir()
    return {"models": models, "input": root / "input", "output": root / "output"}


def session(folders: dict[str, Path]):
    from stable_audio_host.runtime import Folders
    from stable_audio_host.session import Session
    return Session(Folders(models=folders["models"], input=folders["input"], output=folders["output"]),
                   device="cpu", show_progress=False, pack_folder=ROOT)


# Overrides that point a shipped Stable Audio Open workflow (sao_*) at the tiny model and keep it fast.
TINY_MODEL = [
    "StableAudio_LoadCheckpoint.ckpt_name=tiny.safetensors",
    "StableAudio_LoadCheckpoint.config=tiny.json",
    "StableAudio_LoadCheckpoint.text_encoder=tiny-t5",
    "StableAudio_DPMSolverSampler.steps=4",
]


# The bundled model's kind (stable_audio_core/default_model/__init__.py): what the shipped workflows assume.
BUNDLED_SAMPLE_RATE = 44100
BUNDLED_RATIO = 1024
BUNDLED_WINDOW = 432 * BUNDLED_RATIO  # about 10.03 s
CLAP_FIXTURE = FIXTURES / "clap" / "model"  # tiny random CLAP in transformers' layout (32 wide)


def bundled_kind_config() -> dict:
    """The bundled model's structure at toy width: Oobleck VAE 4-4-8-8 (1/1024, 32 latent
    channels), CLAP text features from layer -2, int seconds_start/seconds_total (at most 11),
    adp_cfg_1d U-Net with context time, and the config's own sampling_defaults."""
    layers = {"channels": 2, "c_mults": [1, 2, 2, 2], "strides": [4, 4, 8, 8], "use_snake": True}
    per_second = {"min_val": 0, "max_val": 11}
    return {
        "model_type": "diffusion_cond", "sample_size": BUNDLED_WINDOW, "sample_rate": BUNDLED_SAMPLE_RATE,
        "audio_channels": 2,
        "sampling_defaults": {"steps": 50, "cfg_scale": 5.0, "sampler": "dpmpp-3m-sde"},
        "model": {
            "pretransform": {"type": "autoencoder", "config": {
                "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 64, **layers}},
                "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": 32,
                                                          "final_tanh": False, **layers}},
                "bottleneck": {"type": "vae"}, "latent_dim": 32, "downsampling_ratio": BUNDLED_RATIO,
                "io_channels": 2}},
            "conditioning": {"cond_dim": 16, "configs": [
                {"id": "prompt", "type": "clap_text", "config": {
                    "clap_ckpt_path": "clap", "use_text_features": True, "feature_layer_ix": -2,
                    "audio_model_type": "HTSAT-tiny", "enable_fusion": True,
                    "text_width": 32, "embedding_dim": 16}},
                {"id": "seconds_start", "type": "int", "config": dict(per_second)},
                {"id": "seconds_total", "type": "int", "config": dict(per_second)},
            ]},
            "diffusion": {"type": "adp_cfg_1d", "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "config": {"in_channels": 32, "context_embedding_features": 16,
                                     "context_embedding_max_length": 77 + 2, "channels": 16,
                                     "resnet_groups": 4, "kernel_multiplier_downsample": 2,
                                     # factors 1-2-2: lengths in multiples of 4 latent frames, as the bundled U-Net
                                     "multipliers": [1, 2, 2, 2], "factors": [1, 2, 2], "num_blocks": [1, 1, 1],
                                     "attentions": [0, 1, 1, 1], "attention_heads": 2, "attention_multiplier": 1,
                                     "use_nearest_upsample": False, "use_skip_scale": True,
                                     "use_context_time": True}},
            "io_channels": 32,
        },
    }


def write_bundled_stand_in(folder: Path) -> Path:
    """`folder` laid out as stable_audio_core/default_model/ is: model_config.json,
    model.safetensors and clap/ (a copy of the CLAP test fixture), with random weights."""
    folder.mkdir(parents=True, exist_ok=True)
    config = bundled_kind_config()
    (folder / "model_config.json").write_text(json.dumps(config))
    save_checkpoint(perturbed_model(config), folder / "model.safetensors")
    shutil.copytree(CLAP_FIXTURE, folder / "clap")
    return folder


def point_bundled_model_at(folder: Path, monkeypatch) -> None:
    """Make `folder` the bundled default model for the core and for the node pack. The host loads
    the pack as a package with its own copy of the core (custom_nodes.<folder>.stable_audio_core),
    so the module the loader node reads is patched, found through its default_model_files."""
    import stable_audio_core.default_model as core_bundled
    from stable_audio_host.pack import load_pack

    loader = load_pack(ROOT).classes["StableAudio_LoadCheckpoint"]
    pack_bundled = sys.modules[sys.modules[loader.__module__].default_model_files.__module__]
    for module in {core_bundled, pack_bundled}:
        monkeypatch.setattr(module, "DEFAULT_MODEL_DIR", Path(folder))


def copy_workflow(name: str, dest: Path) -> Path:
    shutil.copy(ROOT / "workflows" / name, dest / name)
    return dest / name


# --- Stable Audio 3 -------------------------------------------------------------------------------

SA3_FIXTURE = "small_pingpong_apg"  # SAME-S style, 16 latent channels, 4096x downsampling
SA3_SAMPLE_RATE, SA3_RATIO = 44100, 4096


def add_sa3_model(models: Path, name: str = "sa3_tiny") -> dict[str, Path]:
    """models/checkpoints/<name>.{json,safetensors} and models/text_encoders/<name>-t5gemma."""
    source = FIXTURES / "sa3_parity"
    config = json.loads((source / f"{SA3_FIXTURE}.json").read_text())["model_config"]
    checkpoints = models / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / f"{name}.json").write_text(json.dumps(config))
    shutil.copy(source / f"{SA3_FIXTURE}.weights.safetensors", checkpoints / f"{name}.safetensors")
    shutil.copytree(source / f"{SA3_FIXTURE}.t5gemma", models / "text_encoders" / f"{name}-t5gemma")
    return {"config": checkpoints / f"{name}.json", "checkpoint": checkpoints / f"{name}.safetensors",
            "text_encoder": models / "text_encoders" / f"{name}-t5gemma"}


def write_sa3_lora(path: Path, model, seed: int = 0, rank: int = 2, scale: float = 0.1) -> Path:
    """A stable-audio-3 LoRA file (plain LoRA, `lora_config` metadata) adapting every linear layer
    of the model's transformer blocks and its seconds_total conditioner's projection."""
    generator = torch.Generator().manual_seed(seed)
    layers = {f"model.{name}": module for name, module in model.backbone.named_modules()
              if name.startswith("transformer.layers.") and isinstance(module, torch.nn.Linear)}
    layers["conditioners.seconds_total.embedder.embedding.1"] = \
        model.conditioner.conditioners["seconds_total"].embedder.embedding[1]
    tensors = {}
    for key, module in layers.items():
        out_features, in_features = module.weight.shape
        tensors[f"{key}.parametrizations.weight.0.lora_A"] = torch.randn(rank, in_features, generator=generator) * scale
        tensors[f"{key}.parametrizations.weight.0.lora_B"] = torch.randn(out_features, rank, generator=generator) * scale
    config = {"rank": rank, "alpha": rank, "adapter_type": "lora", "include": ["transformer.layers"], "exclude": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"lora_config": json.dumps(config)})
    return path
