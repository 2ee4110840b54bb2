"""Write the DiT parity fixtures (tests/fixtures/dit/) with stable-audio-tools 0.0.19.

Runs in the reference venv, not in CI:

    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_dit_fixtures.py             # write
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_dit_fixtures.py --check 12  # compare
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_dit_fixtures.py --check-full

Writing: for each tiny config in CASES, builds the reference DiffusionTransformer exactly as
DiTWrapper does (`DiffusionTransformer(diffusion_objective=..., **config)`), perturbs every
parameter by 0.05 * randn (rounded to float16-representable values so the state dict is stored
losslessly in half the bytes; the reference then runs in float32), and saves `<case>.safetensors`
holding `state.<key>` (the full state dict, buffers included), per input set `<i>.x`, `<i>.t`,
`<i>.<conditioning>` and `<i>.output` (the reference's `_forward`, i.e. no guidance); the config
and objective sit in the file's metadata. `sao_1_0_dit_keys.json` / `sao_small_dit_keys.json` hold
the key -> shape list and parameter count of the full-size models, built on the meta device.

--check N: builds N random tiny configs (several seeds, sizes and options), loads the same weights
into stable_audio_core (imported from this checkout) and prints the max abs differences.
--check-full: the same for the full-size SAO 1.0 DiT on one short input (about 10 GB of RAM).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from stable_audio_tools.models.dit import DiffusionTransformer as ReferenceDiT

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "fixtures" / "dit"
SEED = 20240611

# model.diffusion.config of Stable Audio Open 1.0 (objective "v").
SAO_1_0 = {"cond_token_dim": 768, "global_cond_dim": 1536, "project_cond_tokens": False,
           "transformer_type": "continuous_transformer", "io_channels": 64, "embed_dim": 1536,
           "depth": 24, "num_heads": 24}
# model.diffusion.config of Stable Audio Open Small (objective "rf_denoiser"), reconstructed from
# public ports of its model_config.json (T5 tokens projected to the width, LayerNorm on q and k per
# head); it gives 340,879,488 parameters, the model card's 341M.
SAO_SMALL = {"io_channels": 64, "embed_dim": 1024, "depth": 16, "num_heads": 8,
             "cond_token_dim": 768, "global_cond_dim": 768,
             "transformer_type": "continuous_transformer", "attn_kwargs": {"qk_norm": "ln"}}

# Tiny configs. head dim >= 32 (the reference's rotary embedding needs it).
CASES = {
    # SAO 1.0's shape: unprojected tokens -> grouped-query cross-attention (2 query heads over 1
    # key/value head), global embedding prepended as a token, rotary over the whole 32-wide head.
    "sao_1_0_shape": {
        "objective": "v",
        "config": {"io_channels": 4, "embed_dim": 64, "depth": 1, "num_heads": 2,
                   "cond_token_dim": 32, "project_cond_tokens": False, "global_cond_dim": 16,
                   "transformer_type": "continuous_transformer", "ff_kwargs": {"mult": 1}},
        "inputs": [{"batch": 2, "length": 7, "tokens": 5}, {"batch": 1, "length": 12, "tokens": 3}],
    },
    # SAO Small's shape: projected tokens, q/k LayerNorm, head dim 64 so rotary covers half of it.
    "sao_small_shape": {
        "objective": "rf_denoiser",
        "config": {"io_channels": 4, "embed_dim": 64, "depth": 1, "num_heads": 1,
                   "cond_token_dim": 32, "global_cond_dim": 16,
                   "transformer_type": "continuous_transformer", "attn_kwargs": {"qk_norm": "ln"},
                   "ff_kwargs": {"mult": 1}},
        "inputs": [{"batch": 2, "length": 9, "tokens": 4}, {"batch": 3, "length": 5, "tokens": 6}],
    },
    # The other supported options: adaLN global conditioning, prepend tokens, input-concat channels
    # (resized from another length), patches of 2, l2 q/k norm, plain SiLU MLP without bias, norms
    # with bias, cross-attention only in the first block.
    "adaln_prepend_concat_patch": {
        "objective": "rectified_flow",
        "config": {"io_channels": 4, "embed_dim": 32, "depth": 2, "num_heads": 1, "patch_size": 2,
                   "cond_token_dim": 32, "project_cond_tokens": False, "global_cond_dim": 16,
                   "global_cond_type": "adaLN", "prepend_cond_dim": 8, "input_concat_dim": 3,
                   "final_cross_attn_ix": 0, "attn_kwargs": {"qk_norm": "l2"},
                   "ff_kwargs": {"mult": 0.5, "glu": False, "no_bias": True},
                   "norm_kwargs": {"bias": True, "eps": 1e-4}},
        "inputs": [{"batch": 2, "length": 8, "tokens": 3, "prepend": 2, "concat_length": 4},
                   {"batch": 1, "length": 6, "tokens": 4, "prepend": 1, "concat_length": 6}],
    },
}


def build_reference(config: dict, objective: str, seed: int) -> ReferenceDiT:
    torch.manual_seed(seed)
    model = ReferenceDiT(diffusion_objective=objective, **config)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())  # exactly representable in the float16 fixture
    return model.eval()


def make_inputs(config: dict, spec: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch, length = spec["batch"], spec["length"]
    inputs = {"x": torch.randn(batch, config["io_channels"], length, generator=g),
              "t": torch.rand(batch, generator=g)}
    if config.get("cond_token_dim", 0):
        inputs["cross_attn_cond"] = torch.randn(batch, spec["tokens"], config["cond_token_dim"], generator=g)
    if config.get("global_cond_dim", 0):
        inputs["global_embed"] = torch.randn(batch, config["global_cond_dim"], generator=g)
    if config.get("prepend_cond_dim", 0):
        inputs["prepend_cond"] = torch.randn(batch, spec["prepend"], config["prepend_cond_dim"], generator=g)
    if config.get("input_concat_dim", 0):
        concat_length = spec.get("concat_length", length)
        inputs["input_concat_cond"] = torch.randn(batch, config["input_concat_dim"], concat_length,
                                                  generator=g)
    return inputs


def reference_forward(model: ReferenceDiT, inputs: dict) -> torch.Tensor:
    extra = {}
    if "prepend_cond" in inputs:  # the reference concatenates this mask when it prepends the global token
        extra["prepend_cond_mask"] = torch.ones(inputs["prepend_cond"].shape[:2], dtype=torch.bool)
    with torch.no_grad():
        return model._forward(**inputs, **extra)


def write_fixtures() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for index, (name, case) in enumerate(CASES.items()):
        model = build_reference(case["config"], case["objective"], SEED + 100 * index)
        tensors = {f"state.{k}": v.half() if v.is_floating_point() and k != "transformer.rotary_pos_emb.inv_freq"
                   else v for k, v in model.state_dict().items()}
        for i, spec in enumerate(case["inputs"]):
            inputs = make_inputs(case["config"], spec, SEED + 100 * index + 10 + i)
            tensors.update({f"{i}.{k}": v for k, v in inputs.items()})
            tensors[f"{i}.output"] = reference_forward(model, inputs)
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        metadata = {"config": json.dumps(case["config"]), "objective": case["objective"],
                    "inputs": str(len(case["inputs"])), "source": "stable-audio-tools 0.0.19"}
        path = OUT_DIR / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size / 1024:.0f} KiB)")

    for name, config, objective in (("sao_1_0", SAO_1_0, "v"), ("sao_small", SAO_SMALL, "rf_denoiser")):
        with torch.device("meta"):
            model = ReferenceDiT(diffusion_objective=objective, **config)
        record = {
            "source": "stable-audio-tools 0.0.19 DiffusionTransformer (checkpoint prefix model.model.)",
            "config": config, "objective": objective,
            "parameter_count": sum(p.numel() for p in model.parameters()),
            "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        }
        path = OUT_DIR / f"{name}_dit_keys.json"
        path.write_text(json.dumps(record, indent=0) + "\n")
        print(f"wrote {path.relative_to(REPO)}: {len(record['state_dict'])} keys, "
              f"{record['parameter_count']:,} parameters")


def random_case(rng: random.Random) -> tuple[dict, str, dict]:
    heads = rng.choice([1, 2, 3])
    head_dim = rng.choice([32, 48, 64])
    embed = heads * head_dim
    config = {"io_channels": rng.choice([2, 4, 6]), "embed_dim": embed, "num_heads": heads,
              "depth": rng.choice([1, 2, 3]), "patch_size": rng.choice([1, 1, 2])}
    if rng.random() < 0.8:
        # Unprojected tokens need a width giving a key/value head count that divides the heads.
        config["cond_token_dim"] = rng.choice([head_dim, embed, 40])
        config["project_cond_tokens"] = rng.random() < 0.5 or config["cond_token_dim"] == 40
    if rng.random() < 0.8:
        config["global_cond_dim"] = rng.choice([8, 24])
        config["global_cond_type"] = rng.choice(["prepend", "adaLN"])
    if rng.random() < 0.4:
        config["prepend_cond_dim"] = 6
    if rng.random() < 0.3:
        config["input_concat_dim"] = 2
    config["attn_kwargs"] = {"qk_norm": rng.choice(["none", "ln", "l2"])}
    config["ff_kwargs"] = {"mult": rng.choice([1, 2, 4]), "glu": rng.random() < 0.8,
                           "no_bias": rng.random() < 0.3}
    config["norm_kwargs"] = {"bias": rng.random() < 0.3, "force_fp32": rng.random() < 0.3}
    if rng.random() < 0.2:
        config["rotary_pos_emb"] = False
    if config["depth"] > 1 and rng.random() < 0.3:
        config["final_cross_attn_ix"] = 0
    spec = {"batch": rng.choice([1, 2, 3]), "length": config["patch_size"] * rng.choice([3, 8, 17]),
            "tokens": rng.choice([1, 5, 9]), "prepend": rng.choice([1, 3]),
            "concat_length": rng.choice([4, 10])}
    return config, rng.choice(["v", "rectified_flow", "rf_denoiser"]), spec


def ours_from(reference: ReferenceDiT, config: dict, objective: str):
    sys.path.insert(0, str(REPO))
    from stable_audio_core.models.dit import DiffusionTransformer
    model = DiffusionTransformer.from_config(config, objective)
    ref_state = reference.state_dict()
    ours_state = model.state_dict()
    assert list(ref_state) == list(ours_state), (set(ref_state) ^ set(ours_state))
    assert all(ref_state[k].shape == ours_state[k].shape for k in ref_state)
    model.load_state_dict(ref_state)
    return model.eval()


def check_random(count: int) -> None:
    rng = random.Random(SEED)
    worst = 0.0
    for i in range(count):
        config, objective, spec = random_case(rng)
        reference = build_reference(config, objective, SEED + i)
        ours = ours_from(reference, config, objective)
        inputs = make_inputs(config, spec, SEED + 1000 + i)
        expected = reference_forward(reference, inputs)
        with torch.no_grad():
            actual = ours(**inputs)
        err = (actual - expected).abs().max().item()
        worst = max(worst, err)
        print(f"case {i:2d}: max abs err {err:.2e} (output max {expected.abs().max().item():.2f}) {config}")
    print(f"worst max abs err over {count} random configs: {worst:.2e}")


def check_full() -> None:
    torch.manual_seed(SEED)
    reference = ReferenceDiT(diffusion_objective="v", **SAO_1_0)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.02 * torch.randn(p.shape))
    reference.eval()
    ours = ours_from(reference, SAO_1_0, "v")
    print(f"parameters: {sum(p.numel() for p in ours.parameters()):,}")
    inputs = make_inputs(SAO_1_0, {"batch": 2, "length": 32, "tokens": 130}, SEED)
    expected = reference_forward(reference, inputs)
    with torch.no_grad():
        actual = ours(**inputs)
    print(f"full SAO 1.0: max abs err {(actual - expected).abs().max().item():.2e} "
          f"(output max {expected.abs().max().item():.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", type=int, default=0, metavar="N")
    parser.add_argument("--check-full", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.check:
        check_random(args.check)
    elif args.check_full:
        check_full()
    else:
        write_fixtures()


if __name__ == "__main__":
    main()
