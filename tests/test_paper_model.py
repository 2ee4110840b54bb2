"""The paper's system end to end: CLAP text (penultimate layer) + per-second timing tokens through
cross-attention into the adp_cfg_1d U-Net, on the 1/1024 DAC VAE, from `stable-audio-toolkit generate`."""

import json

import soundfile as sf
import torch

from stable_audio_core.factory import load_model
from stable_audio_core.text.conditioners import CLAPTextConditioner
from stable_audio_core.pipeline import generate
from stable_audio_host.cli import main as cli_main

from helpers import FIXTURES, perturbed_model, save_checkpoint

CLAP_FOLDER = FIXTURES / "clap" / "model"   # tiny random CLAP in transformers' layout (32 wide)
CLAP_TOKENS = 77                            # CLAP pads text to 77 tokens, as the paper uses it


def paper_kind_config() -> dict:
    """stable_audio_paper_unet.json's structure at toy width: DAC VAE 4-4-8-8 (ratio 1024), CLAP
    text features from layer -2, int seconds_start/seconds_total, U-Net with context time."""
    per_second = {"min_val": 0, "max_val": 64}
    return {
        "model_type": "diffusion_cond", "sample_size": 8 * 1024, "sample_rate": 44100, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "config": {
                "encoder": {"type": "dac", "config": {"in_channels": 2, "latent_dim": 16, "d_model": 2,
                                                      "strides": [4, 4, 8, 8]}},
                "decoder": {"type": "dac", "config": {"out_channels": 2, "latent_dim": 8, "channels": 32,
                                                      "rates": [8, 8, 4, 4]}},
                "bottleneck": {"type": "vae"}, "latent_dim": 8, "downsampling_ratio": 1024, "io_channels": 2}},
            "conditioning": {"cond_dim": 16, "configs": [
                {"id": "prompt", "type": "clap_text", "config": {
                    "clap_ckpt_path": str(CLAP_FOLDER), "use_text_features": True, "feature_layer_ix": -2,
                    "audio_model_type": "HTSAT-tiny", "enable_fusion": True,
                    "text_width": 32, "embedding_dim": 16}},
                {"id": "seconds_start", "type": "int", "config": dict(per_second)},
                {"id": "seconds_total", "type": "int", "config": dict(per_second)},
            ]},
            "diffusion": {"type": "adp_cfg_1d", "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "config": {"in_channels": 8, "context_embedding_features": 16,
                                     "context_embedding_max_length": CLAP_TOKENS + 2, "channels": 16,
                                     "resnet_groups": 4, "kernel_multiplier_downsample": 2,
                                     "multipliers": [1, 2, 2], "factors": [1, 2], "num_blocks": [1, 1],
                                     "attentions": [0, 1, 1], "attention_heads": 2, "attention_multiplier": 1,
                                     "use_nearest_upsample": False, "use_skip_scale": True,
                                     "use_context_time": True}},
            "io_channels": 8,
        },
    }


def write_model(tmp_path):
    config = paper_kind_config()
    model = perturbed_model(config)
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    save_checkpoint(model, tmp_path / "model.safetensors")
    return tmp_path / "model_config.json", tmp_path / "model.safetensors"


def test_conditioning_is_clap_penultimate_tokens_plus_one_token_per_timing_value(tmp_path):
    config_path, checkpoint = write_model(tmp_path)
    model = load_model(config_path, checkpoint, text_encoder=CLAP_FOLDER)
    clap = model.conditioner.conditioners["prompt"]
    assert isinstance(clap, CLAPTextConditioner)
    inputs = model.condition([{"prompt": "soft piano", "seconds_start": 0, "seconds_total": 3}])
    tokens = inputs.cross_attn_cond
    # the CLAP tokens (padded to the tokenizer's length) then seconds_start and seconds_total
    assert tokens.shape == (1, CLAP_TOKENS + 2, 16)   # 77 CLAP tokens + 2 timing tokens = 79
    timing = model.conditioner.conditioners["seconds_total"]
    total_token, _ = timing([3], "cpu")
    assert torch.equal(tokens[0, -1], total_token.reshape(-1))


def test_generate_command_runs_the_paper_config_with_a_clap_folder(tmp_path):
    config_path, checkpoint = write_model(tmp_path)
    out = tmp_path / "clip.wav"
    code = cli_main(["generate", "soft piano", "--seconds", "0.1", "--steps", "2", "--seed", "1",
                     "--config", str(config_path), "--checkpoint", str(checkpoint),
                     "--text-encoder", str(CLAP_FOLDER), "-o", str(out)])
    assert code == 0
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 4410)


def test_prompt_changes_the_result_and_the_seed_reproduces_it(tmp_path):
    config_path, checkpoint = write_model(tmp_path)
    model = load_model(config_path, checkpoint, text_encoder=CLAP_FOLDER)
    run = lambda prompt: generate(model, prompt, seconds_total=0.1, steps=2, seed=3, sampler="dpmpp-2m").audio
    first, again, other = run("soft piano"), run("soft piano"), run("loud drums")
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 0
