"""Benchmark worker: ComfyUI's own Stable Audio implementation (comfy.ldm.audio), loaded and run
through ComfyUI's model management and samplers, as its nodes do.

`/tmp/comfy-venv/bin/python comfyui.py --spec SPEC.json`, started by benchmarks/run.py with the
ComfyUI folder (spec["comfyui"]) as working directory. What each node of a ComfyUI workflow does:
- CheckpointLoaderSimple: comfy.sd.load_state_dict_guess_config on the benchmark checkpoint. ComfyUI
  detects "Stable Audio DiT" from the keys but not its depth; a reduced-depth checkpoint gets its
  depth passed to the detected config (a wrapper around comfy.model_detection.detect_unet_config).
- CLIPTextEncode: ComfyUI's T5 (comfy.text_encoders.t5 in sd1_clip's SDClipModel, configured as
  its Stable Audio T5 is) on the shared T5 weights, fed the ids of the shared tokenizer.json
  (ComfyUI's own T5 tokenizer files hold the real t5-base vocabulary, not the benchmark's).
- ConditioningZeroOut + ConditioningStableAudio: negative = zeroed text tokens, same timing.
- SamplerCustom with KSamplerSelect(dpmpp_3m_sde) and ComfyUI's exponential sigmas (the
  reference's polyexponential rho=1 schedule): comfy.sample.sample_custom.
- VAEDecodeAudio: vae.decode(...).movedim(-1, 1) (its loudness normalisation is left out so the
  output can be compared).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "harness"))

import torch  # noqa: E402

from protocol import serve  # noqa: E402


class _LoadWarnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        text = record.getMessage()
        if "missing" in text or "unexpected" in text:
            self.messages.append(text[:300])


def _import_comfy(folder: str, device: str):
    os.chdir(folder)
    sys.path.insert(0, folder)
    try:
        import torchvision  # noqa: F401
    except Exception:
        # PyPI's torchvision is a CUDA build on this CPU wheel; declare the two operator schemas
        # its import needs (as /work/shared/comfyui/launch_comfy.py does).
        for name in ("nms", "qnms"):
            try:
                torch.library.define(f"torchvision::{name}",
                                     "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"
    import comfy.model_management  # noqa: F401  (reads the args at import)


def _tokens(folder: str, text: str, max_length: int) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="<pad>", length=max_length)
    return tokenizer.encode(text).ids


def _text_encoder(folder: str, dtype):
    import comfy.sd1_clip
    import comfy.text_encoders.t5
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / "config.json").read_text())
    encoder = comfy.sd1_clip.SDClipModel(
        textmodel_json_config=config, dtype=dtype, model_class=comfy.text_encoders.t5.T5,
        special_tokens={"end": 1, "pad": 0}, enable_attention_masks=True, zero_out_masked=True,
        layer="last", max_length=99999999)
    weights = load_file(str(Path(folder) / "model.safetensors"))
    weights.setdefault("encoder.embed_tokens.weight", weights["shared.weight"])
    missing, unexpected = encoder.load_sd(weights)
    missing = [k for k in missing if "embed_tokens" not in k and "shared" not in k]
    if missing:
        raise RuntimeError(f"ComfyUI's T5 did not take weights for {missing[:5]}")
    return encoder


def build(spec: dict):
    import numpy as np
    from safetensors.torch import load_file

    _import_comfy(spec["comfyui"], spec["device"])
    import comfy.model_detection
    import comfy.sd

    dtype = getattr(torch, spec["dtype"])
    config = json.loads(Path(spec["config"]).read_text())
    state_dict = load_file(spec["checkpoint"])
    warnings = _LoadWarnings()
    logging.getLogger().addHandler(warnings)
    state = {}
    if spec["item"] == "vae":
        prefix = "pretransform.model."
        vae = comfy.sd.VAE(sd={k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
        state["vae"] = vae
        state["latents"] = torch.from_numpy(np.load(spec["latents"]))
        return state

    depth = config["model"]["diffusion"]["config"]["depth"]
    detect = comfy.model_detection.detect_unet_config

    def detect_with_depth(state_dict, key_prefix, metadata=None):
        found = detect(state_dict, key_prefix, metadata=metadata)
        if found and found.get("audio_model") == "dit1.0":
            found["depth"] = depth
        return found

    comfy.model_detection.detect_unet_config = detect_with_depth
    model, _, vae, _ = comfy.sd.load_state_dict_guess_config(
        state_dict, output_vae=True, output_clip=False, model_options={"dtype": dtype})
    if warnings.messages:
        raise RuntimeError("ComfyUI loaded the checkpoint with " + "; ".join(warnings.messages))
    state.update(model=model, vae=vae, text_encoder=_text_encoder(spec["t5"], dtype))
    max_length = config["model"]["conditioning"]["configs"][0]["config"]["max_length"]
    state["ids"] = _tokens(spec["t5"], spec["prompt"], max_length)
    if spec["item"] == "call":
        import comfy.model_management

        generator = torch.Generator().manual_seed(spec["seed"])
        state["x"] = torch.randn(1, 64, spec["frames"], generator=generator)
        comfy.model_management.load_models_gpu([model])
        positive, negative = _conditioning(state, spec)
        base = model.model
        device = comfy.model_management.get_torch_device()
        extras = [base.extra_conds(noise=state["x"], device=device, cross_attn=c[0][0], **c[0][1])
                  for c in (positive, negative)]
        state["call"] = {
            "context": torch.cat([e["c_crossattn"].cond for e in extras]).to(device, dtype),
            "global_embed": torch.cat([e["global_embed"].cond for e in extras]).to(device, dtype),
        }
    return state


def _conditioning(state: dict, spec: dict):
    """CLIPTextEncode, then ConditioningZeroOut for the negative, then ConditioningStableAudio."""
    tokens, pooled = state["text_encoder"].encode_token_weights([[(i, 1.0) for i in state["ids"]]])
    timing = {"seconds_start": 0.0, "seconds_total": spec["seconds_total"]}
    positive = [[tokens, {"pooled_output": pooled, **timing}]]
    negative = [[torch.zeros_like(tokens), {"pooled_output": pooled, **timing}]]
    return positive, negative


def run(state: dict, spec: dict, mode: str, warmup: bool):
    import comfy.model_management

    if spec["item"] == "vae":
        latents = state["latents"][..., :8] if warmup else state["latents"]
        with torch.no_grad():
            return state["vae"].decode(latents).movedim(-1, 1)
    model = state["model"]
    if spec["item"] == "call":
        device = comfy.model_management.get_torch_device()
        with torch.no_grad():
            x = state["x"].to(device)
            t = torch.full((2,), spec["t"], device=device)
            out = model.model.diffusion_model(torch.cat([x, x]), t, **state["call"])
            cond, uncond = out.float().chunk(2)
            return uncond + spec["cfg_scale"] * (cond - uncond)

    import comfy.k_diffusion.sampling
    import comfy.sample
    import comfy.samplers

    name = (spec["agreement_sampler"] if mode.startswith("agree") else spec["sampler"]).replace("-", "_")
    steps = 2 if warmup else spec["steps"]
    sigmas = comfy.k_diffusion.sampling.get_sigmas_exponential(steps, spec["sigma_min"], spec["sigma_max"])
    frames = spec["sample_size"] // 2048
    generator = torch.Generator().manual_seed(spec["seed"])
    noise = torch.randn(1, 64, frames, generator=generator)
    with torch.no_grad():
        positive, negative = _conditioning(state, spec)
        samples = comfy.sample.sample_custom(
            model, noise, spec["cfg_scale"], comfy.samplers.sampler_object(name), sigmas, positive,
            negative, torch.zeros(1, 64, frames), disable_pbar=True, seed=spec["seed"])
        return state["vae"].decode(samples).movedim(-1, 1)


if __name__ == "__main__":
    serve(build, run)
