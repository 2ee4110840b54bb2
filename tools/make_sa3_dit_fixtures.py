"""Write the SA3 DiT and sampling parity fixtures (tests/fixtures/sa3_dit/) with stable-audio-3.

Runs in the SA3 reference venv (see ../shared/reference-env/sa3/README.md), not in CI:

    /tmp/sa3-ref/bin/python tools/make_sa3_dit_fixtures.py [OUT_DIR]

For each tiny config in CASES it builds the reference DiT exactly as the factory does
(`DiTWrapper(diffusion_objective, modular_local_cond_configs=[], **config)`), fills every parameter
from a seeded generator (the reference zero-initialises several output layers, which would make
parity vacuous), rounds the values to float16 so the weights are stored losslessly in half the
bytes (the reference then runs them in float32), and saves `<case>.safetensors`:
- `model.model.<key>`: the DiT state dict in the checkpoint layout (float16);
- `dit.in.x`, `dit.in.t`, `dit.in.cross_attn_cond`, `dit.in.global_cond`, `dit.in.local_add_cond`,
  `dit.in.padding_mask` (uint8), `dit.in.negative_cross_attn_cond`, `dit.in.negative_cross_attn_mask`
  (uint8); `dit.out.plain` (no guidance, no mask), `dit.out.padding_mask` (with the mask), and
  `dit.out.<guidance>` for each entry of GUIDANCE (the reference's forward with cfg/apg);
- `gen.<run>.noise`, `.latents`, `.after` (three normal draws made right after sampling, which
  pins the number of draws), `.local_add_cond`, `.init` for each sampling run of the case
  (`sample_diffusion` with the reference's padding mask and per-item schedule, decode off).
The metadata holds the config, objective, guidance settings, runs and the state dict's key order
as JSON.

`seconds_total.safetensors`: the duration conditioner (`number`, expo features, 0..384 s, width 32)
as `conditioner.conditioners.seconds_total.<key>` (float16 values), its inputs `cond.in.seconds_total`
(some outside the range) and outputs `cond.out.seconds_total` [B, 1, 32].

`full_size_dit_keys.json`: the reconstructed Small and Medium DiT configs (SPEC.md g.1, as in the
reference env's scripts/tiny_configs.py) with the key order and shapes of the reference DiT built
from them on the meta device, and their parameter counts.

`sampling.safetensors` + `sampling.json`: schedules `sched.<name>` (`build_schedule` as
`sample_diffusion` calls it), padding masks `mask.<name>` and the latent-length table
(`StableAudioModel._adapt_sample_size`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from stable_audio_3.data.utils import (compute_effective_seq_len_from_conditioning,
                                       create_padding_mask_from_lengths)
from stable_audio_3.inference.distribution_shift import LogSNRShift
from stable_audio_3.inference.sampling import build_schedule, sample_diffusion
from stable_audio_3.model import StableAudioModel
from stable_audio_3.models.conditioners import NumberConditioner
from stable_audio_3.models.diffusion import DiTWrapper

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "fixtures" / "sa3_dit"
SAMPLE_RATE, RATIO = 44100, 4096


def dit_config(**overrides) -> dict:
    """A tiny SA3 DiT: the released structure (adaLN, expo time features, memory tokens, q/k RMS
    norm, RMS block norms in fp32, local_add_cond) at width 128 with 2 heads of 64."""
    config = {
        "io_channels": 8, "patch_size": 1, "embed_dim": 128, "depth": 1, "num_heads": 2,
        "cond_token_dim": 32, "global_cond_dim": 32, "local_add_cond_dim": 9,
        "project_cond_tokens": True, "project_global_cond": True,
        "transformer_type": "continuous_transformer", "global_cond_type": "adaLN",
        "timestep_features_type": "expo", "timestep_features_dim": 256,
        "attn_kwargs": {"qk_norm": "rms", "differential": False},
        "norm_type": "rms_norm", "norm_kwargs": {"force_fp32": True},
        "ff_kwargs": {"mult": 1.0}, "num_memory_tokens": 4,
    }
    config.update(overrides)
    return config


CASES = {
    "plain": {"objective": "rf_denoiser", "config": dit_config(), "seed": 42},
    # One head of 64 keeps the file small; the plain case covers the split into heads.
    "differential": {"objective": "rf_denoiser", "seed": 43,
                     "config": dit_config(embed_dim=64, num_heads=1, depth=2,
                                          attn_kwargs={"qk_norm": "rms", "differential": True})},
    # The other switches the builder accepts: LayerNorm blocks and q/k, unprojected context
    # (keys and values keep the context's width), log-SNR time features, no memory tokens,
    # cross-attention in the first block only, feed-forward without biases.
    "variant": {"objective": "rectified_flow", "seed": 44,
                "config": dit_config(embed_dim=64, num_heads=1, depth=2, cond_token_dim=64, project_cond_tokens=False,
                                     norm_type="layer_norm", norm_kwargs={"bias": True, "eps": 1e-6},
                                     attn_kwargs={"qk_norm": "ln", "differential": True},
                                     timestep_features_logsnr=True, timestep_features_dim=64,
                                     num_memory_tokens=0, final_cross_attn_ix=0,
                                     ff_kwargs={"mult": 0.5, "no_bias": True})},
}

# Guided calls of the reference forward (no padding mask unless stated).
GUIDANCE = {
    "guided": {"cfg_scale": 3.0, "apg_scale": 1.0, "negative": True},
    "guided_cfg_null": {"cfg_scale": 4.0, "apg_scale": 0.0, "negative": False},
    "guided_apg_blend_masked": {"cfg_scale": 2.5, "apg_scale": 0.5, "negative": True, "padding_mask": True},
    "guided_apg_masked_null": {"cfg_scale": 5.0, "apg_scale": 1.0, "negative": False, "padding_mask": True},
    "guided_norm_threshold": {"cfg_scale": 3.0, "apg_scale": 0.0, "negative": True, "cfg_norm_threshold": 0.5},
    "guided_interval": {"cfg_scale": 3.0, "apg_scale": 1.0, "negative": True, "cfg_interval": [0.0, 0.5]},
}

# Sampling runs: the reference's sample_diffusion as generate() calls it, decode off.
RUNS = {
    "plain": {
        "pingpong_cfg": {"seed": 7, "steps": 4, "sampler": "pingpong", "cfg_scale": 3.0, "apg_scale": 1.0,
                         "negative": True, "seconds": [1.0, 0.3], "length": 80, "inpaint": True},
        "euler": {"seed": 8, "steps": 5, "sampler": "euler", "cfg_scale": 1.0, "seconds": [1.0, 1.0],
                  "length": 80},
        "pingpong_a2a": {"seed": 10, "steps": 4, "sampler": "pingpong", "cfg_scale": 1.0, "seconds": [2.0, 2.0],
                         "length": 80, "init_noise_level": 0.7},
    },
    "differential": {
        "dpmpp_cfg": {"seed": 9, "steps": 6, "sampler": "dpmpp", "cfg_scale": 2.0, "apg_scale": 0.0,
                      "negative": False, "seconds": [2.0, 0.5], "length": 80},
        "euler_a2a": {"seed": 11, "steps": 5, "sampler": "euler", "cfg_scale": 1.0, "seconds": [1.5, 1.5],
                      "length": 80, "init_noise_level": 0.8},
    },
}

SCHEDULES = {
    "default_8": {"steps": 8, "seconds": [3.0, 10.0], "sigma_max": 1.0},
    "a2a_0.8": {"steps": 8, "seconds": [3.0, 3.0], "sigma_max": 0.8},
    "one_step": {"steps": 1, "seconds": [5.0], "sigma_max": 1.0},
    "rate1_per_item_50": {"steps": 50, "seconds": [1.5, 30.0, 200.0], "sigma_max": 1.0, "rate": 1.0},
    "rate1_a2a": {"steps": 6, "seconds": [0.2, 60.0], "sigma_max": 0.5, "rate": 1.0},
    "fallback_length": {"steps": 8, "seconds": None, "sigma_max": 1.0, "rate": 0.5, "fallback_length": 98},
}
DURATIONS = [0.1, 0.5, 2.3, 3.0, 10.0, 30.0, 47.5, 60.0, 110.0, 114.0, 120.0, 200.0]
PADDING_MASKS = {"short": {"seconds": [3.0, 0.5, 9.9], "length": 98},
                 "long": {"seconds": [30.0, 12.0], "length": 388}}


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter from a seeded generator, rounded to float16-representable values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            leaf = name.split(".")[-1]
            if leaf == "gamma" or name.endswith("norm.weight"):
                value = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() >= 2:
                value = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
            else:
                value = 0.1 * torch.randn(p.shape, generator=g)
            p.copy_(value.half().float())


def dit_inputs(config: dict, g: torch.Generator, batch: int = 2, length: int = 24, tokens: int = 9) -> dict:
    channels = config["io_channels"]
    mask = torch.ones(batch, 1, length)
    mask[:, :, 5:13] = 0
    source = torch.randn(batch, channels, length, generator=g)
    padding = torch.ones(batch, length, dtype=torch.bool)
    padding[1, 15:] = False
    negative_mask = torch.zeros(batch, tokens, dtype=torch.bool)
    negative_mask[:, :5] = True
    negative_mask[:, -1] = True
    return {
        "x": torch.randn(batch, channels, length, generator=g),
        "t": torch.tensor([0.83, 0.35]),
        "cross_attn_cond": torch.randn(batch, tokens, config["cond_token_dim"], generator=g),
        "global_cond": torch.randn(batch, config["global_cond_dim"], generator=g),
        "local_add_cond": torch.cat([mask, source * mask], dim=1),
        "padding_mask": padding,
        "negative_cross_attn_cond": torch.randn(batch, tokens, config["cond_token_dim"], generator=g),
        "negative_cross_attn_mask": negative_mask,
    }


class _Ratio:
    """Stands in for the pretransform: sample_diffusion reads only its downsampling ratio."""
    downsampling_ratio = RATIO


def run_sampling(model: DiTWrapper, config: dict, objective: str, run: dict, g: torch.Generator) -> dict:
    batch, length, channels = len(run["seconds"]), run["length"], config["io_channels"]
    cross = torch.randn(batch, 9, config["cond_token_dim"], generator=g)
    global_cond = torch.randn(batch, config["global_cond_dim"], generator=g)
    local = torch.zeros(batch, channels + 1, length)
    if run.get("inpaint"):
        mask = torch.ones(batch, 1, length)
        mask[:, :, 3:9] = 0
        local = torch.cat([mask, torch.randn(batch, channels, length, generator=g) * mask], dim=1)
    init = torch.randn(batch, channels, length, generator=g) if "init_noise_level" in run else None
    negative = negative_mask = None
    if run.get("negative"):
        negative = torch.randn(batch, 9, config["cond_token_dim"], generator=g)
        negative_mask = torch.ones(batch, 9, dtype=torch.bool)
        negative_mask[:, 4:8] = False
    cond_inputs = {"cross_attn_cond": cross, "cross_attn_mask": torch.ones(batch, 9, dtype=torch.bool),
                   "global_cond": global_cond, "local_add_cond": local}
    if negative is not None:
        cond_inputs.update(negative_cross_attn_cond=negative, negative_cross_attn_mask=negative_mask)

    torch.manual_seed(run["seed"])
    noise = torch.randn([batch, channels, length])
    latents = sample_diffusion(
        model, noise, cond_inputs, objective, run["steps"], cfg_scale=run["cfg_scale"],
        conditioning=[{"seconds_total": s} for s in run["seconds"]], sample_rate=SAMPLE_RATE,
        pretransform=_Ratio(), mask_padding_attention=True, use_effective_length_for_schedule=True,
        headroom_seconds=6.0, dist_shift=LogSNRShift(rate=0, anchor_logsnr=-6.2, logsnr_end=2.0),
        sampler_type=run["sampler"], batch_cfg=True, rescale_cfg=True,
        apg_scale=run.get("apg_scale", 1.0), init_data=init,
        init_noise_level=run.get("init_noise_level", 1.0), decode=False, disable_tqdm=True,
    )
    after = torch.randn(3)
    out = {"noise": noise, "latents": latents, "after": after, "cross_attn_cond": cross,
           "global_cond": global_cond, "local_add_cond": local}
    if init is not None:
        out["init"] = init
    if negative is not None:
        out["negative_cross_attn_cond"] = negative
        out["negative_cross_attn_mask"] = negative_mask.to(torch.uint8)
    return out


def write_case(name: str, case: dict, out_dir: Path) -> int:
    config, objective = case["config"], case["objective"]
    torch.manual_seed(0)
    model = DiTWrapper(diffusion_objective=objective, modular_local_cond_configs=[], **config).eval()
    randomize_(model, case["seed"])
    g = torch.Generator().manual_seed(case["seed"] + 1000)
    inputs = dit_inputs(config, g)
    # Parameters hold float16-representable values; buffers (rotary frequencies) stay float32.
    parameters = {key for key, _ in model.named_parameters()}
    tensors = {f"model.{key}": value.half() if key in parameters else value
               for key, value in model.state_dict().items()}
    for key, value in inputs.items():
        tensors[f"dit.in.{key}"] = value.to(torch.uint8) if value.dtype == torch.bool else value
    common = {"cross_attn_cond": inputs["cross_attn_cond"], "global_cond": inputs["global_cond"],
              "local_add_cond": inputs["local_add_cond"]}
    with torch.no_grad():
        tensors["dit.out.plain"] = model(inputs["x"], inputs["t"], **common)
        tensors["dit.out.padding_mask"] = model(inputs["x"], inputs["t"], **common,
                                                padding_mask=inputs["padding_mask"])
        for key, spec in GUIDANCE.items():
            extra = {}
            if spec["negative"]:
                extra.update(negative_cross_attn_cond=inputs["negative_cross_attn_cond"],
                             negative_cross_attn_mask=inputs["negative_cross_attn_mask"])
            if spec.get("padding_mask"):
                extra["padding_mask"] = inputs["padding_mask"]
            if "cfg_interval" in spec:
                extra["cfg_interval"] = tuple(spec["cfg_interval"])
            if "cfg_norm_threshold" in spec:
                extra["cfg_norm_threshold"] = spec["cfg_norm_threshold"]
            tensors[f"dit.out.{key}"] = model(inputs["x"], inputs["t"], **common, cfg_scale=spec["cfg_scale"],
                                              apg_scale=spec["apg_scale"], **extra)
    runs = RUNS.get(name, {})
    for run_name, run in runs.items():
        for key, value in run_sampling(model, config, objective, run, g).items():
            tensors[f"gen.{run_name}.{key}"] = value
    metadata = {"config": json.dumps(config), "objective": objective, "guidance": json.dumps(GUIDANCE),
                "runs": json.dumps(runs), "state_dict_keys": json.dumps(list(model.model.state_dict()))}
    path = out_dir / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path.stat().st_size


def write_sampling(out_dir: Path) -> None:
    tensors, table = {}, {"schedules": SCHEDULES, "padding_masks": PADDING_MASKS, "latent_lengths": []}
    for name, spec in SCHEDULES.items():
        shift = LogSNRShift(rate=spec.get("rate", 0.0), anchor_logsnr=-6.2, logsnr_end=2.0)
        lengths = None
        if spec["seconds"] is not None:
            lengths = compute_effective_seq_len_from_conditioning(
                [{"seconds_total": s} for s in spec["seconds"]], SAMPLE_RATE, RATIO, "cpu")
        tensors[f"sched.{name}"] = build_schedule(spec["steps"], sigma_max=spec["sigma_max"], dist_shift=shift,
                                                  effective_seq_len=lengths,
                                                  fallback_seq_len=spec.get("fallback_length"))
    for name, spec in PADDING_MASKS.items():
        lengths = compute_effective_seq_len_from_conditioning(
            [{"seconds_total": s} for s in spec["seconds"]], SAMPLE_RATE, RATIO, "cpu")
        valid = (lengths + int(6.0 * SAMPLE_RATE / RATIO)).clamp(max=spec["length"]).long()
        tensors[f"mask.{name}"] = create_padding_mask_from_lengths(valid, spec["length"]).to(torch.uint8)
    for chunk_size in (32, 128, None):
        encoder = {"strides": [16]} if chunk_size is None else {"strides": [16], "chunk_size": chunk_size}
        fake = SimpleNamespace(
            model=SimpleNamespace(sample_rate=SAMPLE_RATE, pretransform=SimpleNamespace(downsampling_ratio=RATIO)),
            model_config={"model": {"pretransform": {"config": {"encoder": {"config": encoder}}}}})
        for duration in DURATIONS:
            samples = StableAudioModel._adapt_sample_size(fake, [{"seconds_total": duration}], 16777216, 6.0)
            table["latent_lengths"].append({"duration": duration, "chunk_size": chunk_size, "samples": samples})
    save_file(tensors, str(out_dir / "sampling.safetensors"))
    (out_dir / "sampling.json").write_text(json.dumps(table, indent=1) + "\n")


SECONDS = [0.0, 0.3, 3.0, 47.5, 120.0, 383.9, 384.0, 500.0, -2.0]


def write_conditioner(out_dir: Path) -> None:
    conditioner = NumberConditioner(output_dim=32, min_val=0, max_val=384, fourier_features_type="expo")
    randomize_(conditioner, 45)
    with torch.no_grad():
        tokens, mask = conditioner(SECONDS, "cpu")
    assert bool(mask.all())
    tensors = {f"conditioner.conditioners.seconds_total.{key}": value.half()
               for key, value in conditioner.state_dict().items()}
    tensors["cond.in.seconds_total"] = torch.tensor(SECONDS, dtype=torch.float64)
    tensors["cond.out.seconds_total"] = tokens
    config = {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"}
    save_file(tensors, str(out_dir / "seconds_total.safetensors"),
              metadata={"config": json.dumps(config), "output_dim": "32"})


def full_dit_config(embed_dim: int, depth: int, num_heads: int, differential: bool) -> dict:
    """The released DiT block (reconstructed from public sources, SPEC.md g.1)."""
    return {
        "io_channels": 256, "patch_size": 1, "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
        "cond_token_dim": 768, "global_cond_dim": 768, "local_add_cond_dim": 257,
        "project_cond_tokens": True, "project_global_cond": True,
        "transformer_type": "continuous_transformer", "global_cond_type": "adaLN",
        "timestep_features_type": "expo", "timestep_features_dim": 256,
        "attn_kwargs": {"qk_norm": "rms", "differential": differential},
        "norm_type": "rms_norm", "norm_kwargs": {"force_fp32": True},
        "ff_kwargs": {"mult": 4.0}, "num_memory_tokens": 64,
    }


FULL_SIZE = {"small": full_dit_config(1024, 20, 16, differential=False),
             "medium": full_dit_config(1536, 24, 24, differential=True)}


def write_full_size_keys(out_dir: Path) -> None:
    table = {}
    for name, config in FULL_SIZE.items():
        with torch.device("meta"):
            model = DiTWrapper(diffusion_objective="rf_denoiser", modular_local_cond_configs=[], **config)
        state = model.model.state_dict()
        table[name] = {"config": config, "objective": "rf_denoiser",
                       "parameters": sum(p.numel() for p in model.parameters()),
                       "keys": [[key, list(value.shape)] for key, value in state.items()]}
    (out_dir / "full_size_dit_keys.json").write_text(json.dumps(table) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        print(f"{name}: {write_case(name, case, out_dir)} bytes")
    write_conditioner(out_dir)
    write_full_size_keys(out_dir)
    write_sampling(out_dir)
    print("sampling written to", out_dir)


if __name__ == "__main__":
    main()
