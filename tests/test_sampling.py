"""Sampling layer: schedules, denoisers, samplers and the sample_v / sample_rf entries.

Reference values come from tests/fixtures/sampling (written by tools/make_sampling_fixtures.py with
k-diffusion 0.1.1 and stable-audio-tools 0.0.19) for the analytic model v = tanh(a * x + b * t).
Stochastic samplers replay the fixture's stored noise in call order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stable_audio_core.errors import InputError
from stable_audio_core.sampling import loop
from stable_audio_core.sampling.denoisers import rf_denoiser, v_denoiser
from stable_audio_core.sampling.loop import sample_rf, sample_v
from stable_audio_core.sampling.samplers import RF_SAMPLERS, SAMPLERS
from stable_audio_core.sampling.schedules import SCHEDULES, rectified_flow_logsnr

FIXTURES = Path(__file__).parent / "fixtures" / "sampling"
REFERENCE = load_file(str(FIXTURES / "reference.safetensors"))
META = json.loads((FIXTURES / "cases.json").read_text())
CASES = {case["name"]: case for case in META["cases"]}

# float32 end to end; our samplers reorder a few scalar operations (e.g. sigma_next / sigma
# instead of exp(log sigma - log sigma_next)), which moves results by a few ulps per step.
RELATIVE_TOLERANCE = 1e-5


def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(REFERENCE["a"] * x + REFERENCE["b"] * t[:, None, None])


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


class Replay:
    """Noise source returning the fixture's stored noise in call order."""

    def __init__(self):
        self.calls = 0

    def __call__(self, sigma, sigma_next):
        sample = REFERENCE["replay_noise"][self.calls].clone()
        self.calls += 1
        return sample


@pytest.fixture
def replayed_noise(monkeypatch):
    """Make sample_v / sample_rf draw the fixture's noise instead of the generator's."""
    replays = []

    def make(x, generator=None):
        replays.append(Replay())
        return replays[-1]

    monkeypatch.setattr(loop, "gaussian_noise", make)
    return replays


# ---- schedules -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", META["schedules"], ids=lambda s: f"{s['name']}-{s['steps']}")
def test_schedule_matches_k_diffusion(spec):
    ours = SCHEDULES[spec["name"]](spec["steps"], spec["sigma_min"], spec["sigma_max"], spec.get("rho"))
    expected = REFERENCE[spec["key"]]
    assert ours.dtype == expected.dtype and ours.shape == (spec["steps"] + 1,)
    assert ours[-1] == 0
    assert relative_error(ours, expected) < RELATIVE_TOLERANCE


@pytest.mark.parametrize("spec", META["rf_schedules"], ids=lambda s: f"{s['steps']}-{s['t_max']}")
def test_rectified_flow_schedule_matches_sample_rf(spec):
    ours = rectified_flow_logsnr(spec["steps"], spec["t_max"])
    expected = REFERENCE[spec["key"]]
    assert ours.shape == expected.shape
    assert ours[0] == min(spec["t_max"], 1.0) and ours[-1] == 0
    assert relative_error(ours, expected) < RELATIVE_TOLERANCE


@pytest.mark.parametrize("bad", [dict(steps=0), dict(steps=2.5), dict(sigma_min=0.0), dict(sigma_max=-1.0)])
def test_schedules_reject_impossible_arguments(bad):
    args = dict(steps=4, sigma_min=0.01, sigma_max=10.0) | bad
    for schedule in SCHEDULES.values():
        with pytest.raises(InputError):
            schedule(args["steps"], args["sigma_min"], args["sigma_max"], 1.0)


# ---- samplers against the references -------------------------------------------------------

@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["kind"] == "direct_v"])
def test_sampler_matches_k_diffusion_on_a_given_schedule(name):
    case = CASES[name]
    sigmas = REFERENCE[case["sigmas"]]
    replay = Replay()
    ours = SAMPLERS[case["sampler"]](v_denoiser(model_fn), REFERENCE["noise"] * sigmas[0], sigmas, noise=replay)
    assert replay.calls == case["noise_calls"]
    assert relative_error(ours, REFERENCE[f"out/{name}"]) < RELATIVE_TOLERANCE


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["kind"] == "v"])
def test_sample_v_matches_sample_k(name, replayed_noise):
    case = CASES[name]
    ours = sample_v(model_fn, REFERENCE["noise"], steps=case["steps"], sampler=case["sampler"],
                    sigma_min=case["sigma_min"], sigma_max=case["sigma_max"], rho=case["rho"],
                    init_latents=REFERENCE["init"] if case["init"] else None)
    assert replayed_noise[0].calls == case["noise_calls"]
    assert relative_error(ours, REFERENCE[f"out/{name}"]) < RELATIVE_TOLERANCE


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["kind"] == "rf"])
def test_sample_rf_matches_stable_audio_tools(name, replayed_noise):
    case = CASES[name]
    ours = sample_rf(model_fn, REFERENCE["noise"], steps=case["steps"], sampler=case["sampler"],
                     sigma_max=case["sigma_max"], init_latents=REFERENCE["init"] if case["init"] else None)
    # The reference pingpong also draws noise for its last step, where it is multiplied by t = 0.
    skipped_final_draw = 1 if case["sampler"] == "pingpong" else 0
    assert replayed_noise[0].calls == case["noise_calls"] - skipped_final_draw
    assert relative_error(ours, REFERENCE[f"out/{name}"]) < RELATIVE_TOLERANCE


def test_every_registry_entry_is_checked_against_the_reference():
    assert set(SCHEDULES) <= {spec["name"] for spec in META["schedules"]}
    for kind, registry in [("direct_v", SAMPLERS), ("v", SAMPLERS), ("rf", RF_SAMPLERS)]:
        assert set(registry) == {case["sampler"] for case in CASES.values() if case["kind"] == kind}


# ---- denoisers -----------------------------------------------------------------------------

def test_v_denoiser_inverts_the_v_objective():
    # x = x0 + sigma * eps with v = alpha * eps - beta * x0 at t = atan(sigma) * 2 / pi
    # (alpha = cos, beta = sin of t * pi / 2) must denoise back to x0.
    x0, eps = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    sigma = torch.tensor([0.1, 1.0, 30.0])
    alpha, beta = (1 / (1 + sigma ** 2).sqrt())[:, None, None], (sigma / (1 + sigma ** 2).sqrt())[:, None, None]
    true_v = lambda x, t: alpha * eps - beta * x0
    recovered = v_denoiser(true_v)(x0 + sigma[:, None, None] * eps, sigma)
    assert torch.allclose(recovered, x0, atol=1e-5)  # float32 rounding of the scalings


def test_rf_denoiser_inverts_the_flow():
    x0, eps, t = torch.randn(3, 2, 5), torch.randn(3, 2, 5), torch.tensor([0.2, 0.5, 1.0])
    recovered = rf_denoiser(lambda x, time: eps - x0)((1 - t[:, None, None]) * x0 + t[:, None, None] * eps, t)
    assert torch.allclose(recovered, x0, atol=1e-6)


# ---- noise mask ----------------------------------------------------------------------------

def mixing_model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The fixture model plus a term coupling every position, so kept latents steer the rest."""
    return model_fn(x, t) + 0.5 * x.mean(dim=-1, keepdim=True)


def _run(kind, sampler, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    if kind == "v":
        return sample_v(mixing_model_fn, REFERENCE["noise"], steps=6, sampler=sampler, sigma_max=1.5,
                        generator=generator, **kwargs)
    return sample_rf(mixing_model_fn, REFERENCE["noise"], steps=6, sampler=sampler, sigma_max=0.8,
                     generator=generator, **kwargs)


ALL_SAMPLERS = [("v", name) for name in SAMPLERS] + [("rf", name) for name in RF_SAMPLERS]
INIT = REFERENCE["init"]
HALF_MASK = torch.zeros(2, 1, 16)
HALF_MASK[:, :, 4:12] = 1


@pytest.mark.parametrize("kind,sampler", ALL_SAMPLERS)
def test_mask_of_all_ones_equals_the_unmasked_run_bit_for_bit(kind, sampler):
    unmasked = _run(kind, sampler, init_latents=INIT)
    masked = _run(kind, sampler, init_latents=INIT, noise_mask=torch.ones(2, 1, 16))
    assert torch.equal(masked, unmasked)


@pytest.mark.parametrize("kind,sampler", ALL_SAMPLERS)
def test_mask_keeps_the_source_exactly_and_regenerates_the_rest(kind, sampler):
    masked = _run(kind, sampler, init_latents=INIT, noise_mask=HALF_MASK)
    unmasked = _run(kind, sampler, init_latents=INIT)
    kept = HALF_MASK.expand_as(INIT) == 0
    assert torch.equal(masked[kept], INIT[kept])
    assert not torch.allclose(masked[~kept], INIT[~kept])
    assert not torch.equal(masked[~kept], unmasked[~kept])  # the kept context steers the rest


@pytest.mark.parametrize("kind,sampler", [("v", "dpmpp-3m-sde"), ("rf", "pingpong")])
def test_mask_holds_kept_latents_on_the_renoised_source_after_every_step(kind, sampler):
    states = []
    _run(kind, sampler, init_latents=INIT, noise_mask=HALF_MASK, callback=states.append)
    noise, kept = REFERENCE["noise"], HALF_MASK.expand_as(INIT) == 0
    assert [state["i"] for state in states] == list(range(6))
    for state in states:
        level = state["sigma"]
        renoised = INIT + noise * level if kind == "v" else INIT * (1 - level) + noise * level
        assert torch.equal(state["x"][kept], renoised[kept])


def test_mask_without_source_latents_is_rejected():
    with pytest.raises(InputError, match="init_latents"):
        sample_v(model_fn, REFERENCE["noise"], steps=3, noise_mask=HALF_MASK)


def test_mask_of_the_wrong_length_is_rejected():
    with pytest.raises(InputError, match="noise_mask"):
        sample_rf(model_fn, REFERENCE["noise"], steps=3, init_latents=INIT, noise_mask=torch.ones(2, 1, 15))


# ---- seeds, callbacks, names ---------------------------------------------------------------

@pytest.mark.parametrize("kind,sampler", ALL_SAMPLERS)
def test_same_seed_reproduces_the_same_latents(kind, sampler):
    assert torch.equal(_run(kind, sampler, seed=7), _run(kind, sampler, seed=7))


@pytest.mark.parametrize("kind,sampler", [("v", "dpmpp-2m-sde"), ("v", "dpmpp-3m-sde"), ("rf", "pingpong")])
def test_stochastic_samplers_depend_on_the_seed(kind, sampler):
    assert not torch.allclose(_run(kind, sampler, seed=1), _run(kind, sampler, seed=2))


@pytest.mark.parametrize("kind,sampler", [("v", "euler"), ("v", "dpmpp-2m"), ("rf", "euler"), ("rf", "dpmpp")])
def test_deterministic_samplers_ignore_the_seed(kind, sampler):
    assert torch.equal(_run(kind, sampler, seed=1), _run(kind, sampler, seed=2))


def test_callback_reports_every_step_and_can_interrupt():
    seen = []

    def stop_at_third(state):
        seen.append((state["i"], state["steps"]))
        if state["i"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run("v", "dpmpp-2m", callback=stop_at_third)
    assert seen == [(0, 6), (1, 6), (2, 6)]


def test_source_latents_of_batch_one_serve_the_whole_batch():
    repeated = _run("v", "dpmpp-2m", init_latents=INIT[:1].repeat(2, 1, 1), noise_mask=HALF_MASK)
    broadcast = _run("v", "dpmpp-2m", init_latents=INIT[:1], noise_mask=HALF_MASK[:1])
    assert torch.equal(broadcast, repeated)


def test_source_latents_of_another_length_are_rejected():
    with pytest.raises(InputError, match="init_latents"):
        sample_v(model_fn, REFERENCE["noise"], steps=3, init_latents=INIT[..., :8])


def test_sampling_builds_no_autograd_graph():
    weight = torch.tensor(0.5, requires_grad=True)
    out = sample_v(lambda x, t: model_fn(x, t) * weight, REFERENCE["noise"], steps=3)
    assert not out.requires_grad


def test_unknown_names_are_rejected_with_the_choices():
    with pytest.raises(InputError, match="dpmpp-3m-sde"):
        sample_v(model_fn, REFERENCE["noise"], steps=3, sampler="k-heun")
    with pytest.raises(InputError, match="polyexponential"):
        sample_v(model_fn, REFERENCE["noise"], steps=3, schedule="linear")
    with pytest.raises(InputError, match="pingpong"):
        sample_rf(model_fn, REFERENCE["noise"], steps=3, sampler="rk4")
