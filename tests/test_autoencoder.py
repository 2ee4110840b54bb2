"""The Oobleck VAE (stable_audio_core.models.autoencoder) and the shared layers it uses.

Parity fixtures come from tools/make_vae_fixtures.py (stable-audio-tools 0.0.19, perturbed
weights). Float32 results differ from the reference only by summation order; the tool measured
at most 4.8e-7 on outputs of magnitude ~0.1-1, so 1e-5 leaves room for other CPUs' kernels.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stable_audio_core.errors import ConfigError, InputError
from stable_audio_core.models.autoencoder import (
    ENCODER_TYPES,
    AudioAutoencoder,
    build_autoencoder,
    chunk_windows,
)
from stable_audio_core.models.layers import (
    Snake1d,
    SnakeBeta,
    WNConv1d,
    WNConvTranspose1d,
    fold_weight_norm,
    fold_weight_norm_state,
    match_weight_norm_form,
    unfold_weight_norm_state,
)

VAE_FIXTURES = Path(__file__).parent / "fixtures" / "vae"
CASES = json.loads((VAE_FIXTURES / "cases.json").read_text())
PARITY_TOLERANCE = 1e-5  # float32 summation-order noise; measured <= 4.8e-7 (see module doc)
# Chunked vs unchunked: identical arithmetic on identical inputs once the discarded margin covers
# the receptive field; only conv-kernel blocking differs with the length (measured <= 3e-7).
CHUNK_TOLERANCE = 1e-5


def load_case(name: str) -> tuple[AudioAutoencoder, dict[str, torch.Tensor]]:
    case = CASES[name]
    tensors = load_file(str(VAE_FIXTURES / f"{name}.safetensors"))
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    model = build_autoencoder(case["pretransform"], case["sample_rate"])
    model.load_state_dict(state)
    return model, tensors


def small_vae(**pretransform_overrides) -> AudioAutoencoder:
    """The sao_shape fixture's config (ratio 2048, snake) with random perturbed weights."""
    config = copy.deepcopy(CASES["sao_shape"]["pretransform"])
    config.update(pretransform_overrides)
    torch.manual_seed(0)
    model = build_autoencoder(config, 44100)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


# -- parity with stable-audio-tools --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_keys_and_shapes_equal_the_references(name):
    model = build_autoencoder(CASES[name]["pretransform"], CASES[name]["sample_rate"])
    tensors = load_file(str(VAE_FIXTURES / f"{name}.safetensors"))
    reference = {k[len("state.") :]: v.shape for k, v in tensors.items() if k.startswith("state.")}
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert ours == reference


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoded_mean_matches_reference(name):
    model, expected = load_case(name)
    with torch.no_grad():
        mean = model.encode(expected["audio"], chunked=False)
    assert mean.shape == expected["mean"].shape
    torch.testing.assert_close(mean, expected["mean"], atol=PARITY_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_of_mean_matches_reference(name):
    model, expected = load_case(name)
    with torch.no_grad():
        audio = model.decode(expected["mean"], chunked=False)
    assert audio.shape == expected["decoded"].shape
    torch.testing.assert_close(audio, expected["decoded"], atol=PARITY_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kl_matches_reference(name):
    model, expected = load_case(name)
    with torch.no_grad():
        _, kl = model.encode_with_kl(expected["audio"])
    # KL sums ~latent_dim terms of magnitude ~1: relative float32 noise.
    torch.testing.assert_close(kl.reshape(1), expected["kl"], atol=0, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampled_latents_match_reference_for_the_same_seed(name):
    model, expected = load_case(name)
    generator = torch.Generator().manual_seed(CASES[name]["seed"])
    with torch.no_grad():
        sampled = model.encode(expected["audio"], sample=True, generator=generator)
    torch.testing.assert_close(sampled, expected["sampled"], atol=PARITY_TOLERANCE, rtol=0)


def test_full_sao_1_0_vae_has_the_references_keys_shapes_and_parameter_count():
    reference = json.loads((VAE_FIXTURES / "sao_1_0_vae_keys.json").read_text())
    with torch.device("meta"):
        model = build_autoencoder(reference["pretransform"], 44100)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == reference["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == reference["parameter_count"] == 156_112_514
    assert (model.downsampling_ratio, model.latent_dim, model.io_channels) == (2048, 64, 2)


# -- chunking ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 7, 64, 65, 100, 301])
@pytest.mark.parametrize("chunk_size, overlap", [(16, 4), (32, 31), (10, 0), (128, 32)])
def test_chunk_windows_tile_the_sequence_with_margins(length, chunk_size, overlap):
    windows = chunk_windows(length, chunk_size, overlap)
    assert windows[0].keep_start == 0 and windows[-1].keep_stop == length
    for window, following in zip(windows, windows[1:]):
        assert window.keep_stop == following.keep_start
        assert window.stop - window.keep_stop >= overlap // 2
        assert following.keep_start - following.start >= overlap // 2
    sizes = {window.stop - window.start for window in windows}
    assert len(sizes) == 1 and sizes.pop() <= min(chunk_size, length)
    for window in windows:
        assert window.start <= window.keep_start < window.keep_stop <= window.stop
    # As few windows as chunk_size allows: one fewer could not keep `length` latents.
    margin = overlap // 2
    fewer = len(windows) - 1
    assert fewer == 0 or fewer * chunk_size - 2 * margin * (fewer - 1) < length


def test_chunk_windows_are_balanced():
    # 432 latents (10 s of the paper's VAE) in windows of at most 256, overlap 32.
    windows = chunk_windows(432, 256, 32)
    assert [(w.start, w.stop) for w in windows] == [(0, 232), (200, 432)]
    assert [(w.keep_start, w.keep_stop) for w in windows] == [(0, 216), (216, 432)]
    assert sum(w.stop - w.start for w in windows) == 464  # not 512, as two full windows of 256 would be


@pytest.mark.parametrize("chunk_size, overlap", [(0, 0), (8, 8), (8, -1)])
def test_chunk_windows_reject_impossible_sizes(chunk_size, overlap):
    with pytest.raises(InputError, match="chunk_size"):
        chunk_windows(100, chunk_size, overlap)


def test_chunked_decode_equals_unchunked_decode():
    # The sao_shape decoder's receptive field is about 10.2 latents each side (measured by
    # perturbing one latent), so overlap 24 (12 discarded per edge) covers it.
    model = small_vae()
    latents = torch.randn(2, 4, 75)
    with torch.no_grad():
        whole = model.decode(latents, chunked=False)
        chunked = model.decode(latents, chunked=True, chunk_size=32, overlap=24)
    assert chunked.shape == whole.shape == (2, 2, 75 * 2048)
    torch.testing.assert_close(chunked, whole, atol=CHUNK_TOLERANCE, rtol=0)


def test_chunked_encode_equals_unchunked_encode_including_trailing_samples():
    model = small_vae()
    audio = 0.5 * torch.randn(1, 2, 40 * 2048 + 777)
    with torch.no_grad():
        whole = model.encode(audio, chunked=False)
        chunked = model.encode(audio, chunked=True, chunk_size=24, overlap=20)
    assert chunked.shape == whole.shape == (1, 4, 40)
    torch.testing.assert_close(chunked, whole, atol=CHUNK_TOLERANCE, rtol=0)


def _decoder_input_lengths(model: AudioAutoencoder, **decode_kwargs) -> list[int]:
    lengths = []

    def record(_, args):
        lengths.append(args[0].shape[-1])

    hook = model.decoder.register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            model.decode(torch.randn(1, 4, 50), **decode_kwargs)
    finally:
        hook.remove()
    return lengths


def test_chunked_decode_feeds_the_decoder_one_window_at_a_time():
    lengths = _decoder_input_lengths(small_vae(), chunked=True, chunk_size=16, overlap=4)
    assert len(lengths) == len(chunk_windows(50, 16, 4)) and max(lengths) <= 16


def test_auto_chunking_starts_above_chunk_size_latents():
    model = small_vae()
    assert _decoder_input_lengths(model, chunk_size=50) == [50]
    lengths = _decoder_input_lengths(model, chunk_size=49, overlap=8)
    assert len(lengths) == 2 and max(lengths) <= 49


def test_config_chunked_true_makes_chunking_the_default():
    model = small_vae(chunked=True)
    lengths = _decoder_input_lengths(model, chunk_size=20, overlap=8)
    assert len(lengths) > 1 and max(lengths) <= 20


def test_odd_strides_decode_whole_by_default_and_refuse_forced_chunking():
    model, expected = load_case("nearest_odd_stride")  # the encoder has a stride-3 conv
    audio = expected["audio"]
    with torch.no_grad():
        auto = model.encode(audio, chunk_size=2, overlap=0)
    torch.testing.assert_close(auto, expected["mean"], atol=PARITY_TOLERANCE, rtol=0)
    with pytest.raises(InputError, match="chunked=False"):
        model.encode(audio, chunked=True, chunk_size=4, overlap=2)


# -- the public API around the networks --------------------------------------------------


def test_iterate_batch_gives_the_same_result_as_a_whole_batch():
    batched, one_by_one = small_vae(iterate_batch=False), small_vae(iterate_batch=True)
    latents = torch.randn(3, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(one_by_one.decode(latents), batched.decode(latents))


def test_scale_divides_encoded_latents_and_multiplies_decoded_ones():
    plain, scaled = small_vae(), small_vae(scale=2.0)
    audio, latents = 0.5 * torch.randn(1, 2, 4 * 2048), torch.randn(1, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(scaled.encode(audio), plain.encode(audio) / 2.0)
        torch.testing.assert_close(scaled.decode(latents), plain.decode(latents * 2.0))


def test_encode_with_kl_trains_the_encoder():
    model = small_vae(enable_grad=True).train()
    latents, kl = model.encode_with_kl(0.5 * torch.randn(1, 2, 2 * 2048))
    (latents.square().mean() + kl).backward()
    first_conv = model.encoder.layers[0]
    assert first_conv.weight_v.grad is not None and first_conv.weight_v.grad.abs().sum() > 0


def test_build_returns_a_frozen_model_in_eval_mode_like_the_reference_pretransform():
    model = small_vae()
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("bad_input, message", [
    (torch.randn(2, 4096), "Tensor\\[B, C, T\\]"),
    (torch.randn(1, 3, 4096), "3 channels"),
    (torch.randn(1, 2, 100), "minimum is 2048"),
])  # fmt: skip
def test_encode_rejects_malformed_audio(bad_input, message):
    with pytest.raises(InputError, match=message):
        small_vae().encode(bad_input)


def test_decode_rejects_latents_with_the_wrong_width():
    with pytest.raises(InputError, match="5 channels"):
        small_vae().decode(torch.randn(1, 5, 3))


# -- config errors -------------------------------------------------------------------------


def _sao_shape_config() -> dict:
    return copy.deepcopy(CASES["sao_shape"]["pretransform"])


def _with(edit) -> dict:
    config = _sao_shape_config()
    edit(config)
    return config


@pytest.mark.parametrize("config, message", [
    (_with(lambda c: c.update(scael=1.0)), r"unknown key\(s\) \['scael'\]"),
    (_with(lambda c: c.update(type="wavelet")), "only 'autoencoder'"),
    (_with(lambda c: c["config"].update(latent_size=3)), "latent_size"),
    (_with(lambda c: c["config"]["encoder"].update(type="seanet")), "unknown type 'seanet'"),
    (_with(lambda c: c["config"]["decoder"]["config"].update(use_snek=True)), "use_snek"),
    (_with(lambda c: c["config"]["decoder"]["config"].update(antialias_activation=True)),
     "not supported"),
    (_with(lambda c: c["config"]["bottleneck"].update(type="rvq")), "unknown type 'rvq'"),
    (_with(lambda c: c["config"].pop("latent_dim")), "'latent_dim'"),
    (_with(lambda c: c["config"].update(latent_dim=5)), "decoder latent_dim is 4, expected 5"),
    (_with(lambda c: c["config"].update(downsampling_ratio=1024)), "downsampling ratio"),
    (_with(lambda c: c["config"]["encoder"]["config"].update(strides=[2, 4])), "same length"),
])  # fmt: skip
def test_bad_configs_raise_config_errors_naming_the_problem(config, message):
    with pytest.raises(ConfigError, match=message):
        build_autoencoder(config, 44100)


def test_a_new_encoder_type_registers_without_touching_the_builder(monkeypatch):
    built = []

    def build_custom(config):
        built.append(config)
        return ENCODER_TYPES["oobleck"](config)

    monkeypatch.setitem(ENCODER_TYPES, "custom", build_custom)
    config = _with(lambda c: c["config"]["encoder"].update(type="custom"))
    build_autoencoder(config, 44100)
    assert built == [config["config"]["encoder"]["config"]]


# -- shared layers -------------------------------------------------------------------------


def test_snake_beta_follows_its_formula_with_log_scale_parameters():
    snake = SnakeBeta(3)
    assert snake.alpha.shape == snake.beta.shape == (3,)  # stable-audio-tools' layout
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.0, 0.5, -1.0]))
        snake.beta.copy_(torch.tensor([0.2, 0.0, 1.0]))
    x = torch.randn(2, 3, 10)
    alpha, beta = snake.alpha.exp()[:, None], snake.beta.exp()[:, None]
    expected = x + torch.sin(alpha * x) ** 2 / (beta + 1e-9)
    with torch.no_grad():
        torch.testing.assert_close(snake(x), expected)


def test_dac_snake_has_one_linear_alpha_in_dac_layout_and_uses_it_as_divisor():
    snake = Snake1d(3)
    assert [k for k, _ in snake.named_parameters()] == ["alpha"]
    assert snake.alpha.shape == (1, 3, 1)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.5, 1.0, 2.0]).reshape(1, 3, 1))
    x = torch.randn(2, 3, 10)
    expected = x + torch.sin(snake.alpha * x) ** 2 / (snake.alpha + 1e-9)
    with torch.no_grad():
        torch.testing.assert_close(snake(x), expected)


@pytest.mark.parametrize("weight_normed, plain", [
    (WNConv1d, torch.nn.Conv1d),
    (WNConvTranspose1d, torch.nn.ConvTranspose1d),
])  # fmt: skip
def test_weight_normed_conv_uses_g_times_v_over_its_norm(weight_normed, plain):
    conv = weight_normed(3, 5, kernel_size=4, stride=2, padding=1)
    reference = plain(3, 5, kernel_size=4, stride=2, padding=1)
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
        norm = conv.weight_v.norm(dim=(1, 2), keepdim=True)  # over every dim but 0
        reference.weight.copy_(conv.weight_g * conv.weight_v / norm)
        reference.bias.copy_(conv.bias)
        x = torch.randn(2, 3, 9)
        torch.testing.assert_close(conv(x), reference(x))
    assert list(conv.state_dict()) == ["bias", "weight_g", "weight_v"]
    # torch.nn.utils.weight_norm(dim=0): one g per output channel of a conv, per input channel
    # of a transposed conv (dim 0 of its weight).
    assert conv.weight_g.shape == (conv.weight_v.shape[0], 1, 1)


def test_folding_weight_norm_keeps_outputs_and_leaves_plain_weights():
    model, expected = load_case("sao_shape")
    fold_weight_norm(model)
    keys = list(model.state_dict())
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)
    assert "decoder.layers.0.weight" in keys
    with torch.no_grad():
        audio = model.decode(expected["mean"], chunked=False)
    # Folding only reorders the g * v / ||v|| arithmetic: float32 rounding.
    torch.testing.assert_close(audio, expected["decoded"], atol=PARITY_TOLERANCE, rtol=0)


def test_a_folded_checkpoint_loads_into_a_weight_normed_model_and_back():
    model, expected = load_case("sao_shape")
    folded_state = fold_weight_norm(copy.deepcopy(model)).state_dict()
    fresh = build_autoencoder(CASES["sao_shape"]["pretransform"], 44100)
    fresh.load_state_dict(unfold_weight_norm_state(folded_state, fresh.state_dict()))
    with torch.no_grad():
        audio = fresh.decode(expected["mean"], chunked=False)
    torch.testing.assert_close(audio, expected["decoded"], atol=PARITY_TOLERANCE, rtol=0)

    folded_model = fold_weight_norm(build_autoencoder(CASES["sao_shape"]["pretransform"], 44100))
    refolded = fold_weight_norm_state(model.state_dict(), folded_model.state_dict())
    assert set(refolded) == set(folded_model.state_dict())


def test_match_weight_norm_form_accepts_parametrization_keys():
    conv = WNConv1d(2, 3, kernel_size=3)
    renamed = {"conv.bias": conv.bias, "conv.parametrizations.weight.original0": conv.weight_g,
               "conv.parametrizations.weight.original1": conv.weight_v}  # fmt: skip
    matched = match_weight_norm_form(renamed, ["conv.bias", "conv.weight_g", "conv.weight_v"])
    assert set(matched) == {"conv.bias", "conv.weight_g", "conv.weight_v"}
    assert matched["conv.weight_v"] is conv.weight_v
