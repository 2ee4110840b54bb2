"""Write the U-Net parity fixtures (tests/fixtures/unet/) with stable-audio-tools 0.0.19.

Runs in the reference venv, not in CI:

    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_unet_fixtures.py             # write
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_unet_fixtures.py --check 8   # compare

Writing: for each tiny adp_cfg_1d config in CASES, builds the reference `UNetCFG1DWrapper(**config)`
as create_diffusion_cond_from_config does, perturbs every parameter by 0.05 * randn (rounded to
float16-representable values so the state dict is stored losslessly in half the bytes; the
reference then runs in float32), and saves `<case>.safetensors` holding `state.<key>` (the
wrapper's `model.*` state dict, i.e. the checkpoint's `model.model.*`) and per input set
`<i>.x`, `<i>.t`, `<i>.cross_attn_cond`, `<i>.cross_attn_mask` (with padded tokens),
`<i>.global_embed`, `<i>.input_concat_cond` where the config takes them, and the outputs:
`<i>.output` (cfg_scale 1), `<i>.output_cfg` (cfg_scale CFG_SCALE, batch_cfg and rescale_cfg as
generate_diffusion_cond sets them) and, with `<i>.negative_cross_attn_cond` / `_mask`,
`<i>.output_cfg_negative`. The config sits in the file's metadata.
`paper_unet_keys.json` holds the key -> shape list and parameter count of the paper's U-Net
(stable_audio_core/configs/stable_audio_paper_unet.json), built on the meta device.

--check N: builds N random tiny configs (seeds, sizes, options), loads the same weights into
stable_audio_core (imported from this checkout) and prints the max abs differences.
--check-full: the same for the paper's full-size U-Net on one short input (about 8 GB of RAM).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from stable_audio_tools.models.diffusion import UNetCFG1DWrapper

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "fixtures" / "unet"
PAPER_CONFIG = REPO / "stable_audio_core" / "configs" / "stable_audio_paper_unet.json"
SEED = 20240207
CFG_SCALE = 6.0

CASES = {
    # The paper's structure: a factor-1 first level whose blocks attend (to the context too), a
    # wider level below, a bottleneck with attention; FiLM time conditioning.
    "paper_shape": {
        "config": {"in_channels": 4, "context_embedding_features": 16, "context_embedding_max_length": 6,
                   "channels": 16, "resnet_groups": 4, "kernel_multiplier_downsample": 2,
                   "multipliers": [1, 2, 2], "factors": [1, 2], "num_blocks": [1, 1],
                   "attentions": [1, 0, 1], "attention_heads": 2, "attention_multiplier": 1,
                   "context_features_multiplier": 1, "use_nearest_upsample": False,
                   "use_skip_scale": True, "use_context_time": True},
        "inputs": [{"batch": 2, "length": 8, "tokens": 4, "negative": True},
                   {"batch": 1, "length": 6, "tokens": 6, "negative": False}],
    },
    # Patches of 2, nearest upsampling, unscaled skips, a wider downsampling kernel, a global
    # embedding added to the time mapping, channels concatenated at the input, head width instead
    # of head count, a time token in the cross-attention context, another output width.
    "options_global_concat_xattn_time": {
        "config": {"in_channels": 4, "out_channels": 6, "context_embedding_features": 8,
                   "context_embedding_max_length": 5, "channels": 16, "resnet_groups": 2,
                   "kernel_multiplier_downsample": 4, "multipliers": [1, 1, 2], "factors": [2, 2],
                   "num_blocks": [1, 1], "attentions": [0, 0, 2], "attention_features": 16,
                   "attention_multiplier": 1, "patch_size": 2, "use_nearest_upsample": True,
                   "use_skip_scale": False, "context_features": 12, "context_features_multiplier": 1,
                   "context_channels": [3], "use_xattn_time": True},
        # The reference cannot combine a negative prompt with use_xattn_time (length mismatch).
        "inputs": [{"batch": 2, "length": 16, "tokens": 3, "negative": False}],
    },
    # No time conditioning at all (no FiLM), channels concatenated after the first downsampling,
    # attention only in the bottleneck, which reads attentions[-1] of a longer list.
    "no_time_concat_level1": {
        "config": {"in_channels": 4, "context_embedding_features": 8, "context_embedding_max_length": 4,
                   "channels": 16, "resnet_groups": 4, "multipliers": [1, 2], "factors": [2],
                   "num_blocks": [1], "attentions": [0, 0, 1], "attention_heads": 1,
                   "attention_multiplier": 1, "use_context_time": False, "context_channels": [0, 4]},
        "inputs": [{"batch": 2, "length": 10, "tokens": 4, "negative": True}],
    },
}


def build_reference(config: dict, seed: int) -> UNetCFG1DWrapper:
    torch.manual_seed(seed)
    wrapper = UNetCFG1DWrapper(**config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in wrapper.parameters():
            moved = parameter + 0.05 * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(moved.half().float())  # float16-representable: stored losslessly
    return wrapper


def make_inputs(config: dict, spec: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    batch, length, tokens = spec["batch"], spec["length"], spec["tokens"]
    width = config["context_embedding_features"]
    inputs = {
        "x": torch.randn(batch, config["in_channels"], length, generator=generator),
        "t": torch.rand(batch, generator=generator) * 0.9 + 0.05,
        "cross_attn_cond": torch.randn(batch, tokens, width, generator=generator),
    }
    mask = torch.ones(batch, tokens)
    mask[0, tokens - 1:] = 0  # the first item's last token is padding
    inputs["cross_attn_mask"] = mask
    if config.get("context_features"):
        inputs["global_embed"] = torch.randn(batch, config["context_features"], generator=generator)
    channels = config.get("context_channels") or []
    for level, count in enumerate(channels):
        if count:
            # Level 0 is concatenated before patching, level k after the k-th downsampling.
            below = config.get("patch_size", 1) * math.prod(config["factors"][:level])
            level_length = length if level == 0 else length // below
            inputs["input_concat_cond"] = torch.randn(batch, count, level_length, generator=generator)
    if spec["negative"]:
        inputs["negative_cross_attn_cond"] = torch.randn(batch, tokens, width, generator=generator)
        negative_mask = torch.ones(batch, tokens)
        negative_mask[:, tokens - 2:] = 0  # padded negative tokens take the learned rows
        inputs["negative_cross_attn_mask"] = negative_mask
    return inputs


@torch.no_grad()
def reference_outputs(wrapper: UNetCFG1DWrapper, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The wrapper's outputs as generate_diffusion_cond calls it (batch_cfg, rescale_cfg)."""
    kwargs = {"cross_attn_cond": inputs["cross_attn_cond"], "cross_attn_mask": inputs["cross_attn_mask"],
              "global_cond": inputs.get("global_embed"), "input_concat_cond": inputs.get("input_concat_cond")}
    x, t = inputs["x"], inputs["t"]
    outputs = {
        "output": wrapper(x, t, **kwargs, cfg_scale=1.0),
        "output_cfg": wrapper(x, t, **kwargs, cfg_scale=CFG_SCALE, batch_cfg=True, rescale_cfg=True),
    }
    if "negative_cross_attn_cond" in inputs:
        outputs["output_cfg_negative"] = wrapper(
            x, t, **kwargs, cfg_scale=CFG_SCALE, batch_cfg=True, rescale_cfg=True,
            negative_cross_attn_cond=inputs["negative_cross_attn_cond"],
            negative_cross_attn_mask=inputs["negative_cross_attn_mask"])
    return outputs


def write_case(name: str, case: dict) -> None:
    wrapper = build_reference(case["config"], SEED)
    tensors = {f"state.{key}": value.half().contiguous() for key, value in wrapper.model.state_dict().items()}
    generator = torch.Generator().manual_seed(SEED + 1)
    for i, spec in enumerate(case["inputs"]):
        inputs = make_inputs(case["config"], spec, generator)
        for key, value in {**inputs, **reference_outputs(wrapper, inputs)}.items():
            tensors[f"{i}.{key}"] = value.contiguous()
    metadata = {"config": json.dumps(case["config"]), "inputs": str(len(case["inputs"])),
                "cfg_scale": str(CFG_SCALE),
                "reference": f"stable-audio-tools 0.0.19, torch {torch.__version__}"}
    save_file(tensors, str(OUT_DIR / f"{name}.safetensors"), metadata=metadata)
    print(f"wrote {name}: {sum(v.numel() for k, v in tensors.items() if k.startswith('state.'))} parameters")


def write_paper_keys() -> None:
    config = json.loads(PAPER_CONFIG.read_text())["model"]["diffusion"]["config"]
    with torch.device("meta"):
        wrapper = UNetCFG1DWrapper(**config)
    state = wrapper.model.state_dict()
    record = {"config": config, "parameters": sum(v.numel() for v in state.values()),
              "keys": {key: list(value.shape) for key, value in state.items()}}
    (OUT_DIR / "paper_unet_keys.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"wrote paper_unet_keys.json: {len(state)} keys, {record['parameters']:,} parameters")


# --- checking our implementation on random configs ---------------------------------------------

def random_config(rng: random.Random) -> dict:
    levels = rng.randint(1, 3)
    channels = rng.choice([32, 64])
    config = {
        # Not 2 channels: the rescale divides by a std over channels, which two nearly equal
        # values make ill-conditioned (rounding differences grow to 1e-3 in both directions).
        "in_channels": rng.choice([4, 8]), "context_embedding_features": rng.choice([8, 16]),
        "context_embedding_max_length": 8, "channels": channels, "resnet_groups": rng.choice([1, 2, 4, 8]),
        "multipliers": [rng.choice([1, 2]) for _ in range(levels + 1)],
        "factors": [rng.choice([1, 2, 3, 4]) for _ in range(levels)],
        "num_blocks": [rng.randint(1, 2) for _ in range(levels)],
        "attentions": [rng.randint(0, 2) for _ in range(levels + 1)],
        "attention_multiplier": rng.choice([1, 2, 4]),
        "patch_size": rng.choice([1, 1, 2]),
        "kernel_multiplier_downsample": rng.choice([2, 4]),
        "use_nearest_upsample": rng.random() < 0.5, "use_skip_scale": rng.random() < 0.5,
        "use_context_time": rng.random() < 0.7, "use_xattn_time": rng.random() < 0.3,
    }
    if rng.random() < 0.5:
        config["attention_heads"] = rng.choice([1, 2, 4])
    else:
        config["attention_features"] = rng.choice([8, 16, 32])
    if rng.random() < 0.4:
        config["context_features"] = rng.choice([4, 12])
    if rng.random() < 0.4:
        level = rng.randint(0, levels)
        config["context_channels"] = [0] * level + [config["resnet_groups"] * rng.randint(1, 2)]
    return config


def check(count: int) -> int:
    sys.path.insert(0, str(REPO))
    from stable_audio_core.models.stable_audio import ModelInputs, unet_unconditional_inputs
    from stable_audio_core.models.unet import UNet1d
    from stable_audio_core.sampling.guidance import guided_model_fn

    rng = random.Random(SEED)
    worst = 0.0
    for index in range(count):
        config = random_config(rng)
        wrapper = build_reference(config, SEED + index)
        ours = UNet1d.from_config(config).eval()
        ours.load_state_dict(wrapper.model.state_dict(), strict=True)
        multiple = config["patch_size"] * math.prod(config["factors"])
        # At least two frames at the bottom: GroupNorm of one value per group fails in both.
        spec = {"batch": rng.randint(1, 3), "length": multiple * rng.randint(2, 3),
                "tokens": rng.randint(2, 6), "negative": not config["use_xattn_time"]}
        inputs = make_inputs(config, spec, torch.Generator().manual_seed(index))
        reference = reference_outputs(wrapper, inputs)
        model_inputs = ModelInputs(cross_attn_cond=inputs["cross_attn_cond"],
                                   cross_attn_mask=inputs["cross_attn_mask"],
                                   global_embed=inputs.get("global_embed"),
                                   input_concat_cond=inputs.get("input_concat_cond"))
        negative = None
        if "negative_cross_attn_cond" in inputs:
            negative = ModelInputs(cross_attn_cond=inputs["negative_cross_attn_cond"],
                                   cross_attn_mask=inputs["negative_cross_attn_mask"])
        kwargs = dict(model_inputs.__dict__)
        with torch.no_grad():
            mine = {
                "output": ours(inputs["x"], inputs["t"], **kwargs),
                "output_cfg": guided_model_fn(ours, kwargs, unet_unconditional_inputs(model_inputs, None),
                                              CFG_SCALE, ours.default_cfg_rescale)(inputs["x"], inputs["t"]),
            }
            if negative is not None:
                mine["output_cfg_negative"] = guided_model_fn(
                    ours, kwargs, unet_unconditional_inputs(model_inputs, negative), CFG_SCALE,
                    ours.default_cfg_rescale)(inputs["x"], inputs["t"])
        # Relative to max(1, max|reference|), as the parity check measures.
        errors = {key: float((mine[key] - value).abs().max()) / max(1.0, float(value.abs().max()))
                  for key, value in reference.items()}
        worst = max(worst, *errors.values())
        shown = ", ".join(f"{key} {error:.2e}" for key, error in errors.items())
        print(f"[{index}] levels {len(config['factors'])} factors {config['factors']} patch "
              f"{config['patch_size']} L {spec['length']}: {shown}")
    print(f"worst max abs difference per unit of max(1, max|reference|): {worst:.3e}")
    return 0 if worst < 1e-4 else 1


@torch.no_grad()
def check_full() -> int:
    """The paper's full-size U-Net (907M) on 32 latent frames and 79 tokens: ours vs the reference."""
    sys.path.insert(0, str(REPO))
    from stable_audio_core.models.stable_audio import ModelInputs, unet_unconditional_inputs
    from stable_audio_core.models.unet import UNet1d
    from stable_audio_core.sampling.guidance import guided_model_fn

    config = json.loads(PAPER_CONFIG.read_text())["model"]["diffusion"]["config"]
    torch.manual_seed(SEED)
    wrapper = UNetCFG1DWrapper(**config).eval()
    ours = UNet1d.from_config(config).eval()
    ours.load_state_dict(wrapper.model.state_dict(), strict=True)
    spec = {"batch": 1, "length": 32, "tokens": 79, "negative": True}
    inputs = make_inputs(config, spec, torch.Generator().manual_seed(0))
    reference = reference_outputs(wrapper, inputs)
    model_inputs = ModelInputs(cross_attn_cond=inputs["cross_attn_cond"],
                               cross_attn_mask=inputs["cross_attn_mask"])
    negative = ModelInputs(cross_attn_cond=inputs["negative_cross_attn_cond"],
                           cross_attn_mask=inputs["negative_cross_attn_mask"])
    kwargs = dict(model_inputs.__dict__)
    x, t = inputs["x"], inputs["t"]
    mine = {
        "output": ours(x, t, **kwargs),
        "output_cfg": guided_model_fn(ours, kwargs, unet_unconditional_inputs(model_inputs, None), CFG_SCALE,
                                      ours.default_cfg_rescale)(x, t),
        "output_cfg_negative": guided_model_fn(ours, kwargs,
                                               unet_unconditional_inputs(model_inputs, negative),
                                               CFG_SCALE, ours.default_cfg_rescale)(x, t),
    }
    worst = 0.0
    for key, value in reference.items():
        error = float((mine[key] - value).abs().max())
        worst = max(worst, error / max(1.0, float(value.abs().max())))
        print(f"{key}: max abs difference {error:.3e} (max|reference| {float(value.abs().max()):.3e})")
    return 0 if worst < 1e-4 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", type=int, default=0, help="compare N random configs instead of writing")
    parser.add_argument("--check-full", action="store_true", help="compare the full-size paper U-Net")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.check_full:
        return check_full()
    if args.check:
        return check(args.check)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        write_case(name, case)
    write_paper_keys()
    return 0


if __name__ == "__main__":
    sys.exit(main())
