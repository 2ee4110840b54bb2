"""Shared test helpers: tiny configs and checkpoints built in the test, never downloaded."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)

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


@pytest.fixture
def config() -> dict:
    return copy.deepcopy(tiny_config())


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
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def bundled_stand_in_files(tmp_path_factory) -> Path:
    from test_nodes_helpers import write_bundled_stand_in
    return write_bundled_stand_in(tmp_path_factory.mktemp("bundled") / "default_model")


@pytest.fixture
def bundled_stand_in(bundled_stand_in_files, monkeypatch) -> Path:
    """The bundled default model replaced by a tiny random one of its kind (the real weights may
    not exist yet, and would be slow): DEFAULT_MODEL_DIR points at it for the test."""
    from test_nodes_helpers import point_bundled_model_at
    point_bundled_model_at(bundled_stand_in_files, monkeypatch)
    return bundled_stand_in_files
