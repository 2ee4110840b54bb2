"""Stable Audio 1.0's VAE: encoder and decoder of type "dac" (stable_audio_core.models.dac_vae)
under the shared autoencoder (VAE bottleneck, chunking, strict checkpoint loading).

Fixtures come from tools/make_vae_fixtures.py (stable-audio-tools 0.0.19 + descript-audio-codec,
perturbed weights): `dac_shape` is the paper VAE's shape (strides 4-4-8-8, rates 8-8-4-4, ratio
1024, stereo) at tiny width; its encode/decode/KL/sampling parity runs with the other VAE cases in
tests/test_autoencoder.py. `paper_dac_vae_keys.json` is the reference's full-size build of
stable_audio_core/configs/stable_audio_paper_unet.json's pretransform. The tool measured at most
6e-7 max abs error against the reference over the fixture and 12 random DAC configs (outputs of
magnitude 0.3-1), float32 summation-order noise, so 1e-5 leaves room for other CPUs' kernels.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from stable_audio_core.checkpoint import load_state_dict_strict
from stable_audio_core.errors import CheckpointError, ConfigError
from stable_audio_core.factory import build_model
from stable_audio_core.models.autoencoder import build_autoencoder
from stable_audio_core.models.dac_vae import DACDecoder, DACEncoder
from stable_audio_core.models.layers import fold_weight_norm

from helpers import FIXTURES, ROOT

VAE_FIXTURES = FIXTURES / "vae"
PAPER_CONFIG = ROOT / "stable_audio_core" / "configs" / "stable_audio_paper_unet.json"
DAC_CASE = json.loads((VAE_FIXTURES / "cases.json").read_text())["dac_shape"]
PARITY_TOLERANCE = 1e-5  # float32 summation-order noise; measured <= 6e-7 (see module doc)
# Chunked vs whole: the same arithmetic once the discarded margin covers the receptive field
# (measured: decoder about 10 latents each side, encoder 8); only kernel blocking differs.
CHUNK_TOLERANCE = 1e-5


def dac_case() -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(our autoencoder built from the dac_shape config, the reference state dict, tensors)."""
    tensors = load_file(str(VAE_FIXTURES / "dac_shape.safetensors"))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return build_autoencoder(DAC_CASE["pretransform"], DAC_CASE["sample_rate"]), state, tensors


def dac_config(**edits) -> dict:
    config = copy.deepcopy(DAC_CASE["pretransform"])
    for part, values in edits.items():
        config["config"][part]["config"].update(values)
    return config


# -- the paper's full-size VAE ---------------------------------------------------------------


def test_paper_config_builds_the_references_dac_vae_keys_shapes_and_parameter_count():
    reference = json.loads((VAE_FIXTURES / "paper_dac_vae_keys.json").read_text())
    with torch.device("meta"):
        model = build_model(PAPER_CONFIG)
    prefix = "pretransform.model."
    ours = [[k[len(prefix):], list(v.shape)] for k, v in model.state_dict().items()
            if k.startswith(prefix)]  # fmt: skip
    assert ours == reference["state_dict"]
    paper = json.loads(PAPER_CONFIG.read_text())
    assert reference["pretransform"] == paper["model"]["pretransform"]
    count = sum(p.numel() for p in model.autoencoder.parameters())
    assert count == reference["parameter_count"] == 133_431_300
    autoencoder = model.autoencoder
    sizes = (autoencoder.downsampling_ratio, autoencoder.latent_dim, autoencoder.io_channels)
    assert sizes == (1024, 64, 2)
    assert isinstance(autoencoder.encoder, DACEncoder)
    assert isinstance(autoencoder.decoder, DACDecoder)


def test_paper_unet_parity_fixtures_sit_on_the_dac_vae_at_ratio_1024():
    names = sorted((FIXTURES / "parity").glob("paperunet_*.json"))
    assert names
    for path in names:
        model_config = json.loads(path.read_text())["model_config"]
        autoencoder = model_config["model"]["pretransform"]["config"]
        assert autoencoder["encoder"]["type"] == autoencoder["decoder"]["type"] == "dac"
        assert autoencoder["downsampling_ratio"] == 1024
        assert autoencoder["bottleneck"]["type"] == "vae"


# -- checkpoints -----------------------------------------------------------------------------


def test_reference_state_dict_loads_key_for_key_with_a_plain_projection_conv():
    model, state, _ = dac_case()
    # (safetensors stores keys sorted; tools/make_vae_fixtures.py --check compares the order.)
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert ours == {k: v.shape for k, v in state.items()}
    load_state_dict_strict(model, state, "the dac_shape fixture")
    keys = set(state)
    # DAC's convolutions are weight-normed, the wrapper's 1x1 projection is a plain conv, and
    # Snake has one [1, C, 1] alpha (no beta).
    assert {"encoder.encoder.block.0.weight_g", "decoder.decoder.model.0.weight_v"} <= keys
    assert {"encoder.proj_out.weight", "encoder.proj_out.bias"} <= keys
    assert "encoder.proj_out.weight_g" not in keys
    alpha = state["decoder.decoder.model.1.block.0.alpha"]
    assert alpha.dim() == 3 and alpha.shape[0] == alpha.shape[2] == 1
    assert not any(k.endswith(".beta") for k in keys)


def test_folded_reference_weights_load_strictly_and_decode_the_same():
    model, state, tensors = dac_case()
    reference = build_autoencoder(DAC_CASE["pretransform"], DAC_CASE["sample_rate"])
    reference.load_state_dict(state)
    folded_state = fold_weight_norm(reference).state_dict()
    load_state_dict_strict(model, folded_state, "a folded dac checkpoint")
    with torch.no_grad():
        audio = model.decode(tensors["mean"], chunked=False)
    torch.testing.assert_close(audio, tensors["decoded"], atol=PARITY_TOLERANCE, rtol=0)


def test_a_checkpoint_missing_the_projection_is_refused_by_name():
    model, state, _ = dac_case()
    del state["encoder.proj_out.weight"]
    with pytest.raises(CheckpointError, match="encoder.proj_out.weight"):
        load_state_dict_strict(model, state, "a truncated checkpoint")


# -- behaviour -------------------------------------------------------------------------------


def test_encode_and_decode_match_the_reference_through_the_shared_autoencoder():
    model, state, tensors = dac_case()
    model.load_state_dict(state)
    with torch.no_grad():
        mean = model.encode(tensors["audio"], chunked=False)
        audio = model.decode(tensors["mean"], chunked=False)
    assert mean.shape == (1, 3, tensors["audio"].shape[-1] // 1024)
    torch.testing.assert_close(mean, tensors["mean"], atol=PARITY_TOLERANCE, rtol=0)
    torch.testing.assert_close(audio, tensors["decoded"], atol=PARITY_TOLERANCE, rtol=0)


def test_chunked_decode_and_encode_equal_whole_ones():
    model, state, _ = dac_case()
    model.load_state_dict(state)
    torch.manual_seed(0)
    latents, audio = torch.randn(1, 3, 60), 0.5 * torch.randn(1, 2, 60 * 1024 + 333)
    with torch.no_grad():
        decoded = model.decode(latents, chunked=True, chunk_size=32, overlap=24)
        encoded = model.encode(audio, chunked=True, chunk_size=24, overlap=20)
        torch.testing.assert_close(decoded, model.decode(latents, chunked=False),
                                   atol=CHUNK_TOLERANCE, rtol=0)
        torch.testing.assert_close(encoded, model.encode(audio, chunked=False),
                                   atol=CHUNK_TOLERANCE, rtol=0)
    assert decoded.shape == (1, 2, 60 * 1024) and encoded.shape == (1, 3, 60)


def test_decoder_ends_in_tanh():
    decoder = DACDecoder(latent_dim=2, channels=4, rates=[2, 2])
    with torch.no_grad():
        decoder.decoder.model[-2].bias.fill_(100.0)  # the last conv, before the tanh
        audio = decoder(torch.randn(1, 2, 5))
    assert audio.shape == (1, 1, 20) and audio.abs().max() <= 1.0


def test_defaults_are_mono_and_the_encoder_keeps_its_width_without_latent_dim():
    encoder = DACEncoder(d_model=3, strides=[2, 4])
    assert (encoder.in_channels, encoder.latent_dim, encoder.downsampling_ratio) == (1, 12, 8)
    assert not any(k.startswith("proj_out") for k in encoder.state_dict())
    assert encoder(torch.randn(2, 1, 80)).shape == (2, 12, 10)
    decoder = DACDecoder(latent_dim=12, channels=8, rates=[4, 2])
    assert decoder.out_channels == 1 and decoder(torch.randn(2, 12, 10)).shape == (2, 1, 80)


def test_odd_strides_are_marked_inexact_so_chunking_is_refused():
    encoder = DACEncoder(d_model=1, strides=[3], latent_dim=2)
    decoder = DACDecoder(latent_dim=1, channels=2, rates=[3])
    assert not encoder.exact_ratio and not decoder.exact_ratio
    # A stride-3 transposed conv with kernel 6 and padding 2 yields 3L - 1 samples.
    assert decoder(torch.randn(1, 1, 5)).shape == (1, 1, 14)
    even = DACEncoder(d_model=1, strides=[4, 2])
    assert even.exact_ratio and DACDecoder(latent_dim=1, channels=4, rates=[2, 4]).exact_ratio


# -- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("config, message", [
    (dac_config(encoder={"d_latent": 8}), r"unknown key\(s\) \['d_latent'\]"),
    (dac_config(encoder={"use_snake": True}), "use_snake"),
    (dac_config(decoder={"input_channel": 3}), r"unknown key\(s\) \['input_channel'\]"),
    (dac_config(decoder={"d_out": 2}), "d_out"),
    (dac_config(decoder={"channels": 8}), "halves 4 times to zero"),
    (dac_config(decoder={"rates": []}), "non-empty"),
    (dac_config(encoder={"strides": [4, 4, 8, 0]}), "positive integers"),
    (dac_config(encoder={"latent_dim": 5}), "encoder latent_dim is 5, expected 6"),
    (dac_config(decoder={"rates": [8, 8, 4, 2]}), "decoder upsampling ratio"),
])  # fmt: skip
def test_bad_dac_configs_raise_config_errors_naming_the_problem(config, message):
    with pytest.raises(ConfigError, match=message):
        build_autoencoder(config, 44100)


@pytest.mark.parametrize("part, key", [("encoder", "d_model"), ("encoder", "strides"),
                                       ("decoder", "latent_dim"), ("decoder", "channels"),
                                       ("decoder", "rates")])  # fmt: skip
def test_missing_required_dac_keys_are_named(part, key):
    config = copy.deepcopy(DAC_CASE["pretransform"])
    del config["config"][part]["config"][key]
    with pytest.raises(ConfigError, match=f"missing the required key '{key}'"):
        build_autoencoder(config, 44100)
