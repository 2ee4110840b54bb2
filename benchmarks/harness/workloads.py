"""What every party computes: model configs, sizes, prompt and sampler settings of each work item.

Pure Python (json, math): the orchestrator imports it in our environment and the workers in the
peers' environments read the plans it writes. Two scales:

- "full" (GPU): Stable Audio Open 1.0 as published (DiT depth 24, t5-base with 12 layers), the
  paper's U-Net as published; 47 s at 100 steps (SAO) and 95 s at 100 steps (U-Net).
- "reduced" (CPU): the same widths with fewer layers (DiT depth 4, T5 2 layers, U-Net one
  residual block and one transformer layer per level); the VAEs stay full size. 10 s at 20 steps.

The paper's U-Net conditions on CLAP text features; no peer can run CLAP offline (laion_clap is
not installable in the reference venv), so both parties use the same small T5 as the SAO item,
with 77 tokens so the cross-attention length stays the paper's 77 + 2 timing tokens.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "stable_audio_core" / "configs"
SAMPLE_RATE = 44100

PROMPT = "warm analog synth pad with slow evolving chords and soft vinyl crackle 90 bpm ambient"
SEED = 1234
CFG_SCALE = 7.0
SAMPLER = "dpmpp-3m-sde"
# The reference's SDE samplers draw Brownian-tree noise (torchsde) that no other party can
# reproduce; outputs are compared on a second, untimed run with the deterministic DPM-Solver++(2M).
AGREEMENT_SAMPLER = "dpmpp-2m"
SIGMA_MIN, SIGMA_MAX = 0.3, 500.0
DIFFUSION_TIME = 0.6  # t of the single diffusion-model call (work item d)

REDUCED_DIT_DEPTH = 4
REDUCED_T5_LAYERS = 2

# A small T5 with t5-base's widths: stable-audio-tools sizes its text features by the name t5-base.
T5_CONFIG = {
    "model_type": "t5", "vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072,
    "num_layers": 12, "num_heads": 12, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu", "dense_act_fn": "relu", "is_gated_act": False,
    "pad_token_id": 0, "eos_token_id": 1,
    "decoder_start_token_id": 0, "is_encoder_decoder": False,
}


def t5_config(scale: str) -> dict:
    config = dict(T5_CONFIG)
    if scale == "reduced":
        config["num_layers"] = REDUCED_T5_LAYERS
    return config


def sao_config(scale: str) -> dict:
    """Stable Audio Open 1.0's model_config.json (DiT, T5 prompt, number timing, Oobleck VAE)."""
    raw = json.loads((CONFIGS / "stable_audio_open_1.0.json").read_text())
    if scale == "reduced":
        raw["model"]["diffusion"]["config"]["depth"] = REDUCED_DIT_DEPTH
    return raw


def unet_config(scale: str, vae: str = "dac") -> dict:
    """The paper's U-Net config (adp_cfg_1d, int timing) with the T5 prompt (see module doc).

    vae="dac" keeps the paper's VAE; "oobleck" swaps in SAO 1.0's (for trees without the dac type).
    """
    raw = json.loads((CONFIGS / "stable_audio_paper_unet.json").read_text())
    conditioners = raw["model"]["conditioning"]["configs"]
    conditioners[0] = {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 77}}
    unet = raw["model"]["diffusion"]["config"]
    if scale == "reduced":
        levels = len(unet["num_blocks"])
        unet["num_blocks"] = [1] * levels
        unet["attentions"] = [min(1, a) for a in unet["attentions"]]
    if vae == "oobleck":
        raw["model"]["pretransform"] = copy.deepcopy(sao_config(scale)["model"]["pretransform"])
    return raw


def downsampling_ratio(config: dict) -> int:
    return int(config["model"]["pretransform"]["config"]["downsampling_ratio"])


def latent_multiple(config: dict) -> int:
    """Latent frames per U-Net step of length (patch size x downsampling factors); 1 for a DiT."""
    diffusion = config["model"]["diffusion"]
    if diffusion["type"] != "adp_cfg_1d":
        return 1
    unet = diffusion["config"]
    return int(unet.get("patch_size", 1)) * math.prod(unet["factors"])


def window_samples(config: dict, seconds: float) -> int:
    """Audio samples of a window holding `seconds`, rounded up to a length the model accepts."""
    multiple = downsampling_ratio(config) * latent_multiple(config)
    return math.ceil(seconds * SAMPLE_RATE / multiple) * multiple


def latent_frames(config: dict, seconds: float) -> int:
    return window_samples(config, seconds) // downsampling_ratio(config)


def vae_latent_frames(seconds: float, ratio: int = 2048) -> int:
    """Latents of `seconds` of audio for the VAE item (what the existing VAE benchmark decodes)."""
    return math.ceil(seconds * SAMPLE_RATE / ratio)


def plan(device: str, quick: bool) -> dict:
    """Sizes of every work item for a device ("cpu"/"cuda") and mode."""
    gpu = device != "cpu"
    scale = "full" if gpu else "reduced"
    if quick:
        e2e = {"sao": {"seconds": 3.0, "steps": 4}, "unet": {"seconds": 3.0, "steps": 4}}
        vae_seconds = [3.0]
        call_frames = [64, 256]
    elif gpu:
        e2e = {"sao": {"seconds": 47.0, "steps": 100}, "unet": {"seconds": 95.0, "steps": 100}}
        vae_seconds = [10.0, 47.0, 95.0]
        call_frames = [256, 1024]
    else:
        e2e = {"sao": {"seconds": 10.0, "steps": 20}, "unet": {"seconds": 10.0, "steps": 20}}
        vae_seconds = [10.0, 47.0, 95.0]
        call_frames = [256, 1024]
    return {"scale": scale, "e2e": e2e, "vae_seconds": vae_seconds, "call_frames": call_frames}


# --- Stable Audio 3 (Small-shaped; files written by harness/sa3_files.py in the reference env) ---

SA3_STEPS = 8
SA3_SAMPLER = "pingpong"
SA3_CFG_SCALE = 1.0  # SA3 Small's default: no guidance, one DiT call per step
SA3_PROMPT_TOKENS = 256  # the T5Gemma conditioner's max_length; + 1 seconds_total token


def sa3_plan(device: str, quick: bool) -> dict:
    """SA3 sizes: end to end at 10 s and 60 s (quick: 10 s only), one DiT call, one SAME-S decode."""
    return {"e2e_seconds": [10.0] if quick else [10.0, 60.0], "call_seconds": [10.0] if quick else [10.0, 60.0],
            "vae_seconds": [10.0] if quick else [10.0, 60.0]}


def sa3_latent_frames(seconds: float, downsampling_ratio: int = 4096, align: int = 2) -> int:
    """The latent frames SA3 generates for a duration: (seconds + 6 s) of samples, rounded up to
    downsampling_ratio * align (stable-audio-3's generate)."""
    samples = int((seconds + 6.0) * SAMPLE_RATE)
    step = downsampling_ratio * align
    return -(-samples // step) * step // downsampling_ratio


def sa3_dit_matmul_flops(diffusion_config: dict, frames: int, context_tokens: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one SA3 DiT call at batch 1: every Linear and the
    attention products, counted from the config; elementwise work is left out."""
    d = diffusion_config["embed_dim"]
    parts = 5 if diffusion_config.get("attn_kwargs", {}).get("differential") else 3
    maps = 2 if parts == 5 else 1
    mult = diffusion_config.get("ff_kwargs", {}).get("mult", 4)
    glu = 2 if diffusion_config.get("ff_kwargs", {}).get("glu", True) else 1
    tokens = frames + diffusion_config.get("num_memory_tokens", 0)
    cond, local = diffusion_config["cond_token_dim"], diffusion_config.get("local_add_cond_dim", 0)
    io = diffusion_config["io_channels"]
    self_attn = tokens * d * parts * d + maps * 2 * tokens * tokens * d + tokens * d * d
    cross = (tokens * d * d * maps + context_tokens * d * d * (maps + 1)
             + maps * 2 * tokens * context_tokens * d + tokens * d * d)
    feed_forward = tokens * d * mult * d * glu + tokens * mult * d * d
    local_mlp = frames * local * d + frames * d * d if local else 0
    per_layer = self_attn + cross + feed_forward + local_mlp
    once = (2 * frames * io * d + context_tokens * (cond * d + d * d) + 2 * frames * io * io
            + d * 6 * d)
    return 2.0 * (diffusion_config["depth"] * per_layer + once)
