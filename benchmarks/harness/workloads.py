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
