"""Benchmark worker: stable_audio_core through its public API (load_model, generate, decode).

Run by benchmarks/run.py as `python ours.py --spec SPEC.json` in the project's environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE.parent / "harness"), str(REPO)]

import torch  # noqa: E402

from protocol import serve  # noqa: E402

PROMPT_TOKENS = 128  # the SAO prompt conditioner's max_length: the prompt's share of the tokens


def _metadata(spec: dict) -> list[dict]:
    if spec["family"] == "sa3":  # SA3 conditions on the prompt and seconds_total only
        return [{"prompt": spec["prompt"], "seconds_total": spec["seconds_total"]}]
    return [{"prompt": spec["prompt"], "seconds_start": 0, "seconds_total": spec["seconds_total"]}]


def build(spec: dict):
    from stable_audio_core.factory import load_model

    device, dtype = spec["device"], spec["dtype"]
    state = {}
    options = {"compile": True} if spec.get("compile") else {}
    if spec.get("matmul_dtype"):
        options["matmul_dtype"] = spec["matmul_dtype"]
    if spec.get("precision"):
        options["precision"] = spec["precision"]
    if spec["item"] == "vae":
        import numpy as np
        if spec["family"] == "sa3":  # the SAME autoencoder of the whole SA3 checkpoint
            state["vae"] = load_model(spec["config"], spec["checkpoint"], device=device, dtype=dtype,
                                      **options).autoencoder
        else:
            state["vae"] = _load_vae(spec)
        state["latents"] = torch.from_numpy(np.load(spec["latents"])).to(device)
        return state
    text_encoder = spec["t5gemma"] if spec["family"] == "sa3" else spec["t5"]
    model = load_model(spec["config"], spec["checkpoint"], text_encoder=text_encoder, device=device,
                       dtype=dtype, **options)
    state["model"] = model
    if spec["item"] == "call":
        generator = torch.Generator().manual_seed(spec["seed"])
        state["x"] = torch.randn(1, model.io_channels, spec["frames"], generator=generator).to(device)
        state["t"] = torch.tensor([spec["t"]], device=device)
        with torch.inference_mode():
            state["inputs"] = model.condition(_metadata(spec))
    return state


def _load_vae(spec: dict):
    import json

    from stable_audio_core.acceleration import choose_precision, prepare_for_inference, use_bfloat16_matmuls
    from stable_audio_core.checkpoint import load_state_dict_strict, read_state_dict
    from stable_audio_core.factory import parse_dtype
    from stable_audio_core.models.autoencoder import build_autoencoder

    config = json.loads(Path(spec["config"]).read_text())
    vae = build_autoencoder(config["model"]["pretransform"], config["sample_rate"])
    prefix = "pretransform.model."
    weights = {k[len(prefix):]: v for k, v in read_state_dict(spec["checkpoint"]).items() if k.startswith(prefix)}
    load_state_dict_strict(vae, weights, spec["checkpoint"])
    vae.to(device=spec["device"], dtype=parse_dtype(spec["dtype"]))
    prepare_for_inference(vae)
    # What load_model(matmul_dtype=... / precision=...) does to the whole model (the VAE has no
    # linears for the int8 path).
    if spec.get("matmul_dtype") or choose_precision(spec.get("precision", "fp32"), spec["device"]) == "bf16":
        use_bfloat16_matmuls(vae, parse_dtype(spec.get("matmul_dtype") or "bfloat16"))
    return vae


def _swap_text_encoder(model, dtype: torch.dtype, folder: str) -> list:
    """Give every T5 conditioner an encoder in `dtype`; returns the previous ones."""
    from stable_audio_core.text.conditioners import T5Conditioner
    from stable_audio_core.text.t5_encoder import T5TextEncoder

    previous = []
    for conditioner in model.conditioner.conditioners.values():
        if isinstance(conditioner, T5Conditioner):
            previous.append((conditioner, conditioner.text_encoder))
            encoder = T5TextEncoder.from_folder(folder, conditioner.max_length, dtype=dtype, device=model.device)
            conditioner.attach_text_encoder(encoder)
    return previous


def _comfy_style_negative(model, inputs):
    """ComfyUI's unconditional side: the prompt's tokens zeroed, the timing tokens kept."""
    from stable_audio_core.models.stable_audio import ModelInputs

    tokens = inputs.cross_attn_cond.clone()
    tokens[:, :PROMPT_TOKENS] = 0
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return ModelInputs(**{**inputs.__dict__, "cross_attn_cond": tokens, "cross_attn_mask": mask})


def run_sa3(state: dict, spec: dict, warmup: bool) -> torch.Tensor:
    """SA3 items as the sa3ref worker runs them: seeded generate (the same work in timed and
    agreement runs), one unguided DiT call, one SAME decode with its noise off."""
    from stable_audio_core.pipeline import generate

    with torch.inference_mode():
        if spec["item"] == "vae":
            latents = state["latents"][..., :8] if warmup else state["latents"]
            return state["vae"].decode(latents, noise=False)
        model = state["model"]
        if spec["item"] == "call":
            return model.model_fn(state["inputs"], 1.0)(state["x"], state["t"])
    result = generate(model, spec["prompt"], duration=spec["seconds_total"], steps=2 if warmup else spec["steps"],
                      sampler=spec["sampler"], cfg_scale=spec["cfg_scale"], seed=spec["seed"])
    return result.audio


def run(state: dict, spec: dict, mode: str, warmup: bool) -> torch.Tensor:
    from stable_audio_core.pipeline import generate

    if spec["family"] == "sa3":
        return run_sa3(state, spec, warmup)
    peer = mode.split("-", 1)[1] if mode.startswith("agree-") else None
    if spec["item"] == "vae":
        latents = state["latents"][..., :8] if warmup else state["latents"]
        with torch.inference_mode():
            return state["vae"].decode(latents)
    model = state["model"]
    previous = []
    if peer == "sat" and spec.get("agree_text_encoder_dtype") == "float16":
        # stable-audio-tools runs T5 in float16; match it for the comparison only.
        previous = _swap_text_encoder(model, torch.float16, spec["t5"])
    try:
        if spec["item"] == "call":
            with torch.inference_mode():
                inputs = model.condition(_metadata(spec)) if peer == "sat" else state["inputs"]
                negative = _comfy_style_negative(model, inputs) if peer == "comfyui" else None
                return model.model_fn(inputs, spec["cfg_scale"], negative)(state["x"], state["t"])
        # "agree-ours" (our other dtype) compares the timed work itself: our SDE noise is seeded.
        sampler = spec["agreement_sampler"] if peer not in (None, "ours") else spec["sampler"]
        settings = dict(steps=2 if warmup else spec["steps"], cfg_scale=spec["cfg_scale"], sampler=sampler,
                        sigma_min=spec["sigma_min"], sigma_max=spec["sigma_max"], seed=spec["seed"],
                        sample_size=spec["sample_size"], trim=False, seconds_total=spec["seconds_total"])
        if peer == "comfyui":
            with torch.inference_mode():
                inputs = model.condition(_metadata(spec))
            result = generate(model, inputs=inputs, negative_inputs=_comfy_style_negative(model, inputs),
                              **settings)
        else:
            result = generate(model, spec["prompt"], seconds_start=0, **settings)
        return result.audio
    finally:
        for conditioner, encoder in previous:
            conditioner.attach_text_encoder(encoder)


if __name__ == "__main__":
    from stable_audio_core.acceleration import request_huge_pages

    request_huge_pages()  # as the CLI does, before the first large tensor
    serve(build, run)
