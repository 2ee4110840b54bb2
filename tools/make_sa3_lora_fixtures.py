"""Write the SA3 runtime-LoRA parity fixtures (tests/fixtures/sa3_lora/) with stable-audio-3.

Runs in the SA3 reference venv (see ../shared/reference-env/sa3/README.md), not in CI:

    /tmp/sa3-ref/bin/python tools/make_sa3_lora_fixtures.py [OUT_DIR]

A tiny SA3 DiT (the structure of tests/fixtures/sa3_dit's "plain" case, two blocks) and a
duration conditioner, every parameter filled from a seeded generator (float16-representable
values), stand in for `model.model` and `model.conditioner` of a loaded SA3 model. LoRA files are
written the reference's way (`add_lora` with `LoRAParametrization`, adapter tensors perturbed from
a seeded generator, `get_lora_state_dict` of both modules, `save_lora_safetensors`) and applied by
the reference's `load_and_apply_loras`; strengths through `set_lora_strength`, the per-LoRA
interval and layer filter through the DiT's `lora_configs` argument.

Files:
- `lora_0.safetensors`: DoRA rows (rank 2, alpha 3) on every Linear and Conv1d of the DiT and of
  the conditioner; `lora_1.safetensors`: plain LoRA (rank 4, alpha 8) on `transformer.layers`
  minus `to_local_embed`. They are the stack of STACK (strengths, intervals, layer filter).
- `variant_<name>.safetensors`: one LoRA per adapter type the reference ships (VARIANTS), each on
  a few layers including a Conv1d; `dora_legacy_*` are adapter_type "dora" files whose magnitude
  shape picks the variant.
- `model.safetensors`: `model.model.<key>` (DiT) and `conditioner.conditioners.seconds_total.<key>`
  (float16 values, the checkpoint layout); inputs `dit.in.{x, cross_attn_cond, global_cond,
  local_add_cond}`, `dit.in.t.<case>` and `cond.in.seconds_total`; outputs
  `dit.out.base.<case>` (no LoRA), `dit.out.stack.<case>` (the stack gated by t: which LoRAs are
  on depends on t[0]), `dit.out.full` (the stack with both intervals widened to [0, 1]),
  `dit.out.merged` (that state folded into plain weights, what the reference's `merge_lora`
  does), `cond.out.base`,
  `cond.out.stack`, `cond.out.merged`, and `dit.out.variant.<name>` (each variant alone at
  strength VARIANT_STRENGTH, t of case "both").
The metadata holds the DiT config, objective, STACK, the cases' t and the variants as JSON.
"""

from __future__ import annotations

import copy
import json
import sys
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sa3_dit_fixtures import dit_config, dit_inputs, randomize_  # noqa: E402

from stable_audio_3.models.conditioners import MultiConditioner, NumberConditioner  # noqa: E402
from stable_audio_3.models.diffusion import DiTWrapper  # noqa: E402
from stable_audio_3.models.lora import (LoRAParametrization, add_lora, get_lora_state_dict,  # noqa: E402
                                        load_and_apply_loras, save_lora_safetensors,
                                        set_lora_strength)

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "fixtures" / "sa3_lora"
CONFIG = dit_config(embed_dim=64, num_heads=1, depth=2)
OBJECTIVE = "rf_denoiser"
SEED = 50
SECONDS = [0.0, 3.0, 47.5, 500.0]

# The stack: file, how it was trained (adapter type, rank, alpha, include, exclude), and how it is run.
STACK = [
    {"file": "lora_0.safetensors", "adapter_type": "dora-rows", "rank": 2, "alpha": 3,
     "include": None, "exclude": None,
     "strength": 1.3, "interval": [0.2, 0.9], "layer_filter": "transformer.layers.[1-1].cross_attn, to_global_embed"},
    {"file": "lora_1.safetensors", "adapter_type": "lora", "rank": 4, "alpha": 8,
     "include": ["transformer.layers"], "exclude": ["to_local_embed"],
     "strength": 0.7, "interval": [0.5, 1.0], "layer_filter": ""},
]
# The broader LoRA comes first: the reference loads LoRA i's tensors into parametrization slot i of
# each layer, so on a layer lacking an earlier LoRA they miss their slot and are silently dropped.
# t per case (the reference gates on t[0]): both LoRAs on, only the first, only the second, none.
CASES = {"both": [0.6, 0.2], "first": [0.3, 0.9], "second": [0.95, 0.5], "none": [0.1, 0.7]}

VARIANT_INCLUDE = ["layers.1.self_attn.to_qkv", "layers.0.ff.ff.2", "preprocess_conv"]
VARIANTS = {name: {"adapter_type": name, "rank": 3, "alpha": 5} for name in (
    "lora", "dora-rows", "dora-cols", "bora", "lora-xs", "dora-rows-xs", "dora-cols-xs", "bora-xs")}
VARIANTS["dora_legacy_rows"] = {"adapter_type": "dora", "rank": 2, "alpha": 2, "magnitude": "1d"}
VARIANTS["dora_legacy_cols"] = {"adapter_type": "dora", "rank": 2, "alpha": 2, "magnitude": "row_vector",
                                "trained_as": "dora-cols"}
VARIANT_STRENGTH = 0.8


class Holder(nn.Module):
    """What `load_and_apply_loras` expects of a diffusion_cond model: `.model` and `.conditioner`."""

    def __init__(self, dit: nn.Module, conditioner: nn.Module):
        super().__init__()
        self.model = dit
        self.conditioner = conditioner


def perturb_adapters_(module: nn.Module, g: torch.Generator) -> None:
    """Every adapter tensor away from its initial value (lora_B starts at zero, M_xs too)."""
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("lora_A", "lora_B"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif leaf == "M_xs":
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif leaf.startswith("magnitude"):
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))


def write_lora(holder: Holder, path: Path, *, adapter_type: str, rank: int, alpha: float,
               include, exclude, seed: int, trained_as: str | None = None, magnitude: str | None = None) -> None:
    tmp = copy.deepcopy(holder)
    kind = trained_as or adapter_type
    factory = {nn.Linear: {"weight": partial(LoRAParametrization.from_linear, rank=rank, lora_alpha=alpha,
                                             adapter_type=kind)},
               nn.Conv1d: {"weight": partial(LoRAParametrization.from_conv1d, rank=rank, lora_alpha=alpha,
                                             adapter_type=kind)}}
    torch.manual_seed(seed)  # lora_A's kaiming draw; overwritten below anyway
    add_lora(tmp.model, factory, include=include, exclude=exclude)
    add_lora(tmp.conditioner, factory, include=include, exclude=exclude)
    g = torch.Generator().manual_seed(seed)
    perturb_adapters_(tmp, g)
    state = {**get_lora_state_dict(tmp.model), **get_lora_state_dict(tmp.conditioner)}
    if magnitude == "row_vector":  # the old 2-D layout: (1, fan_in) for columns
        state = {k: v.unsqueeze(0) if k.endswith(".magnitude") else v for k, v in state.items()}
    assert state, f"no layer matched {include} / {exclude}"
    save_lora_safetensors(state, {"rank": rank, "alpha": alpha, "adapter_type": adapter_type,
                                  "include": include, "exclude": exclude}, path)


def fold_parametrizations_(module: nn.Module) -> None:
    for layer in list(module.modules()):
        if parametrize.is_parametrized(layer):
            for attr in list(layer.parametrizations.keys()):
                parametrize.remove_parametrizations(layer, attr, leave_parametrized=True)


def build() -> Holder:
    torch.manual_seed(0)
    dit = DiTWrapper(diffusion_objective=OBJECTIVE, modular_local_cond_configs=[], **CONFIG).eval()
    randomize_(dit, SEED)
    number = NumberConditioner(output_dim=CONFIG["global_cond_dim"], min_val=0, max_val=384,
                               fourier_features_type="expo")
    randomize_(number, SEED + 1)
    return Holder(dit, MultiConditioner({"seconds_total": number})).eval()


def run_dit(holder: Holder, inputs: dict, t: list[float], lora_configs=None) -> torch.Tensor:
    extra = {} if lora_configs is None else {"lora_configs": lora_configs}
    with torch.no_grad():
        return holder.model(inputs["x"], torch.tensor(t), cross_attn_cond=inputs["cross_attn_cond"],
                            global_cond=inputs["global_cond"], local_add_cond=inputs["local_add_cond"], **extra)


def run_conditioner(holder: Holder) -> torch.Tensor:
    with torch.no_grad():
        return holder.conditioner.conditioners["seconds_total"](SECONDS, "cpu")[0]


def main() -> None:
    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    holder = build()
    g = torch.Generator().manual_seed(SEED + 1000)
    inputs = dit_inputs(CONFIG, g)

    tensors = {}
    parameters = {key for key, _ in holder.named_parameters()}
    for key, value in holder.model.state_dict().items():
        tensors[f"model.{key}"] = value.half() if f"model.{key}" in parameters else value
    for key, value in holder.conditioner.state_dict().items():
        tensors[f"conditioner.{key}"] = value.half()
    for key in ("x", "cross_attn_cond", "global_cond", "local_add_cond"):
        tensors[f"dit.in.{key}"] = inputs[key]
    tensors["cond.in.seconds_total"] = torch.tensor(SECONDS, dtype=torch.float64)
    for case, t in CASES.items():
        tensors[f"dit.in.t.{case}"] = torch.tensor(t)
        tensors[f"dit.out.base.{case}"] = run_dit(holder, inputs, t)
    tensors["cond.out.base"] = run_conditioner(holder)

    # Each variant alone, on a fresh copy of the model.
    for index, (name, spec) in enumerate(VARIANTS.items()):
        path = out_dir / f"variant_{name}.safetensors"
        write_lora(holder, path, adapter_type=spec["adapter_type"], rank=spec["rank"], alpha=spec["alpha"],
                   include=VARIANT_INCLUDE, exclude=None, seed=SEED + 100 + index,
                   trained_as=spec.get("trained_as"), magnitude=spec.get("magnitude"))
        single = copy.deepcopy(holder)
        load_and_apply_loras(single, [str(path)], "diffusion_cond")
        set_lora_strength(single.model, VARIANT_STRENGTH)
        set_lora_strength(single.conditioner, VARIANT_STRENGTH)
        tensors[f"dit.out.variant.{name}"] = run_dit(
            single, inputs, CASES["both"], [{"lora_index": 0, "interval": (0, 1), "layer_filter": ""}])

    # The stack, gated by t.
    for index, spec in enumerate(STACK):
        write_lora(holder, out_dir / spec["file"], adapter_type=spec["adapter_type"], rank=spec["rank"],
                   alpha=spec["alpha"], include=spec["include"], exclude=spec["exclude"], seed=SEED + 200 + index)
    stacked = copy.deepcopy(holder)
    load_and_apply_loras(stacked, [str(out_dir / spec["file"]) for spec in STACK], "diffusion_cond")
    for index, spec in enumerate(STACK):
        set_lora_strength(stacked.model, spec["strength"], lora_index=index)
        set_lora_strength(stacked.conditioner, spec["strength"], lora_index=index)
    gated = [{"lora_index": i, "interval": tuple(s["interval"]), "layer_filter": s["layer_filter"]}
             for i, s in enumerate(STACK)]
    for case, t in CASES.items():
        tensors[f"dit.out.stack.{case}"] = run_dit(stacked, inputs, t, gated)
    tensors["cond.out.stack"] = run_conditioner(stacked)
    always = [dict(c, interval=(0, 1)) for c in gated]
    tensors["dit.out.full"] = run_dit(stacked, inputs, CASES["both"], always)
    # Fold the parametrizations as they stand after that call (filtered layers off). The reference's
    # merge_lora means this but fails at 636f906 (it removes keys while iterating over them).
    fold_parametrizations_(stacked)
    tensors["dit.out.merged"] = run_dit(stacked, inputs, CASES["both"])
    tensors["cond.out.merged"] = run_conditioner(stacked)

    metadata = {"config": json.dumps(CONFIG), "objective": OBJECTIVE, "stack": json.dumps(STACK),
                "cases": json.dumps(CASES), "variants": json.dumps(VARIANTS),
                "variant_strength": str(VARIANT_STRENGTH), "conditioner_config": json.dumps(
                    {"output_dim": CONFIG["global_cond_dim"], "min_val": 0, "max_val": 384,
                     "fourier_features_type": "expo"})}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"), metadata=metadata)
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    for case in CASES:
        diff = (tensors[f"dit.out.stack.{case}"] - tensors[f"dit.out.base.{case}"]).abs().max().item()
        print(f"case {case}: |stack - base| = {diff:.3e}")
    for name in VARIANTS:
        diff = (tensors[f"dit.out.variant.{name}"] - tensors["dit.out.base.both"]).abs().max().item()
        print(f"variant {name}: |variant - base| = {diff:.3e}")
    print(f"|merged - full| = {(tensors['dit.out.merged'] - tensors['dit.out.full']).abs().max().item():.3e}")
    print(f"{out_dir}: {total} bytes")


if __name__ == "__main__":
    main()
