"""Benchmark worker: diffusers' StableAudioPipeline (its DiT, Oobleck VAE, projection model).

`/tmp/diffusers-ref/bin/python diffusers_peer.py --spec SPEC.json` (started by benchmarks/run.py).
Weights: the benchmark's stable-audio-tools checkpoint converted by harness/diffusers_keys.py;
the T5 encoder and tokenizer from the same local folder as every other party. The scheduler is
the one diffusers ships for Stable Audio (CosineDPMSolverMultistepScheduler: DPM-Solver++(2M)
SDE with a Brownian tree) with SAO 1.0's settings; diffusers has no dpmpp-3m-sde, so the e2e row
runs the same number of model calls with its own sampler and has no output agreement (see the
call and VAE rows for the deterministic parts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "harness"))

import torch  # noqa: E402

import diffusers_keys  # noqa: E402
from protocol import serve  # noqa: E402

RATIO = 2048


def _vae(state: dict, dtype, device):
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8],
                             channel_multiples=[1, 2, 4, 8, 16], decoder_channels=128,
                             decoder_input_channels=64, audio_channels=2, sampling_rate=44100)
    vae.load_state_dict(diffusers_keys.vae(state), strict=True)
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def build(spec: dict):
    import numpy as np
    from safetensors.torch import load_file

    device, dtype = spec["device"], getattr(torch, spec["dtype"])
    state_dict = load_file(spec["checkpoint"])
    state = {}
    if spec["item"] == "vae":
        state["vae"] = _vae(state_dict, dtype, device)
        state["latents"] = torch.from_numpy(np.load(spec["latents"])).to(device, dtype)
        return state

    from diffusers import CosineDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import PreTrainedTokenizerFast, T5EncoderModel

    config = json.loads(Path(spec["config"]).read_text())
    dit = config["model"]["diffusion"]["config"]
    head_dim = dit["embed_dim"] // dit["num_heads"]
    frames = spec["frames"] if spec["item"] == "call" else spec["sample_size"] // RATIO
    transformer = StableAudioDiTModel(
        sample_size=frames, in_channels=dit["io_channels"], num_layers=dit["depth"],
        attention_head_dim=head_dim, num_attention_heads=dit["num_heads"],
        num_key_value_attention_heads=dit["cond_token_dim"] // head_dim, out_channels=dit["io_channels"],
        cross_attention_dim=dit["cond_token_dim"], time_proj_dim=256,
        global_states_input_dim=dit["global_cond_dim"], cross_attention_input_dim=dit["cond_token_dim"])
    transformer.load_state_dict(diffusers_keys.dit(state_dict), strict=True)
    projection = StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0, max_value=512)
    projection.load_state_dict(diffusers_keys.projection(state_dict), strict=True)
    max_length = config["model"]["conditioning"]["configs"][0]["config"]["max_length"]
    tokenizer = PreTrainedTokenizerFast.from_pretrained(spec["t5"], model_max_length=max_length)
    text_encoder = T5EncoderModel.from_pretrained(spec["t5"])
    scheduler = CosineDPMSolverMultistepScheduler(
        sigma_min=spec["sigma_min"], sigma_max=spec["sigma_max"], sigma_data=1.0,
        sigma_schedule="exponential", solver_order=2, prediction_type="v_prediction",
        solver_type="midpoint", final_sigmas_type="zero")
    pipe = StableAudioPipeline(vae=_vae(state_dict, dtype, device), text_encoder=text_encoder,
                               projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer, scheduler=scheduler)
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    state["pipe"] = pipe
    if spec["item"] == "call":
        generator = torch.Generator().manual_seed(spec["seed"])
        state["x"] = torch.randn(1, dit["io_channels"], frames, generator=generator).to(device, dtype)
        state["t"] = torch.tensor([spec["t"]], device=device, dtype=dtype)
        state.update(_conditioning(pipe, spec, frames, device))
    return state


@torch.no_grad()
def _conditioning(pipe, spec: dict, frames: int, device) -> dict:
    """What StableAudioPipeline.__call__ builds before its loop, for a guidance call."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    prompt_embeds = pipe.encode_prompt(spec["prompt"], device, True)
    start, end = pipe.encode_duration(0.0, spec["seconds_total"], device, False, 1)
    tokens = torch.cat([prompt_embeds, start, end], dim=1)
    tokens = torch.cat([torch.zeros_like(tokens), tokens], dim=0)  # unconditional half first
    global_states = torch.cat([start, end], dim=2)
    global_states = torch.cat([global_states, global_states], dim=0)
    rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, frames + global_states.shape[1],
                                     use_real=True, repeat_interleave_real=False)
    return {"tokens": tokens, "global_states": global_states, "rotary": rotary}


def run(state: dict, spec: dict, mode: str, warmup: bool):
    if spec["item"] == "vae":
        latents = state["latents"][..., :8] if warmup else state["latents"]
        with torch.no_grad():
            return state["vae"].decode(latents).sample
    pipe = state["pipe"]
    if spec["item"] == "call":
        with torch.no_grad():
            x = state["x"]
            out = pipe.transformer(torch.cat([x, x]), state["t"], encoder_hidden_states=state["tokens"],
                                   global_hidden_states=state["global_states"],
                                   rotary_embedding=state["rotary"], return_dict=False)[0]
            uncond, cond = out.chunk(2)
            return uncond + spec["cfg_scale"] * (cond - uncond)
    if mode.startswith("agree"):
        return "n/a: diffusers' Stable Audio scheduler is an SDE (Brownian tree); see the call and VAE rows"
    generator = torch.Generator().manual_seed(spec["seed"])
    noise = torch.randn(1, 64, spec["sample_size"] // RATIO, generator=generator)
    return pipe(spec["prompt"], audio_end_in_s=spec["seconds_total"], guidance_scale=spec["cfg_scale"],
                num_inference_steps=2 if warmup else spec["steps"], latents=noise.to(pipe.device),
                generator=generator, output_type="pt").audios


if __name__ == "__main__":
    serve(build, run)
