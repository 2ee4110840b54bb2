"""Write reference parity fixtures with stable-audio-tools (dev tool; never imported at run time).

Run in the reference environment (../shared/reference-env/setup.sh):
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_parity_fixtures.py --out tests/fixtures/parity
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_parity_fixtures.py --out /tmp/fx \
        --shape sao-small --seed 7 --embed-dim 128 --depth 3 --sampler euler --name custom
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_parity_fixtures.py --out /tmp/fx \
        --shape paper-unet --seed 4 --latent-frames 48 --unet-options '{"patch_size": 2}' --name u

Shapes: 'sao-1.0' and 'sao-small' (DiT), 'paper-unet' (Stable Audio 1.0's adp_cfg_1d U-Net with
`int` per-second timing embeddings; --embed-dim is its base width, --depth its blocks per level,
--heads its attention heads, --unet-options JSON merged into its config). --vae picks the
pretransform from VAE_TYPES ('oobleck', or 'dac' = Stable Audio 1.0's 1/1024 VAE, the default for
paper-unet; --vae-channels is its base width), so switching the VAE is a change of that name.

Each fixture NAME is three files:
  NAME.json               {model_config, conditioning, [negative_conditioning], sampler, seed}
  NAME.weights.safetensors the reference model's state dict as it saves it (every parameter
                          perturbed away from its init so zero-initialised paths are exercised)
  NAME.io.safetensors     audio, enc_mean, dec_of_mean, cond.<id>, inputs.<name>, x, t,
                          model_out_cfg1, model_out_cfg7, gen_initial_noise, gen_latents, gen_audio
The prompt is a `number` conditioner (T5 cannot be built offline in the reference); T5 is checked
separately against transformers (tests/test_t5.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def vae_config(channels: int, latent_dim: int) -> dict:
    layers = {"channels": channels, "c_mults": [1, 2, 2], "strides": [2, 2, 4], "use_snake": True}
    return {
        "type": "autoencoder",
        "config": {
            "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": latent_dim * 2, **layers}},
            "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": latent_dim,
                                                      "final_tanh": False, **layers}},
            "bottleneck": {"type": "vae"},
            "latent_dim": latent_dim, "downsampling_ratio": 16, "io_channels": 2,
        },
    }


def dac_vae_config(channels: int, latent_dim: int) -> dict:
    """Stable Audio 1.0's VAE (type "dac": strides 4-4-8-8, rates 8-8-4-4, ratio 1024, VAE
    bottleneck), scaled down: the encoder widens from `channels` to 16 x channels, the decoder
    narrows from 16 x channels back to `channels`."""
    return {
        "type": "autoencoder",
        "config": {
            "encoder": {"type": "dac", "config": {"in_channels": 2, "latent_dim": latent_dim * 2,
                                                  "d_model": channels, "strides": [4, 4, 8, 8]}},
            "decoder": {"type": "dac", "config": {"out_channels": 2, "latent_dim": latent_dim,
                                                  "channels": 16 * channels, "rates": [8, 8, 4, 4]}},
            "bottleneck": {"type": "vae"},
            "latent_dim": latent_dim, "downsampling_ratio": 1024, "io_channels": 2,
        },
    }


# VAE type -> builder of its (small) pretransform config from (channels, latent_dim).
VAE_TYPES = {"oobleck": vae_config, "dac": dac_vae_config}
# The VAE each shape uses unless --vae says otherwise: the paper's U-Net sits on the DAC VAE.
DEFAULT_VAE = {"sao-1.0": "oobleck", "sao-small": "oobleck", "paper-unet": "dac"}

# The paper U-Net's int timing tables are cut from 512 to 256 seconds to keep a fixture under 1 MB.
PAPER_UNET_MAX_SECONDS = 256


def paper_unet_config(channels: int, blocks: int, heads: int, cond_dim: int, latent_dim: int,
                      options: dict | None = None) -> dict:
    """Stable Audio 1.0's adp_cfg_1d structure, scaled down: a factor-1 first downsampling with an
    extra residual block, a level that widens (like 1024 -> 1280), self- and cross-attention in one
    level and in the bottleneck, FiLM time conditioning."""
    config = {"in_channels": latent_dim, "context_embedding_features": cond_dim,
              "context_embedding_max_length": 5, "channels": channels, "resnet_groups": 4,
              "kernel_multiplier_downsample": 2, "multipliers": [1, 2, 2, 2], "factors": [1, 2, 2],
              "num_blocks": [blocks + 1] + [blocks] * 2, "attentions": [0, 1, 0, 1],
              "attention_heads": heads, "attention_multiplier": 1, "context_features_multiplier": 1,
              "use_nearest_upsample": False, "use_skip_scale": True, "use_context_time": True}
    config.update(options or {})
    return config


def model_config(shape: str, embed_dim: int, depth: int, heads: int, cond_dim: int,
                 latent_dim: int, vae_channels: int, latent_frames: int, vae: str = "oobleck",
                 unet_options: dict | None = None) -> dict:
    """A small config with the structure of SAO 1.0 ('sao-1.0'), SAO Small ('sao-small') or the
    Stable Audio 1.0 paper's U-Net ('paper-unet')."""
    number = lambda cid, hi: {"id": cid, "type": "number", "config": {"min_val": 0, "max_val": hi}}
    per_second = lambda cid: {"id": cid, "type": "int",
                              "config": {"min_val": 0, "max_val": PAPER_UNET_MAX_SECONDS}}
    if shape == "paper-unet":
        conditioners = [number("prompt", 10), per_second("seconds_start"), per_second("seconds_total")]
        diffusion = {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                     "type": "adp_cfg_1d",
                     "config": paper_unet_config(embed_dim, depth, heads, cond_dim, latent_dim, unet_options)}
    elif shape == "sao-1.0":
        conditioners = [number("prompt", 10), number("seconds_start", 512), number("seconds_total", 512)]
        diffusion = {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                     "global_cond_ids": ["seconds_start", "seconds_total"], "type": "dit",
                     "config": {"io_channels": latent_dim, "embed_dim": embed_dim, "depth": depth,
                                "num_heads": heads, "cond_token_dim": cond_dim,
                                "global_cond_dim": 2 * cond_dim, "project_cond_tokens": False,
                                "transformer_type": "continuous_transformer"}}
    elif shape == "sao-small":
        conditioners = [number("prompt", 10), number("seconds_total", 256)]
        diffusion = {"cross_attention_cond_ids": ["prompt", "seconds_total"],
                     "global_cond_ids": ["seconds_total"], "diffusion_objective": "rf_denoiser",
                     "type": "dit",
                     "config": {"io_channels": latent_dim, "embed_dim": embed_dim, "depth": depth,
                                "num_heads": heads, "cond_token_dim": cond_dim,
                                "global_cond_dim": cond_dim, "transformer_type": "continuous_transformer",
                                "attn_kwargs": {"qk_norm": "ln"}}}
    else:
        raise SystemExit(f"unknown shape {shape}")
    pretransform = VAE_TYPES[vae](vae_channels, latent_dim)
    ratio = pretransform["config"]["downsampling_ratio"]
    return {
        "model_type": "diffusion_cond", "sample_size": latent_frames * ratio, "sample_rate": 44100,
        "audio_channels": 2,
        "model": {"pretransform": pretransform,
                  "conditioning": {"configs": conditioners, "cond_dim": cond_dim},
                  "diffusion": diffusion, "io_channels": latent_dim},
    }


def conditioning_for(shape: str, batch: int, negative: bool = False) -> list[dict]:
    items = []
    for i in range(batch):
        value = 1.5 + 3.0 * i + (4.0 if negative else 0.0)
        item = {"prompt": value, "seconds_total": 20.0 + 7 * i}
        if shape in ("sao-1.0", "paper-unet"):
            item["seconds_start"] = 3.0 * i
        if shape == "paper-unet":  # int conditioners index a table: whole seconds
            item["seconds_start"], item["seconds_total"] = 3 * i, 20 + 7 * i
        items.append(item)
    return items


def perturb_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def make_fixture(out: Path, name: str, shape: str, seed: int, embed_dim: int, depth: int,
                 heads: int, cond_dim: int, latent_dim: int, vae_channels: int, latent_frames: int,
                 batch: int, sampler: str, steps: int, cfg_scale: float, with_negative: bool,
                 vae: str = "oobleck", unet_options: dict | None = None) -> None:
    from safetensors.torch import save_file
    from stable_audio_tools.inference.generation import generate_diffusion_cond
    from stable_audio_tools.models.factory import create_model_from_config

    config = model_config(shape, embed_dim, depth, heads, cond_dim, latent_dim, vae_channels, latent_frames,
                          vae, unet_options)
    torch.manual_seed(seed)
    model = create_model_from_config(config).eval()
    perturb_(model, seed)
    rf = shape == "sao-small"
    sampler_cfg = {"steps": steps, "cfg_scale": cfg_scale, "sampler_type": sampler,
                   "sigma_min": None if rf else 0.3, "sigma_max": 1.0 if rf else 80.0}
    conditioning = conditioning_for(shape, batch)
    negative = conditioning_for(shape, batch, negative=True) if with_negative else None
    io: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(seed + 1)

    with torch.no_grad():
        # VAE: the deterministic path (the mean) and its decode.
        audio = 0.5 * torch.randn(1, 2, config["sample_size"], generator=g)
        ae = model.pretransform.model
        mean, _scale = ae.encoder(audio).chunk(2, dim=1)
        io["audio"] = audio
        io["enc_mean"] = mean / model.pretransform.scale
        io["dec_of_mean"] = model.pretransform.decode(io["enc_mean"])

        cond = model.conditioner(conditioning, "cpu")
        for key, (tokens, mask) in cond.items():
            io[f"cond.{key}"] = tokens
            io[f"cond.{key}.mask"] = mask.float()
        inputs = model.get_conditioning_inputs(cond)
        for key, value in inputs.items():
            if value is not None:
                io[f"inputs.{key}"] = value.float()
        neg_inputs = {}
        if negative is not None:
            neg_inputs = model.get_conditioning_inputs(model.conditioner(negative, "cpu"), negative=True)
            for key, value in neg_inputs.items():
                if value is not None:
                    io[f"negative_inputs.{key}"] = value.float()

        x = torch.randn(batch, latent_dim, latent_frames, generator=g)
        t = torch.rand(batch, generator=g) * 0.9 + 0.05
        io["x"], io["t"] = x, t
        io["model_out_cfg1"] = model.model(x, t, **inputs, cfg_scale=1.0)
        guided_scale = cfg_scale if cfg_scale != 1.0 else 7.0
        io["model_out_cfg7"] = model.model(x, t, **inputs, **neg_inputs, cfg_scale=guided_scale,
                                           batch_cfg=True, rescale_cfg=True)

        torch.manual_seed(seed)
        io["gen_initial_noise"] = torch.randn(batch, latent_dim, latent_frames)
        kwargs = {k: v for k, v in sampler_cfg.items() if k not in ("steps", "cfg_scale") and v is not None}
        latents = generate_diffusion_cond(
            model, steps=steps, cfg_scale=cfg_scale, conditioning=conditioning,
            negative_conditioning=negative, batch_size=batch, sample_size=config["sample_size"],
            seed=seed, device="cpu", return_latents=True, **kwargs)
        io["gen_latents"] = latents
        io["gen_audio"] = model.pretransform.decode(latents)

    out.mkdir(parents=True, exist_ok=True)
    # model_out_cfg7 used rescale_cfg=True: the DiT's scale_phi is 0 there, the U-Net's 0.4.
    meta = {"model_config": config, "conditioning": conditioning, "sampler": sampler_cfg, "seed": seed,
            "model_out_cfg7_scale": guided_scale,
            "reference": "stable-audio-tools 0.0.19, torch " + torch.__version__}
    if negative is not None:
        meta["negative_conditioning"] = negative
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"{name}.weights.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, str(out / f"{name}.io.safetensors"))
    print(f"wrote {out / name}.* ({sum(v.numel() for v in state.values())} parameters)")


# The committed fixtures: both model shapes, exact samplers, a batch and a negative prompt.
DEFAULT_SET = [
    dict(name="sao1_dit_v_dpmpp2m", shape="sao-1.0", seed=1, embed_dim=64, depth=2, heads=2,
         batch=2, sampler="dpmpp-2m", steps=6, cfg_scale=6.0, with_negative=False),
    dict(name="sao1_dit_v_negative", shape="sao-1.0", seed=5, embed_dim=64, depth=2, heads=2,
         batch=1, sampler="dpmpp-2m", steps=4, cfg_scale=7.0, with_negative=True),
    dict(name="saosmall_dit_rf_euler", shape="sao-small", seed=3, embed_dim=64, depth=2, heads=2,
         batch=2, sampler="euler", steps=6, cfg_scale=1.0, with_negative=False),
    # The paper's U-Net (adp_cfg_1d) with int timing on the 1/1024 DAC VAE: guidance against the
    # learned unconditional embedding with the reference's 0.4 rescale, a batch, and a negative
    # prompt. 8 latents (8192 samples) keep the audio tensors of a fixture near 200 KB.
    dict(name="paperunet_v_dpmpp2m", shape="paper-unet", seed=11, embed_dim=16, depth=1, heads=2,
         batch=2, sampler="dpmpp-2m", steps=6, cfg_scale=6.0, with_negative=False, vae="dac",
         vae_channels=2, latent_frames=8),
    dict(name="paperunet_v_negative", shape="paper-unet", seed=13, embed_dim=16, depth=1, heads=2,
         batch=1, sampler="dpmpp-2m", steps=4, cfg_scale=6.0, with_negative=True, vae="dac",
         vae_channels=2, latent_frames=8),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", help="write one custom fixture instead of the default set")
    ap.add_argument("--shape", choices=["sao-1.0", "sao-small", "paper-unet"], default="sao-1.0")
    ap.add_argument("--vae", choices=sorted(VAE_TYPES), default=None,
                    help="pretransform type (default: dac for paper-unet, oobleck for the DiTs)")
    ap.add_argument("--unet-options", type=json.loads, default=None,
                    help='paper-unet: JSON merged into the U-Net config, e.g. \'{"patch_size": 2}\'')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2, help="embed_dim / heads must be >= 32")
    ap.add_argument("--cond-dim", type=int, default=32)
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--vae-channels", type=int, default=8)
    ap.add_argument("--latent-frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--sampler", default=None, help="exact (noise-free) samplers only: dpmpp-2m for v models, euler/dpmpp for rf")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cfg-scale", type=float, default=6.0)
    ap.add_argument("--negative", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    common = dict(cond_dim=args.cond_dim, latent_dim=args.latent_dim, vae_channels=args.vae_channels,
                  latent_frames=args.latent_frames)
    if args.name is None:
        for spec in DEFAULT_SET:
            make_fixture(args.out, **{**common, **spec})  # a spec's own sizes win
        return 0
    sampler = args.sampler or ("euler" if args.shape == "sao-small" else "dpmpp-2m")
    make_fixture(args.out, args.name, args.shape, args.seed, args.embed_dim, args.depth, args.heads,
                 batch=args.batch, sampler=sampler, steps=args.steps, cfg_scale=args.cfg_scale,
                 with_negative=args.negative, vae=args.vae or DEFAULT_VAE[args.shape],
                 unet_options=args.unet_options, **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
