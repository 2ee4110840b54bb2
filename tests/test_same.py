"""The SAME autoencoder of Stable Audio 3 (stable_audio_core.models.same) and its shared layers
(models/sa3_layers.py).

Parity fixtures come from tools/make_same_fixtures.py (the stable-audio-3 reference, random
float16-valued weights, float32 compute): a SAME-S-style case (chunked attention with the
midpoint shift, conv mapping k=3) and a SAME-L-style one (sliding window, sin blocks, k=1).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stable_audio_core.errors import ConfigError, InputError
from stable_audio_core.models.attention import attention
from stable_audio_core.models.layers import fold_weight_norm
from stable_audio_core.models.sa3_layers import (
    DynamicTanh,
    SelfAttention,
    sin_pi,
    sliding_window_attention,
)
from stable_audio_core.models.same import (
    PatchedPretransform,
    SAMEAutoencoder,
    autoencoder_state_dict,
    build_same_autoencoder,
    build_same_pretransform,
    is_same_config,
)

FIXTURES = Path(__file__).parent / "fixtures" / "same"
META = json.loads((FIXTURES / "cases.json").read_text())
CASES = sorted(META["cases"])
INPUTS = {k: v.float() for k, v in load_file(str(FIXTURES / "inputs.safetensors")).items()}


def parity_tolerance(reference: torch.Tensor) -> float:
    """The project's parity bound: float32 summation-order noise on outputs of magnitude ~1."""
    return 1e-4 * max(1.0, float(reference.abs().max()))


def assert_parity(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.shape == reference.shape
    error = float((ours - reference).abs().max())
    assert error <= parity_tolerance(reference), error


def ae_config(name: str) -> dict:
    return copy.deepcopy(META["cases"][name]["model_config"]["model"])


def load_case(name: str) -> tuple[SAMEAutoencoder, dict[str, torch.Tensor]]:
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    state = {k[len("state.") :]: v.float() for k, v in tensors.items() if k.startswith("state.")}
    model = build_same_autoencoder(ae_config(name), 44100)
    model.load_state_dict(state, strict=True)
    return model, tensors


@pytest.fixture(scope="module", params=CASES)
def case(request):
    torch.set_num_threads(1)
    return request.param, *load_case(request.param)


# --- structure ------------------------------------------------------------------------------


def test_state_dict_keys_and_shapes_equal_the_reference(case):
    name, model, tensors = case
    reference = {k[len("state.") :]: tuple(v.shape) for k, v in tensors.items() if k.startswith("state.")}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == reference


@pytest.mark.parametrize("name", ["same_s", "same_l"])
def test_full_size_configs_build_with_the_reference_keys_and_shapes(name):
    expected = json.loads((FIXTURES / "full_keys.json").read_text())[name]
    with torch.device("meta"):
        model = build_same_autoencoder(copy.deepcopy(META["full_configs"][name]), 44100)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected


def test_patching_is_channel_major():
    audio = torch.arange(2 * 6, dtype=torch.float32).view(1, 2, 6)   # 2 channels, 3 patches of 2
    patches = PatchedPretransform(channels=2, patch_size=2).encode(audio)
    # Rows: left sample 0, left sample 1, right sample 0, right sample 1.
    assert patches[0].tolist() == [[0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11]]
    assert torch.equal(PatchedPretransform(2, 2).decode(patches), audio)


def test_patching_zero_pads_the_last_patch():
    patches = PatchedPretransform(channels=1, patch_size=4).encode(torch.ones(1, 1, 5))
    assert patches.shape == (1, 4, 2) and patches[0, :, 1].tolist() == [1, 0, 0, 0]


def test_sin_gate_only_in_blocks_with_depth_minus_index_below_sinusoidal_blocks():
    # same_l: decoder depth 2, sinusoidal_blocks [2] -> only block 1 (2 - 1 < 2; 2 - 0 is not).
    model, _ = load_case("same_l")
    block = model.decoder.layers[3]
    assert [layer.ff.ff[0].activation is sin_pi for layer in block.transformers] == [False, True]
    assert all(layer.ff.ff[0].activation is not sin_pi for layer in model.encoder.layers[0].transformers)


def test_mappings_are_old_style_weight_norm_with_the_reference_kernels():
    small, _ = load_case("same_s")
    large, _ = load_case("same_l")
    assert small.decoder.layers[3].mapping.weight_v.shape == (512, 32, 3)
    assert large.decoder.layers[3].mapping.weight_v.shape == (512, 32, 1)
    assert small.encoder.layers[0].mapping.weight_g.shape == (32, 1, 1)


# --- parity ---------------------------------------------------------------------------------


def test_encode_matches_the_reference(case):
    _, model, tensors = case
    with torch.no_grad():
        assert_parity(model.encode(INPUTS["audio"]), tensors["encode.out"])


def test_decode_without_noise_matches_the_reference(case):
    _, model, tensors = case
    with torch.no_grad():
        assert_parity(model.decode(tensors["decode.in"], noise=False), tensors["decode.out"])


def test_decode_with_noise_draws_in_the_reference_order(case):
    # Bottleneck noise first, then the decoder's learned-token noise, from the global RNG.
    name, model, tensors = case
    torch.manual_seed(META["cases"][name]["noise_seed"])
    with torch.no_grad():
        assert_parity(model.decode(tensors["noise.in"]), tensors["noise.out"])


def test_decode_noise_from_a_generator_equals_the_seeded_global_rng(case):
    name, model, tensors = case
    generator = torch.Generator().manual_seed(META["cases"][name]["noise_seed"])
    torch.manual_seed(0)
    with torch.no_grad():
        assert_parity(model.decode(tensors["noise.in"], generator=generator), tensors["noise.out"])


def test_chunked_encode_matches_the_reference(case):
    name, model, tensors = case
    with torch.no_grad():
        ours = model.encode(INPUTS["long_audio"], chunked=True, **META["cases"][name]["chunked"])
    assert_parity(ours, tensors["chunked_encode.out"])


def test_chunked_decode_matches_the_reference(case):
    # L = 5 with windows of 4: the last window starts at latent 1 (the reference's end anchor).
    name, model, tensors = case
    with torch.no_grad():
        ours = model.decode(tensors["chunked_decode.in"], chunked=True, noise=False,
                            **META["cases"][name]["chunked"])
    assert_parity(ours, tensors["chunked_decode.out"])


# --- chunking, lengths, batches -------------------------------------------------------------

# Windows and whole sequences do the same float32 arithmetic per attention chunk/band; only the
# batch size of the matmuls differs, which can change summation order by an ulp or so.
CHUNK_TOLERANCE = 1e-5


@pytest.mark.parametrize("name, overlap", [("same_s", 4), ("same_l", 6)])
def test_chunked_decode_equals_unchunked_where_the_receptive_field_fits_the_margin(name, overlap):
    # SAME-S sees +-2 latents (a pair, then the shifted pair) and windows start at even latents
    # for an even L; SAME-L sees one latent per block each side (2 blocks here).
    model, _ = load_case(name)
    latents = torch.randn(1, 16, 20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model.decode(latents, chunked=False, noise=False)
        windows = model.decode(latents, chunked=True, chunk_size=8, overlap=overlap, noise=False)
    assert (whole - windows).abs().max() <= CHUNK_TOLERANCE


def test_chunked_encode_equals_unchunked_for_aligned_same_s_audio():
    model, _ = load_case("same_s")
    audio = 0.3 * torch.randn(1, 2, 20 * 4096, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = model.encode(audio, chunked=False)
        windows = model.encode(audio, chunked=True, chunk_size=8, overlap=4)
    assert (whole - windows).abs().max() <= CHUNK_TOLERANCE


@pytest.mark.parametrize("name, samples, latents", [
    ("same_s", 4096 + 1, 2),          # SAME-S pads to whole attention chunks: an even count
    ("same_s", 3 * 4096, 4),
    ("same_l", 4096 + 1, 2),          # SAME-L: ceil(T / 4096)
    ("same_l", 3 * 4096 - 300, 3),
])  # fmt: skip
def test_odd_lengths_round_up_as_the_reference(name, samples, latents):
    model, _ = load_case(name)
    with torch.no_grad():
        z = model.encode(torch.zeros(1, 2, samples))
        assert z.shape == (1, 16, latents)
        assert model.decode(z, noise=False).shape == (1, 2, latents * 4096)


def test_same_s_decodes_an_odd_latent_count_to_the_next_even_one():
    model, tensors = load_case("same_s")
    with torch.no_grad():
        assert model.decode(tensors["decode.in"], noise=False).shape == (2, 2, 4 * 4096)
        # Chunked decoding returns exactly L * 4096 samples.
        chunked = model.decode(tensors["chunked_decode.in"], chunked=True, chunk_size=4, overlap=2, noise=False)
    assert chunked.shape == (1, 2, 5 * 4096)


def test_iterate_batch_gives_the_batched_result(case):
    _, model, tensors = case
    with torch.no_grad():
        batched = model.decode(tensors["decode.in"], noise=False)
        model.iterate_batch = True
        try:
            single = model.decode(tensors["decode.in"], noise=False)
            encoded = model.encode(INPUTS["audio"])
        finally:
            model.iterate_batch = False
    assert (batched - single).abs().max() <= CHUNK_TOLERANCE
    assert_parity(encoded, tensors["encode.out"])


# --- the noise switches ---------------------------------------------------------------------


def test_noise_off_gives_a_deterministic_decode():
    model, tensors = load_case("same_s")
    with torch.no_grad():
        torch.manual_seed(1)
        first = model.decode(tensors["noise.in"], noise=False)
        torch.manual_seed(2)
        second = model.decode(tensors["noise.in"], noise=False)
        model.noise = False
        torch.manual_seed(3)
        by_attribute = model.decode(tensors["noise.in"])
    assert torch.equal(first, second) and torch.equal(first, by_attribute)


def test_noise_is_on_by_default_like_the_reference():
    model, tensors = load_case("same_l")
    assert model.noise and model.bottleneck.noise_regularize
    assert model.decoder.layers[3].mask_noise == 0.01 and model.encoder.layers[0].mask_noise == 0.0
    with torch.no_grad():
        torch.manual_seed(1)
        first = model.decode(tensors["noise.in"])
        torch.manual_seed(2)
        second = model.decode(tensors["noise.in"])
        quiet = model.decode(tensors["noise.in"], noise=False)
    assert not torch.equal(first, second)
    # The noise is small: 1e-3 * running_std on the latents, 0.01 on the learned tokens.
    assert (first - quiet).abs().max() < 0.1


def test_the_reference_switches_turn_the_noise_off_too():
    model, tensors = load_case("same_s")
    model.bottleneck.noise_regularize = False
    for module in model.decoder.modules():
        if hasattr(module, "mask_noise"):
            module.mask_noise = 0.0
    with torch.no_grad():
        torch.manual_seed(5)
        switched = model.decode(tensors["decode.in"])
    assert_parity(switched, tensors["decode.out"])


# --- layers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("window, block", [((3, 5), 7), ((17, 17), 16), ((0, 0), 1024)])
def test_sliding_window_attention_equals_one_band_mask(window, block):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=generator) for _ in range(3))
    offset = torch.arange(50)[None, :] - torch.arange(50)[:, None]
    band = (offset >= -window[0]) & (offset <= window[1])
    expected = attention(q, k, v, band)
    assert (sliding_window_attention(q, k, v, window, block=block) - expected).abs().max() <= 1e-6


def test_differential_attention_is_the_difference_of_two_softmax_attentions():
    torch.manual_seed(0)
    layer = SelfAttention(16, 8, differential=True)
    x = torch.randn(2, 5, 16)
    q, k, v, q2, k2 = (t.view(2, 5, 2, 8).transpose(1, 2) for t in layer.to_qkv(x).chunk(5, dim=-1))
    difference = attention(q, k, v) - attention(q2, k2, v)
    expected = layer.to_out(difference.transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_differential_attention_padding_zeroes_the_values_of_padded_keys():
    # The reference's CPU semantics: padded keys stay in the softmax with a zero value.
    torch.manual_seed(0)
    layer = SelfAttention(16, 8, differential=True, qk_norm=DynamicTanh)
    x = torch.randn(1, 6, 16)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    q, k, v, q2, k2 = (t.view(1, 6, 2, 8).transpose(1, 2) for t in layer.to_qkv(x).chunk(5, dim=-1))
    q, q2, k, k2 = layer.q_norm(q), layer.q_norm(q2), layer.k_norm(k), layer.k_norm(k2)
    v = v * mask[:, None, :, None]
    difference = attention(q, k, v) - attention(q2, k2, v)
    expected = layer.to_out(difference.transpose(1, 2).reshape(1, 6, 16))
    assert torch.allclose(layer(x, padding_mask=mask), expected, atol=1e-6)


def test_dynamic_tanh_is_gamma_tanh_alpha_x_plus_beta():
    norm = DynamicTanh(3, init_alpha=2.0)
    with torch.no_grad():
        norm.gamma.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.beta.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.tensor([[0.1, -0.2, 0.3]])
    assert torch.allclose(norm(x), norm.gamma * torch.tanh(2.0 * x) + norm.beta)
    assert set(dict(norm.named_parameters())) == {"alpha", "gamma", "beta"}


# --- building and loading -------------------------------------------------------------------


def test_folding_the_weight_norm_keeps_the_output():
    model, tensors = load_case("same_s")
    with torch.no_grad():
        before = model.decode(tensors["decode.in"], noise=False)
        fold_weight_norm(model)
        after = model.decode(tensors["decode.in"], noise=False)
    assert "decoder.layers.3.mapping.weight" in model.state_dict()
    assert (before - after).abs().max() <= CHUNK_TOLERANCE


def test_full_and_ae_only_checkpoints_both_load():
    model, tensors = load_case("same_s")
    state = {k[len("state.") :]: v.float() for k, v in tensors.items() if k.startswith("state.")}
    full = {f"pretransform.model.{k}": v for k, v in state.items()}
    full["model.model.preprocess_conv.weight"] = torch.zeros(1)
    full["conditioner.conditioners.prompt.padding_embedding"] = torch.zeros(1)
    for checkpoint in (full, state):
        fresh = build_same_autoencoder(ae_config("same_s"), 44100)
        fresh.load_state_dict(autoencoder_state_dict(checkpoint), strict=True)


def test_pretransform_section_sets_chunking_and_batch_iteration():
    section = {"type": "autoencoder", "iterate_batch": True, "chunked": True, "config": ae_config("same_l")}
    model = build_same_pretransform(section, 44100)
    assert model.chunked_by_default and model.iterate_batch and not model.training
    assert model.downsampling_ratio == 4096 and model.latent_dim == 16 and model.scale == 1.0
    assert is_same_config(section["config"]) and not is_same_config({"encoder": {"type": "oobleck"}})


def _with(name: str, path: tuple[str, ...], value) -> dict:
    config = ae_config(name)
    section = config
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    return config


@pytest.mark.parametrize("path, value, message", [
    (("encoder", "config", "use_snake"), True, "use_snake"),
    (("decoder", "config", "conformer"), True, "conformer"),
    (("decoder", "config", "differential"), False, "differential"),
    (("bottleneck", "type"), "vae", "softnorm"),
    (("bottleneck", "config", "noise_augment_dim"), 4, "noise_augment_dim"),
    (("pretransform", "type"), "autoencoder", "patched"),
    (("pretransform", "config", "postfilter_channels"), 8, "postfilter"),
    (("latent_dim",), 32, "latent_dim"),
    (("downsampling_ratio",), 2048, "ratio"),
    (("encoder", "config", "chunk_size"), 24, "multiple of the stride"),
    (("decoder", "config", "strides"), [], "strides"),
    (("mystery",), 1, "mystery"),
])  # fmt: skip
def test_bad_configs_raise_clear_errors(path, value, message):
    with pytest.raises(ConfigError, match=message):
        build_same_autoencoder(_with("same_s", path, value), 44100)


def test_bad_inputs_raise_input_errors():
    model, _ = load_case("same_s")
    with pytest.raises(InputError, match="channels"):
        model.encode(torch.zeros(1, 1, 4096))
    with pytest.raises(InputError, match="Tensor"):
        model.decode(torch.zeros(16, 4))
    with pytest.raises(InputError, match="overlap"):
        model.decode(torch.zeros(1, 16, 8), chunked=True, chunk_size=4, overlap=4)
