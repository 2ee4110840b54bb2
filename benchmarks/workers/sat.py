"""Benchmark worker: stable-audio-tools 0.0.19, run the way its own scripts run it.

`HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python sat.py --spec SPEC.json` (started by benchmarks/run.py).
Its T5 conditioner calls transformers' `AutoTokenizer.from_pretrained("t5-base")` and
`T5EncoderModel.from_pretrained("t5-base")`; both are pointed at the benchmark's local T5 folder
(same weights and tokenizer as every other party). Everything else is the package's own code:
create_model_from_config, generate_diffusion_cond, the model's CFG call, pretransform.decode.
If transformers is not importable in the reference venv, spec["extra_sys_path"] (a site-packages
folder holding transformers for the same Python and torch) is appended to sys.path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "harness"))

import torch  # noqa: E402

from protocol import serve  # noqa: E402


def _point_transformers_at(folder: str, extra_path: str | None) -> None:
    try:
        import transformers
    except ImportError:
        if not extra_path:
            raise
        sys.path.append(extra_path)
        import transformers

    def tokenizer(name, *args, **kwargs):
        return transformers.PreTrainedTokenizerFast.from_pretrained(folder)

    original = transformers.T5EncoderModel.from_pretrained

    def encoder(name, *args, **kwargs):
        return original(folder, *args, **kwargs)

    transformers.AutoTokenizer.from_pretrained = tokenizer
    transformers.T5EncoderModel.from_pretrained = encoder


def _metadata(spec: dict) -> list[dict]:
    return [{"prompt": spec["prompt"], "seconds_start": 0, "seconds_total": spec["seconds_total"]}]


def _load(module: torch.nn.Module, checkpoint: str, prefix: str = "") -> None:
    from safetensors.torch import load_file

    state = {k[len(prefix):]: v for k, v in load_file(checkpoint).items() if k.startswith(prefix)}
    module.load_state_dict(state, strict=True)


def build(spec: dict):
    config = json.loads(Path(spec["config"]).read_text())
    device, dtype = spec["device"], getattr(torch, spec["dtype"])
    state = {}
    if spec["item"] == "vae":
        import numpy as np
        from stable_audio_tools.models.factory import create_pretransform_from_config

        pretransform = create_pretransform_from_config(config["model"]["pretransform"], config["sample_rate"])
        _load(pretransform.model, spec["checkpoint"], "pretransform.model.")
        state["vae"] = pretransform.to(device=device, dtype=dtype).eval().requires_grad_(False)
        state["latents"] = torch.from_numpy(np.load(spec["latents"])).to(device, dtype)
        return state

    _point_transformers_at(spec["t5"], spec.get("extra_sys_path"))
    from stable_audio_tools.models.factory import create_model_from_config

    model = create_model_from_config(config)
    _load(model, spec["checkpoint"])
    state["model"] = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if spec["item"] == "call":
        generator = torch.Generator().manual_seed(spec["seed"])
        state["x"] = torch.randn(1, model.io_channels, spec["frames"], generator=generator).to(device, dtype)
        state["t"] = torch.tensor([spec["t"]], device=device, dtype=dtype)
        with torch.no_grad():
            conditioning = model.conditioner(_metadata(spec), device)
            inputs = model.get_conditioning_inputs(conditioning)
        state["inputs"] = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v)
                           for k, v in inputs.items()}
    return state


def run(state: dict, spec: dict, mode: str, warmup: bool) -> torch.Tensor:
    if spec["item"] == "vae":
        latents = state["latents"][..., :8] if warmup else state["latents"]
        with torch.no_grad():
            return state["vae"].decode(latents)
    model = state["model"]
    if spec["item"] == "call":
        with torch.no_grad():  # as its samplers call it
            return model.model(state["x"], state["t"], cfg_scale=spec["cfg_scale"], batch_cfg=True,
                               rescale_cfg=True, **state["inputs"])
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    sampler = spec["agreement_sampler"] if mode.startswith("agree") else spec["sampler"]
    return generate_diffusion_cond(
        model, steps=2 if warmup else spec["steps"], cfg_scale=spec["cfg_scale"],
        conditioning=_metadata(spec), sample_size=spec["sample_size"], seed=spec["seed"],
        device=spec["device"], sampler_type=sampler, sigma_min=spec["sigma_min"],
        sigma_max=spec["sigma_max"], batch_size=1,
    )


if __name__ == "__main__":
    serve(build, run)
