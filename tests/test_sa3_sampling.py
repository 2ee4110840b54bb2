"""Stable Audio 3 sampling: schedules, lengths, masks, guidance, samplers and the random-number order.

Reference values come from tests/fixtures/sa3_dit (tools/make_sa3_dit_fixtures.py, stable-audio-3
at 636f906): `build_schedule` as `sample_diffusion` calls it, its padding masks, the latent-length
table of `StableAudioModel._adapt_sample_size`, and whole sampling runs of tiny DiTs
(`sample_diffusion` seeded like `generate`, with three draws made right after it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from stable_audio_core.errors import ConfigError, InputError
from stable_audio_core.models.sa3_dit import SA3DiT
from stable_audio_core.sampling import sa3
from stable_audio_core.sampling.samplers import gaussian_noise, rf_pingpong
from stable_audio_core.sampling.denoisers import rf_denoiser

FIXTURES = Path(__file__).parent / "fixtures" / "sa3_dit"


def close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    # The project's parity tolerance: float32 on both sides, relative to the output's scale.
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    error = (ours - reference).abs().max().item()
    assert error <= tolerance, f"max abs error {error:.3e} > {tolerance:.3e}"


def load(name: str) -> tuple[dict, dict]:
    with safe_open(str(FIXTURES / f"{name}.safetensors"), framework="pt") as f:
        return f.metadata(), {key: f.get_tensor(key) for key in f.keys()}


TABLE = json.loads((FIXTURES / "sampling.json").read_text())
_, SAMPLING = load("sampling")


# --- schedules, lengths, masks ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TABLE["schedules"]))
def test_schedule_matches_the_reference(name):
    spec = TABLE["schedules"][name]
    shift = sa3.LogSNRShift(rate=spec.get("rate", 0.0))
    seconds = spec["seconds"]
    batch = len(seconds) if seconds else 1
    lengths = sa3.effective_lengths(seconds) if seconds else None
    times = sa3.time_schedule(spec["steps"], batch, sigma_max=spec["sigma_max"], shift=shift,
                              lengths=lengths, fallback_length=spec.get("fallback_length"))
    reference = SAMPLING[f"sched.{name}"]
    assert times.shape == (batch, spec["steps"] + 1)
    # The same float32 operations in the same order.
    torch.testing.assert_close(times, reference.expand_as(times), atol=1e-6, rtol=0)
    assert bool((times[:, 0] == spec["sigma_max"]).all()) and bool((times[:, -1] == 0).all())


def test_default_schedule_is_the_released_eight_steps():
    times = sa3.time_schedule(8, 1, lengths=sa3.effective_lengths([30.0]))
    expected = torch.tensor([1.0, 0.9944, 0.9845, 0.9579, 0.8909, 0.7455, 0.5125, 0.2739, 0.0])
    torch.testing.assert_close(times[0], expected, atol=1e-4, rtol=0)


def test_audio_to_audio_schedule_keeps_the_reference_second_value_above_the_first():
    times = sa3.time_schedule(8, 1, sigma_max=0.8, lengths=sa3.effective_lengths([3.0]))
    assert times[0, 0] == pytest.approx(0.8) and times[0, 1] == pytest.approx(0.9768, abs=1e-4)


def test_schedules_differ_per_item_when_the_shift_depends_on_length():
    times = sa3.time_schedule(8, 2, shift=sa3.LogSNRShift(rate=1.0), lengths=sa3.effective_lengths([2.0, 60.0]))
    assert (times[0, 1:-1] - times[1, 1:-1]).abs().min() > 1e-4


@pytest.mark.parametrize("name", sorted(TABLE["padding_masks"]))
def test_padding_mask_matches_the_reference(name):
    spec = TABLE["padding_masks"][name]
    mask = sa3.padding_mask_from_seconds(spec["seconds"], spec["length"])
    assert torch.equal(mask, SAMPLING[f"mask.{name}"].bool())


def test_padding_mask_covers_the_duration_plus_64_frames_of_headroom():
    mask = sa3.padding_mask_from_seconds([3.0, 0.5], 98)
    # ceil(int(3 * 44100) / 4096) = 33 frames + 64 = 97; ceil(22050 / 4096) = 6 + 64 = 70.
    assert mask.sum(dim=1).tolist() == [97, 70]
    assert bool(mask[0, :97].all()) and not bool(mask[0, 97:].any())


def test_latent_lengths_match_the_reference_table():
    for row in TABLE["latent_lengths"]:
        encoder = {"strides": [16]} if row["chunk_size"] is None else {"strides": [16], "chunk_size": row["chunk_size"]}
        samples = sa3.audio_length_for_duration([row["duration"]], max_samples=16777216,
                                                align=sa3.latent_align(encoder))
        assert samples == row["samples"], row


def test_three_seconds_give_98_latents():
    assert sa3.audio_length_for_duration([3.0, 1.0], max_samples=5292032) // 4096 == 98


def test_a_duration_beyond_the_models_maximum_is_an_error_naming_the_limit():
    with pytest.raises(InputError, match=r"at most 5292032 samples \(120.00 s"):
        sa3.audio_length_for_duration([130.0], max_samples=5292032)
    # Within the maximum but without room for the whole headroom: capped, as the reference does.
    assert sa3.audio_length_for_duration([118.0], max_samples=5292032) == 5292032


def test_inpaint_mask_keeps_outside_the_regions_and_zeroes_past_the_duration():
    mask = sa3.inpaint_mask_from_seconds([(1.0, 2.0)], 4 * 44100, seconds_total=3.0)
    assert mask.shape == (1, 4 * 44100)
    assert bool(mask[0, :44100].eq(1).all()) and bool(mask[0, 44100:88200].eq(0).all())
    assert bool(mask[0, 88200:132300].eq(1).all()) and bool(mask[0, 132300:].eq(0).all())
    latent = sa3.latent_inpaint_mask(mask, 43)  # nearest: the first sample of each 4096-frame
    assert latent.shape == (1, 1, 43)
    expected = mask[0, torch.arange(43) * (4 * 44100) // 43]
    assert torch.equal(latent[0, 0], expected)


def test_local_conditioning_is_zero_for_text_to_audio_and_mask_then_masked_latents_otherwise():
    assert torch.equal(sa3.local_add_cond(2, 8, 5), torch.zeros(2, 9, 5))
    mask = torch.tensor([[[1.0, 0.0, 1.0, 1.0, 0.0]]])
    source = torch.randn(1, 8, 5)
    cond = sa3.local_add_cond(2, 8, 5, mask=mask, source_latents=source)
    assert torch.equal(cond[:, :1], mask.expand(2, 1, 5))
    assert torch.equal(cond[:, 1:], (source * mask).expand(2, 8, 5))


def test_shift_options_from_config():
    assert sa3.sampling_shift_from_config(None) == sa3.LogSNRShift(rate=0.0)
    assert sa3.sampling_shift_from_config({"type": "logsnr", "rate": 0.5}).rate == 0.5
    assert sa3.sampling_shift_from_config({"type": "none"}) is None
    with pytest.raises(ConfigError, match="flux"):
        sa3.sampling_shift_from_config({"type": "flux"})


# --- guidance ------------------------------------------------------------------------------------

def test_apg_keeps_the_part_orthogonal_to_the_conditional_estimate():
    diff, cond = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    parallel, orthogonal = sa3.apg_project(diff, cond)
    torch.testing.assert_close(parallel + orthogonal, diff)
    assert (orthogonal * cond).sum(dim=[1, 2]).abs().max() < 1e-5
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    _, orthogonal = sa3.apg_project(diff, cond, mask)
    assert bool(orthogonal[0, :, 4:].eq(0).all())
    assert (orthogonal * cond * mask[:, None]).sum(dim=[1, 2]).abs().max() < 1e-5


def test_unconditional_tokens_are_zeros_or_the_negative_prompt_with_masked_slots_zeroed():
    cond, negative = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.equal(sa3.unconditional_tokens(cond), torch.zeros_like(cond))
    mask = torch.tensor([[True, False, True], [True, True, False]])
    uncond = sa3.unconditional_tokens(cond, negative, mask)
    assert torch.equal(uncond, negative * mask[..., None])


# --- samplers and the random-number order --------------------------------------------------------

RUN_CASES = [("plain", "pingpong_cfg"), ("plain", "euler"), ("plain", "pingpong_a2a"),
             ("differential", "dpmpp_cfg"), ("differential", "euler_a2a")]


@pytest.mark.parametrize("case, run_name", RUN_CASES)
def test_seeded_sampling_matches_the_reference_and_its_random_number_order(case, run_name):
    meta, tensors = load(case)
    config, run = json.loads(meta["config"]), json.loads(meta["runs"])[run_name]
    model = SA3DiT.from_config(config, meta["objective"])
    model.load_state_dict({k[len("model.model."):]: v.float() for k, v in tensors.items()
                           if k.startswith("model.model.")}, strict=True)
    model.eval()
    ref = {k[len(f"gen.{run_name}."):]: v for k, v in tensors.items() if k.startswith(f"gen.{run_name}.")}
    seconds, length = run["seconds"], run["length"]
    sigma_max = run.get("init_noise_level", 1.0)

    generator = torch.Generator().manual_seed(run["seed"])
    noise = sa3.initial_noise(len(seconds), config["io_channels"], length, generator=generator)
    assert torch.equal(noise, ref["noise"])  # the first draw after seeding

    times = sa3.time_schedule(run["steps"], len(seconds), sigma_max=sigma_max,
                              lengths=sa3.effective_lengths(seconds))
    model_fn = sa3.guided_velocity(
        model, cross_attn_cond=ref["cross_attn_cond"], global_embed=ref["global_cond"],
        local_add_cond=ref["local_add_cond"], padding_mask=sa3.padding_mask_from_seconds(seconds, length),
        negative_cross_attn_cond=ref.get("negative_cross_attn_cond"),
        negative_cross_attn_mask=ref.get("negative_cross_attn_mask"),
        cfg_scale=run["cfg_scale"], apg_scale=run.get("apg_scale", 1.0))
    latents = sa3.sample(model_fn, noise, times, sampler=run["sampler"], sigma_max=sigma_max,
                         init_latents=ref.get("init"), generator=generator)
    close(latents, ref["latents"])
    # What is drawn next (the decoder's noise in a generation) sees the reference's generator state.
    assert torch.equal(torch.randn(3, generator=generator), ref["after"])


def test_pingpong_draws_noise_on_every_step_including_the_last():
    draws = []

    def noise(t, t_next):
        draws.append(t_next.clone())
        return torch.zeros(2, 3, 4)

    times = sa3.time_schedule(4, 2, lengths=sa3.effective_lengths([1.0, 1.0]))
    sa3.SA3_SAMPLERS["pingpong"](rf_denoiser(lambda x, t: torch.zeros_like(x)), torch.randn(2, 3, 4), times,
                                 noise=noise)
    assert len(draws) == 4 and bool((draws[-1] == 0).all())


def test_pingpong_per_item_schedule_equals_the_shared_schedule_with_or_without_the_last_draw():
    # Without noise_on_last_step, rf_pingpong skips the unused last draw; the values are the same.
    times = sa3.time_schedule(5, 1, lengths=sa3.effective_lengths([2.0]))
    model_fn = lambda x, t: 0.3 * x + t[:, None, None]  # noqa: E731
    x = torch.randn(1, 3, 4)
    ours = sa3.SA3_SAMPLERS["pingpong"](rf_denoiser(model_fn), x, times,
                                        noise=gaussian_noise(x, torch.Generator().manual_seed(1)))
    scalar = rf_pingpong(rf_denoiser(model_fn), x, times[0],
                         noise=gaussian_noise(x, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(ours, scalar)


def test_audio_to_audio_starts_from_the_source_mixed_with_noise_at_sigma_max():
    seen = []

    def model_fn(x, t):
        seen.append(x.clone())
        return torch.zeros_like(x)

    init, noise = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    times = sa3.time_schedule(2, 1, sigma_max=0.7, lengths=sa3.effective_lengths([1.0]))
    sa3.sample(model_fn, noise, times, sampler="euler", sigma_max=0.7, init_latents=init)
    torch.testing.assert_close(seen[0], init * 0.3 + noise * 0.7)


def test_unknown_sampler_is_refused_with_the_choices():
    with pytest.raises(InputError, match="pingpong"):
        sa3.sample(lambda x, t: x, torch.zeros(1, 2, 3), torch.zeros(1, 3), sampler="heun")
