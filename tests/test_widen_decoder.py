"""tools/default_model/widen_decoder.py: a decoder widened from a trained narrow one decodes
exactly as before, keeps the encoder, and its new channels can learn (their outgoing weights
receive gradient)."""

import pytest
import torch

from stable_audio_core.factory import load_autoencoder
from tools.default_model import widen_decoder as widen   # the repository root is on sys.path (conftest)


def _config(decoder_channels: int, decoder_mults: list[int]) -> dict:
    return {
        "model_type": "autoencoder", "sample_rate": 44100,
        "model": {
            "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 4, "c_mults": [1, 2, 4],
                                                      "strides": [2, 4, 4], "latent_dim": 8, "use_snake": True}},
            "decoder": {"type": "oobleck", "config": {"out_channels": 2, "channels": decoder_channels,
                                                      "c_mults": decoder_mults, "strides": [2, 4, 4],
                                                      "latent_dim": 4, "use_snake": True, "final_tanh": False}},
            "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 32, "io_channels": 2,
        },
    }


def _trained_like(model: torch.nn.Module) -> None:
    """Perturb every parameter so nothing sits at its initial value (as after training)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))


def test_widened_decoder_decodes_as_the_narrow_one_and_keeps_the_encoder():
    torch.manual_seed(0)
    narrow = load_autoencoder(_config(4, [1, 2, 4]))
    _trained_like(narrow)
    wide = load_autoencoder(_config(8, [1, 1, 2]))  # same deep width (16), last stages 4 -> 8
    state = widen.widen_state(narrow.state_dict(), wide)
    wide.load_state_dict(state)
    assert sum(p.numel() for p in wide.decoder.parameters()) > sum(p.numel() for p in narrow.decoder.parameters())
    for key, value in narrow.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(state[key], value)
    latents = torch.randn(2, 4, 6)
    with torch.no_grad():
        expected = narrow.decoder(latents)
        got = wide.decoder(latents)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    wide.train()
    for parameter in wide.parameters():
        parameter.requires_grad_(True)
    wide.decoder(latents).pow(2).mean().backward()
    final = wide.decoder.layers[-2]  # the output conv (before the identity of final_tanh=False)
    assert final.weight_v.grad[:, 4:].abs().sum() > 0  # the new channels' way to the output learns


def test_widening_refuses_a_different_encoder():
    narrow = load_autoencoder(_config(4, [1, 2, 4]))
    other = _config(8, [1, 1, 2])
    other["model"]["encoder"]["config"]["channels"] = 8
    with pytest.raises(SystemExit):
        widen.widen_state(narrow.state_dict(), load_autoencoder(other))
