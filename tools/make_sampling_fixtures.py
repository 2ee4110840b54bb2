"""Write tests/fixtures/sampling/: reference schedules and sampler outputs for tests/test_sampling.py.

Runs in the reference environment (k-diffusion 0.1.1 + stable-audio-tools 0.0.19):

    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_sampling_fixtures.py

The model is analytic, v = tanh(a * x + b * t) with fixed tensors a and b, so the test can rebuild
it. Stochastic samplers get their noise from a stored list, consumed in call order: k-diffusion's
SDE samplers through their noise sampler (inside sample_k by replacing BrownianTreeNoiseSampler),
the ping-pong sampler by replacing torch.randn_like for the duration of the call.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

import k_diffusion as K
import stable_audio_tools.inference.sampling as sat_sampling

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sampling"
SHAPE = (2, 4, 16)
REPLAY_LENGTH = 12  # more noise tensors than any case draws

K_SAMPLERS = {
    "euler": K.sampling.sample_euler,
    "dpmpp-2m": K.sampling.sample_dpmpp_2m,
    "dpmpp-2m-sde": K.sampling.sample_dpmpp_2m_sde,
    "dpmpp-3m-sde": K.sampling.sample_dpmpp_3m_sde,
}
SDE = {"dpmpp-2m-sde", "dpmpp-3m-sde"}


class Replay:
    """Noise sampler returning the stored tensors in order; counts the draws."""

    def __init__(self, noises: torch.Tensor):
        self.noises, self.calls = noises, 0

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        sample = self.noises[self.calls].clone()
        self.calls += 1
        return sample


@contextmanager
def replaced(owner, name: str, value):
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def main() -> None:
    torch.manual_seed(20240611)
    a = 0.5 + torch.rand(1, *SHAPE[1:])
    b = 2 * torch.rand(1, *SHAPE[1:]) - 1
    noise = torch.randn(SHAPE)
    init = 0.7 * torch.randn(SHAPE)
    replay_noise = torch.randn(REPLAY_LENGTH, *SHAPE)

    def model_fn(x, t, **unused):
        return torch.tanh(a * x + b * t[:, None, None])

    tensors = {"a": a, "b": b, "noise": noise, "init": init, "replay_noise": replay_noise}
    meta = {"model": "v = tanh(a * x + b * t[:, None, None])", "schedules": [], "rf_schedules": [],
            "cases": []}

    # Schedules.
    schedule_cases = [
        ("polyexponential", K.sampling.get_sigmas_polyexponential, dict(steps=8, sigma_min=0.01, sigma_max=100, rho=1.0)),
        ("polyexponential", K.sampling.get_sigmas_polyexponential, dict(steps=100, sigma_min=0.01, sigma_max=100, rho=1.0)),
        ("polyexponential", K.sampling.get_sigmas_polyexponential, dict(steps=7, sigma_min=0.03, sigma_max=0.5, rho=2.0)),
        ("polyexponential", K.sampling.get_sigmas_polyexponential, dict(steps=1, sigma_min=0.01, sigma_max=100, rho=1.0)),
        ("karras", K.sampling.get_sigmas_karras, dict(steps=8, sigma_min=0.01, sigma_max=100, rho=7.0)),
        ("karras", K.sampling.get_sigmas_karras, dict(steps=25, sigma_min=0.3, sigma_max=80, rho=1.0)),
        ("exponential", K.sampling.get_sigmas_exponential, dict(steps=8, sigma_min=0.01, sigma_max=100)),
        ("exponential", K.sampling.get_sigmas_exponential, dict(steps=50, sigma_min=0.002, sigma_max=1.0)),
    ]
    for index, (name, reference, args) in enumerate(schedule_cases):
        extra = {"rho": args["rho"]} if "rho" in args else {}
        key = f"schedule/{index}"
        tensors[key] = reference(args["steps"], args["sigma_min"], args["sigma_max"], **extra)
        meta["schedules"].append({"key": key, "name": name, **args})

    # sample_rf's time grid, captured from the sampler it hands the grid to.
    for index, (steps, t_max) in enumerate([(8, 1.0), (100, 1.0), (8, 0.6), (5, 1.5), (1, 1.0), (10, 0.05)]):
        captured = {}

        def capture(model, x, sigmas=None, **kwargs):
            captured["t"] = sigmas.clone()
            return x

        with replaced(sat_sampling, "sample_discrete_euler", capture):
            sat_sampling.sample_rf(model_fn, noise, steps=steps, sampler_type="euler", sigma_max=t_max, device="cpu")
        key = f"rf_schedule/{index}"
        tensors[key] = captured["t"]
        meta["rf_schedules"].append({"key": key, "steps": steps, "t_max": t_max})

    def add_case(name: str, output: torch.Tensor, noise_calls: int, **spec):
        tensors[f"out/{name}"] = output
        meta["cases"].append({"name": name, "noise_calls": noise_calls, **spec})

    # k-diffusion samplers called directly on a schedule (every v sampler, two schedules).
    denoiser = K.external.VDenoiser(model_fn)
    for schedule_name, sigmas in [
        ("polyexponential", K.sampling.get_sigmas_polyexponential(10, 0.01, 100, 1.0)),
        ("karras", K.sampling.get_sigmas_karras(9, 0.05, 20, 7.0)),
    ]:
        tensors[f"sigmas/{schedule_name}"] = sigmas
        for sampler_name, sampler in K_SAMPLERS.items():
            replay = Replay(replay_noise)
            extra = {"noise_sampler": replay} if sampler_name in SDE else {}
            output = sampler(denoiser, noise * sigmas[0], sigmas, disable=True, **extra)
            add_case(f"direct/{schedule_name}/{sampler_name}", output, replay.calls, kind="direct_v",
                     sampler=sampler_name, sigmas=f"sigmas/{schedule_name}")

    # stable-audio-tools sample_k end to end (it has no plain Euler; that one is built from the
    # same pieces sample_k uses: polyexponential sigmas and noise * sigmas[0]).
    for sampler_name in K_SAMPLERS:
        for init_latents, sigma_max in [(None, 100.0), (init, 0.5)]:
            spec = dict(kind="v", sampler=sampler_name, steps=10, sigma_min=0.01, sigma_max=sigma_max,
                        rho=1.0, init=init_latents is not None)
            replay = Replay(replay_noise)
            with replaced(K.sampling, "BrownianTreeNoiseSampler", lambda *args, **kwargs: replay):
                if sampler_name == "euler":
                    sigmas = K.sampling.get_sigmas_polyexponential(10, 0.01, sigma_max, 1.0)
                    start = noise * sigmas[0] + (0 if init_latents is None else init_latents)
                    output = K.sampling.sample_euler(denoiser, start, sigmas, disable=True)
                else:
                    output = sat_sampling.sample_k(model_fn, noise, init_latents, steps=10, sampler_type=sampler_name,
                                                   sigma_min=0.01, sigma_max=sigma_max, rho=1.0, device="cpu")
            add_case(f"sample_k/{sampler_name}/{'init' if spec['init'] else 'noise'}", output, replay.calls, **spec)

    # stable-audio-tools sample_rf end to end.
    for sampler_name in ["euler", "dpmpp", "pingpong"]:
        for init_latents, sigma_max in [(None, 1.0), (init, 0.7)]:
            replay = Replay(replay_noise)
            with replaced(torch, "randn_like", replay):
                output = sat_sampling.sample_rf(model_fn, noise, init_data=init_latents, steps=10,
                                                sampler_type=sampler_name, sigma_max=sigma_max, device="cpu")
            add_case(f"sample_rf/{sampler_name}/{'init' if init_latents is not None else 'noise'}", output,
                     replay.calls, kind="rf", sampler=sampler_name, steps=10, sigma_max=sigma_max,
                     init=init_latents is not None)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(OUT_DIR / "reference.safetensors"))
    (OUT_DIR / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = sum(path.stat().st_size for path in OUT_DIR.iterdir())
    print(f"wrote {len(tensors)} tensors, {len(meta['cases'])} sampler cases, {size} bytes to {OUT_DIR}")


if __name__ == "__main__":
    main()
