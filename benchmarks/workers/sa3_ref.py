"""Benchmark worker: the Stable Audio 3 reference (stable-audio-3), run with its own python.

Run by benchmarks/run.py as `/tmp/sa3-ref/bin/python sa3_ref.py --spec SPEC.json`. Items:
e2e (its StableAudioModel.generate: T5Gemma, pingpong, SAME decode), call (one DiT call, no
guidance, an all-zero inpainting input as generate builds it), vae (one SAME decode with the
decoder's and the bottleneck's noise off, so the output is comparable).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "harness"), str(HERE.parents[1] / "tools")]

import torch  # noqa: E402

from make_sa3_parity_fixtures import deterministic_decode, reference_model  # noqa: E402
from protocol import serve  # noqa: E402


def build(spec: dict):
    from safetensors.torch import load_file
    from stable_audio_3.model import StableAudioModel


    config = json.loads(Path(spec["config"]).read_text())
    model, wrapper = reference_model(config)
    model.load_state_dict(load_file(spec["checkpoint"]), strict=True)
    state = {"model": model, "wrapper": wrapper if isinstance(wrapper, StableAudioModel) else None}
    if spec["item"] == "vae":
        import numpy as np
        state["latents"] = torch.from_numpy(np.load(spec["latents"]))
    if spec["item"] == "call":
        generator = torch.Generator().manual_seed(spec["seed"])
        frames = spec["frames"]
        state["x"] = torch.randn(1, config["model"]["io_channels"], frames, generator=generator)
        state["t"] = torch.tensor([spec["t"]])
        with torch.inference_mode():
            cond = model.conditioner([{"prompt": spec["prompt"], "seconds_total": spec["seconds_total"]}], "cpu")
            local = torch.zeros(1, 1 + config["model"]["io_channels"], frames)
            cond["inpaint_mask"], cond["inpaint_masked_input"] = [local[:, :1]], [local[:, 1:]]
            inputs = model.get_conditioning_inputs(cond)
        state["inputs"] = {k: inputs[k] for k in ("cross_attn_cond", "global_cond", "local_add_cond")}
    return state


def run(state: dict, spec: dict, mode: str, warmup: bool) -> torch.Tensor:
    model = state["model"]
    with torch.inference_mode():
        if spec["item"] == "vae":
            latents = state["latents"][..., :8] if warmup else state["latents"]
            return deterministic_decode(model.pretransform.model, latents)
        if spec["item"] == "call":
            return model.model(state["x"], state["t"], **state["inputs"])
        return state["wrapper"].generate(
            prompt=spec["prompt"], duration=spec["seconds_total"], steps=2 if warmup else spec["steps"],
            cfg_scale=spec["cfg_scale"], seed=spec["seed"], sampler_type=spec["sampler"])


if __name__ == "__main__":
    serve(build, run)
