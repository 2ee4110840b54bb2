"""Stable Audio 3 model assembly: the reconstructed Small and Medium configs build on the meta
device with exactly the reference's state-dict keys and shapes (DiT, SAME, conditioners; the key
lists were written from stable-audio-3's own models), and SA3 configs are told apart from
stable-audio-tools ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stable_audio_core.config import load_model_config
from stable_audio_core.factory import build_model, load_autoencoder

CONFIGS = Path(__file__).resolve().parents[1] / "stable_audio_core" / "configs"
FIXTURES = Path(__file__).parent / "fixtures"
CONDITIONER_KEYS = {"prompt.padding_embedding": [768], "seconds_total.embedder.embedding.1.weight": [768, 256],
                    "seconds_total.embedder.embedding.1.bias": [768]}


def _reference_keys(size: str) -> dict[str, list[int]]:
    dit = json.loads((FIXTURES / "sa3_dit" / "full_size_dit_keys.json").read_text())[size]["keys"]
    same = json.loads((FIXTURES / "same" / "full_keys.json").read_text())[{"small": "same_s", "medium": "same_l"}[size]]
    keys = {f"model.model.{k}": list(shape) for k, shape in dit}
    keys.update({f"pretransform.model.{k}": list(shape) for k, shape in same.items()})
    keys.update({f"conditioner.conditioners.{k}": shape for k, shape in CONDITIONER_KEYS.items()})
    return keys


@pytest.mark.parametrize("name,size", [("stable-audio-3-small-music", "small"), ("stable-audio-3-medium", "medium")])
def test_full_size_config_builds_with_the_reference_state_dict(name, size):
    with torch.device("meta"):
        model = build_model(CONFIGS / f"{name}.json")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == _reference_keys(size)


def test_sa3_configs_are_a_family_of_their_own_and_sao_configs_are_not():
    assert load_model_config(CONFIGS / "stable-audio-3-small-sfx.json").family == "sa3"
    assert load_model_config(CONFIGS / "stable-audio-3-medium-base.json").objective == "rectified_flow"
    assert load_model_config(CONFIGS / "stable_audio_open_small.json").family == "stable_audio_tools"


@pytest.mark.parametrize("name", ["SAME-S", "SAME-L"])
def test_same_autoencoder_configs_build_alone(name):
    with torch.device("meta"):
        autoencoder = load_autoencoder(CONFIGS / f"{name}.json")
    assert autoencoder.downsampling_ratio == 4096 and autoencoder.latent_dim == 256
