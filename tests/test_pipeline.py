"""Generation: seeds, batches, audio-to-audio, noise masks, durations, progress and errors."""

import math

import pytest
import torch

from stable_audio_core.audio.io import prepare_audio
from stable_audio_core.autoencoding import decode_latents, encode_audio
from stable_audio_core.errors import InputError, NonFiniteError
from stable_audio_core.pipeline import (SourceLatents, generate, initial_noise, resolve_sampling, sample_latents,
                                        text_conditioner_ids)

from helpers import perturbed_model, tiny_config

COND = {"prompt": 2.0, "seconds_start": 0.0, "seconds_total": 0.01}


@pytest.fixture(scope="module")
def model():
    return perturbed_model(tiny_config(), seed=3)


def _gen(model, **kw):
    args = dict(conditioning=COND, steps=3, cfg_scale=3.0, sampler="dpmpp-2m", seed=11,
                sigma_min=0.3, sigma_max=50.0)
    args.update(kw)
    return generate(model, **args)


def test_initial_noise_equals_the_reference_seeding():
    # stable-audio-tools: torch.manual_seed(seed); torch.randn([B, C, L]).
    torch.manual_seed(1234)
    expected = torch.randn(3, 16, 20)
    torch.testing.assert_close(initial_noise((3, 16, 20), 1234, seed_per_item=False), expected, rtol=0, atol=0)


def test_seed_per_item_makes_every_item_reproducible_alone(model):
    batch = _gen(model, batch_size=3, seed_per_item=True, seed=40)
    assert batch.seeds == [40, 41, 42]
    single = _gen(model, batch_size=1, seed=41)
    # Same noise and conditioning; only float32 reduction order differs between batch sizes.
    torch.testing.assert_close(batch.latents[1:2], single.latents, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batch.latents[0], batch.latents[1])


def test_same_seed_same_audio_different_seed_different_audio(model):
    a, b, c = _gen(model, seed=5), _gen(model, seed=5), _gen(model, seed=6)
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)
    assert not torch.allclose(a.audio, c.audio)


def test_random_seed_is_reported_and_reproduces(model):
    first = _gen(model, seed=-1)
    again = _gen(model, seed=first.seeds[0])
    torch.testing.assert_close(first.audio, again.audio, rtol=0, atol=0)


def test_output_is_trimmed_to_seconds_total(model):
    total = 700 / 44100
    result = _gen(model, conditioning={**COND, "seconds_total": total}, seconds_total=total)
    assert result.audio.shape == (1, 2, 700)
    untrimmed = _gen(model, trim=False)
    assert untrimmed.audio.shape[-1] == tiny_config()["sample_size"]


def test_noise_mask_keeps_the_unmasked_latents_of_the_source(model):
    source = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 1, 64)
    mask[..., 20:40] = 1.0
    out = _gen(model, init_latents=source, noise_mask=mask, init_noise_level=50.0, decode=False)
    torch.testing.assert_close(out.latents[..., :20], source[..., :20])
    torch.testing.assert_close(out.latents[..., 40:], source[..., 40:])
    assert (out.latents[..., 20:40] - source[..., 20:40]).abs().max() > 0.1


def test_full_mask_equals_plain_audio_to_audio(model):
    source = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(2))
    plain = _gen(model, init_latents=source, init_noise_level=5.0, decode=False)
    masked = _gen(model, init_latents=source, init_noise_level=5.0, noise_mask=torch.ones(1, 1, 64), decode=False)
    torch.testing.assert_close(plain.latents, masked.latents, rtol=0, atol=0)


def test_init_audio_at_low_noise_stays_close_to_its_encoding(model):
    audio = 0.3 * torch.randn(2, 1024, generator=torch.Generator().manual_seed(9))
    encoded = model.autoencoder.encode(audio[None])
    out = _gen(model, init_audio=(44100, audio), init_noise_level=0.05, decode=False)
    # At sigma 0.05 the sampler starts 5% of a unit of noise away from the source latents.
    assert (out.latents - encoded).abs().mean() < 0.2 * encoded.abs().mean() + 0.05


def test_generate_is_its_named_steps(model):
    # Text-to-audio without decoding is one sample_latents call on the resolved settings.
    settings = resolve_sampling(model, steps=3, cfg_scale=3.0, sampler="dpmpp-2m", sigma_min=0.3, sigma_max=50.0)
    positive = model.condition([COND, COND])

    latents, noise = sample_latents(model, positive, None, settings, seed=11, batch_size=2, frames=64)

    reference = _gen(model, batch_size=2, decode=False)
    assert torch.equal(latents, reference.latents) and torch.equal(noise, reference.initial_noise)


def test_sample_latents_from_a_source_keeps_it_where_the_mask_is_zero(model):
    settings = resolve_sampling(model, steps=2, sampler="dpmpp-2m", sigma_min=0.3, sigma_max=50.0)
    source = torch.randn(1, 16, 30, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 1, 30)
    mask[..., 20:] = 1.0

    out, _ = sample_latents(model, model.condition([COND]), None, settings, seed=2, batch_size=1, frames=30,
                            source=SourceLatents(source, mask, denoise=0.5))

    assert out.shape == (1, 16, 30)
    torch.testing.assert_close(out[..., :20], source[..., :20])
    assert (out[..., 20:] - source[..., 20:]).abs().max() > 0.01


def test_encode_audio_fits_the_autoencoder_and_pads_to_whole_latent_frames(model):
    audio = 0.3 * torch.randn(1, 1000, generator=torch.Generator().manual_seed(5))  # mono, 22.05 kHz

    latents = encode_audio(model, audio, 22050)

    fitted = prepare_audio(audio, 22050, 44100, 2)
    assert latents.shape == (1, 16, -(-fitted.shape[-1] // 16))
    padded = torch.nn.functional.pad(fitted, (0, latents.shape[-1] * 16 - fitted.shape[-1]))
    torch.testing.assert_close(latents, model.autoencoder.encode(padded), rtol=0, atol=0)
    assert torch.equal(encode_audio(model.autoencoder, audio, 22050), latents)  # the VAE alone, same rate


def test_encode_and_decode_report_non_finite_values_with_the_stage(model):
    with pytest.raises(NonFiniteError, match="VAE encoder"):
        encode_audio(model, torch.full((2, 64), math.nan), 44100)
    with pytest.raises(NonFiniteError, match="VAE decoder"):
        decode_latents(model, torch.full((1, 16, 4), math.nan))


def test_text_conditioners_are_found_on_the_model(model):
    assert text_conditioner_ids(model) == []  # the tiny model's prompt is a number conditioner


def test_negative_prompt_changes_the_guided_result(model):
    plain = _gen(model)
    negative = _gen(model, negative_conditioning={**COND, "prompt": 7.0})
    assert not torch.allclose(plain.latents, negative.latents)


def test_progress_callback_sees_every_step(model):
    seen = []
    _gen(model, steps=4, callback=lambda info: seen.append(info["i"]))
    assert seen == [0, 1, 2, 3]


def test_callback_exception_interrupts_generation(model):
    class Stop(Exception):
        pass

    def stop(info):
        raise Stop
    with pytest.raises(Stop):
        _gen(model, callback=stop)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seconds_total=-1.0), "impossible duration"),
    (dict(seconds_total=100.0), "longer than the generation window"),
    (dict(steps=0), "steps must be at least 1"),
    (dict(batch_size=0), "batch_size"),
    (dict(noise_mask=torch.ones(1, 1, 64)), "noise_mask needs the source"),
])
def test_bad_requests_raise_clear_input_errors(model, kwargs, message):
    with pytest.raises(InputError, match=message):
        _gen(model, **kwargs)


def test_missing_conditioning_value_names_the_conditioner(model):
    with pytest.raises(InputError, match="no value for 'seconds_start'"):
        generate(model, conditioning={"prompt": 1.0, "seconds_total": 1.0}, steps=1)


def test_nan_in_the_sampler_output_is_reported_with_stage_and_dtype(model):
    backbone = model.backbone
    original = backbone.forward
    backbone.forward = lambda *a, **k: original(*a, **k) * math.nan
    try:
        with pytest.raises(NonFiniteError, match="sampler output \\(torch.float32"):
            _gen(model)
    finally:
        del backbone.forward


def test_rectified_flow_model_generates_with_its_defaults():
    model = perturbed_model(tiny_config(objective="rf_denoiser"), seed=1)
    out = generate(model, conditioning=COND, steps=3, seed=0)
    assert out.audio.shape[:2] == (1, 2) and torch.isfinite(out.audio).all()


def test_text_prompt_flows_through_t5_into_generation(tmp_path):
    """A tiny T5 folder (fixture weights + a tokenizer built here) conditions a tiny model."""
    import shutil

    from helpers import FIXTURES, save_checkpoint
    from stable_audio_core.factory import load_model
    from fixture_inputs import build_test_tokenizer

    folder = tmp_path / "t5"
    shutil.copytree(FIXTURES / "t5" / "relu", folder)
    build_test_tokenizer().save(str(folder / "tokenizer.json"))
    config = tiny_config()
    config["model"]["conditioning"]["configs"][0] = {
        "id": "prompt", "type": "t5", "config": {"t5_model_name": "local-t5", "max_length": 16}}
    save_checkpoint(perturbed_model(config), tmp_path / "m.safetensors")
    model = load_model(config, tmp_path / "m.safetensors", text_encoder=folder)
    run = lambda prompt: generate(model, prompt, seconds_total=0.01, steps=2, seed=1, sampler="dpmpp-2m",
                                  decode=False).latents
    torch.testing.assert_close(run("a b c"), run("a b c"), rtol=0, atol=0)
    assert not torch.allclose(run("a b c"), run("c a"))
    assert text_conditioner_ids(model) == ["prompt"]
    tokens = model.condition([{"prompt": "a b", "seconds_start": 0, "seconds_total": 1}]).cross_attn_cond
    assert tokens.shape == (1, 16 + 2, 32)
    assert tokens[0, 4:16].abs().max() == 0  # padded T5 positions are zero, as in the reference
