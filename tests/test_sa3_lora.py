"""Stable Audio 3 LoRA files applied at run time: stacked, with strengths, switched by flow time and
layer filter, and merged into plain weights.

Reference values come from tests/fixtures/sa3_lora (written by tools/make_sa3_lora_fixtures.py with
stable-audio-3 at 636f906): a tiny perturbed DiT and duration conditioner, LoRA files written the
reference's way (a DoRA on every layer, then a plain LoRA on the transformer blocks; one file per
adapter type), and the reference's outputs with its own loader, strengths, intervals and filter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from stable_audio_core.errors import CheckpointError, InputError
from stable_audio_core.lora import (
    applied_loras, apply_loras, expand_pattern, low_rank_delta, low_rank_update, merge_loras, read_lora_file,
    remove_loras,
)
from stable_audio_core.models.sa3_conditioning import ExpoNumberConditioner
from stable_audio_core.models.sa3_dit import SA3DiT

FIXTURES = Path(__file__).parent / "fixtures" / "sa3_lora"
with safe_open(str(FIXTURES / "model.safetensors"), framework="pt") as _f:
    META = _f.metadata()
    TENSORS = {key: _f.get_tensor(key) for key in _f.keys()}
STACK = json.loads(META["stack"])
CASES = json.loads(META["cases"])
VARIANTS = json.loads(META["variants"])
DIT_PREFIX = "model.model."
COND_PREFIX = "conditioner.conditioners.seconds_total."


def close(ours: torch.Tensor, reference: torch.Tensor, relative: float = 1e-4) -> None:
    # The project's parity tolerance: float32 on both sides, relative to the output's scale.
    tolerance = relative * max(1.0, reference.abs().max().item())
    error = (ours - reference).abs().max().item()
    assert error <= tolerance, f"max abs error {error:.3e} > {tolerance:.3e}"


def build() -> tuple[SA3DiT, ExpoNumberConditioner]:
    dit = SA3DiT.from_config(json.loads(META["config"]), META["objective"])
    dit.load_state_dict({k[len(DIT_PREFIX):]: v.float() for k, v in TENSORS.items() if k.startswith(DIT_PREFIX)})
    conditioner = ExpoNumberConditioner.from_config(json.loads(META["conditioner_config"]))
    conditioner.load_state_dict({k[len(COND_PREFIX):]: v.float() for k, v in TENSORS.items()
                                 if k.startswith(COND_PREFIX)})
    return dit.eval(), conditioner.eval()


def run(dit: SA3DiT, case: str) -> torch.Tensor:
    with torch.no_grad():
        return dit(TENSORS["dit.in.x"], TENSORS[f"dit.in.t.{case}"], TENSORS["dit.in.cross_attn_cond"],
                   TENSORS["dit.in.global_cond"], TENSORS["dit.in.local_add_cond"])


def seconds(conditioner: ExpoNumberConditioner) -> torch.Tensor:
    with torch.no_grad():
        return conditioner(TENSORS["cond.in.seconds_total"].tolist(), "cpu")[0]


def stack_specs() -> list[dict]:
    return [{"path": FIXTURES / s["file"], "strength": s["strength"], "interval": s["interval"],
             "layer_filter": s["layer_filter"]} for s in STACK]


def stacked() -> tuple[SA3DiT, ExpoNumberConditioner]:
    dit, conditioner = build()
    apply_loras(dit, stack_specs(), conditioners={"seconds_total": conditioner})
    return dit, conditioner


# --- parity with the reference ------------------------------------------------------------------

@pytest.mark.parametrize("case", ["both", "first", "second"])
def test_two_stacked_loras_with_strengths_interval_and_filter_match_the_reference(case):
    dit, _ = stacked()
    close(run(dit, case), TENSORS[f"dit.out.stack.{case}"])


def test_one_model_switches_its_loras_at_every_call_as_t_moves():
    # A sampler's sequence of calls on one model: the adapted weights kept between calls must
    # follow every switch of the active set.
    dit, _ = stacked()
    for case in ("both", "first", "first", "second", "none", "both"):
        close(run(dit, case), TENSORS[f"dit.out.{'base' if case == 'none' else 'stack'}.{case}"])


def test_which_loras_are_on_follows_the_first_items_t():
    # "both", "first" and "second" differ from each other: the interval switch really acts.
    outputs = {case: TENSORS[f"dit.out.stack.{case}"] for case in ("both", "first", "second")}
    assert min((outputs[a] - outputs[b]).abs().max() for a in outputs for b in outputs if a < b) > 0.1


def test_outside_every_interval_the_output_is_the_base_models():
    base, _ = build()
    dit, _ = stacked()
    assert torch.equal(run(dit, "none"), run(base, "none"))
    close(run(dit, "none"), TENSORS["dit.out.base.none"])


def test_conditioner_layers_are_adapted_and_not_gated_by_t():
    dit, conditioner = stacked()
    run(dit, "none")  # no LoRA on in the DiT; the conditioner's stays on
    close(seconds(conditioner), TENSORS["cond.out.stack"])
    assert (TENSORS["cond.out.stack"] - TENSORS["cond.out.base"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_adapter_type_matches_the_reference(name):
    dit, _ = build()
    apply_loras(dit, [(FIXTURES / f"variant_{name}.safetensors", float(META["variant_strength"]))])
    close(run(dit, "both"), TENSORS[f"dit.out.variant.{name}"])


def test_legacy_dora_type_is_resolved_by_the_magnitude_layout():
    assert read_lora_file(FIXTURES / "variant_dora_legacy_rows.safetensors").adapter_type == "dora-rows"
    assert read_lora_file(FIXTURES / "variant_dora_legacy_cols.safetensors").adapter_type == "dora-cols"


# --- merging --------------------------------------------------------------------------------------

def test_merged_checkpoint_gives_the_runtime_output():
    dit, conditioner = stacked()
    applied = applied_loras(dit)
    for index in range(len(applied)):
        applied.set_interval(index, (0.0, 1.0))
    runtime, runtime_seconds = run(dit, "both"), seconds(conditioner)
    close(runtime, TENSORS["dit.out.full"])

    merge_loras(dit)
    plain, plain_conditioner = build()
    assert list(dit.state_dict()) == list(plain.state_dict())  # a plain checkpoint: the base keys, in order
    plain.load_state_dict(dit.state_dict(), strict=True)
    plain_conditioner.load_state_dict(conditioner.state_dict(), strict=True)
    # The merged weights are the runtime's adapted weights (same float32 arithmetic); 1e-6 of the
    # scale leaves room for a different matmul blocking only.
    close(run(plain, "both"), runtime, relative=1e-6)
    close(seconds(plain_conditioner), runtime_seconds, relative=1e-6)
    close(run(plain, "both"), TENSORS["dit.out.merged"])
    close(seconds(plain_conditioner), TENSORS["cond.out.merged"])


def test_merging_an_interval_limited_lora_is_refused():
    dit, _ = stacked()
    with pytest.raises(InputError, match="set_interval"):
        merge_loras(dit)


# --- run-time control -------------------------------------------------------------------------------

def test_strength_zero_and_removal_give_the_base_model():
    base, _ = build()
    dit, _ = stacked()
    applied = applied_loras(dit)
    applied.set_strength(0, 0.0)
    applied.set_strength(1, 0.0)
    assert torch.equal(run(dit, "both"), run(base, "both"))
    applied.set_strength(0, STACK[0]["strength"])
    applied.set_strength(1, STACK[1]["strength"])
    close(run(dit, "both"), TENSORS["dit.out.stack.both"])
    remove_loras(dit)
    assert torch.equal(run(dit, "both"), run(base, "both"))
    assert list(dit.state_dict()) == list(base.state_dict())


def test_applying_files_one_call_at_a_time_stacks_them_in_order():
    dit, conditioner = build()
    specs = stack_specs()
    apply_loras(dit, specs[:1], conditioners={"seconds_total": conditioner})
    apply_loras(dit, specs[1:])
    close(run(dit, "both"), TENSORS["dit.out.stack.both"])


def test_layer_filter_patterns_expand_ranges():
    assert expand_pattern("layers.[0-2].ff") == ["layers.0.ff", "layers.1.ff", "layers.2.ff"]
    assert expand_pattern("layers.[1-0]") == ["layers.1", "layers.0"]


def test_training_and_runtime_loras_share_one_low_rank_delta():
    g = torch.Generator().manual_seed(0)
    x, down, up = torch.randn(3, 5, generator=g), torch.randn(2, 5, generator=g), torch.randn(4, 2, generator=g)
    torch.testing.assert_close(low_rank_update(x, down, up, 0.5), x @ low_rank_delta(up, down, 0.5).T)


# --- bad files ----------------------------------------------------------------------------------------

def rewrite(tmp_path: Path, source: str, *, tensors=None, metadata=None, edit=None) -> Path:
    with safe_open(str(FIXTURES / source), framework="pt") as f:
        original = {key: f.get_tensor(key) for key in f.keys()}
        meta = f.metadata()
    tensors = original if tensors is None else tensors
    if edit is not None:
        tensors, meta = edit(dict(tensors), dict(meta))
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=meta if metadata is None else metadata)
    return path


def test_a_file_without_lora_config_is_refused(tmp_path):
    path = rewrite(tmp_path, "variant_lora.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="no 'lora_config'"):
        read_lora_file(path)


def test_an_unknown_adapter_type_is_refused_with_the_supported_list(tmp_path):
    def edit(tensors, meta):
        config = json.loads(meta["lora_config"])
        config["adapter_type"] = "loha"
        return tensors, {"lora_config": json.dumps(config)}
    with pytest.raises(CheckpointError, match="unknown adapter_type 'loha'.*dora-rows"):
        read_lora_file(rewrite(tmp_path, "variant_lora.safetensors", edit=edit))


def test_a_layer_the_model_lacks_is_named(tmp_path):
    def edit(tensors, meta):
        return {key.replace("layers.1.", "layers.7."): value for key, value in tensors.items()}, meta
    dit, _ = build()
    with pytest.raises(CheckpointError, match="model.transformer.layers.7.self_attn.to_qkv"):
        apply_loras(dit, [rewrite(tmp_path, "variant_lora.safetensors", edit=edit)])
    assert applied_loras(dit) is None and list(dit.state_dict()) == list(build()[0].state_dict())


def test_a_shape_mismatch_is_named_with_both_shapes(tmp_path):
    def edit(tensors, meta):
        key = next(k for k in tensors if k.endswith("to_qkv.parametrizations.weight.0.lora_B"))
        tensors[key] = torch.zeros(7, tensors[key].shape[1], dtype=tensors[key].dtype)
        return tensors, meta
    dit, _ = build()
    with pytest.raises(CheckpointError, match=r"to_qkv.parametrizations.weight.0.lora_B: \(7, 3\)"):
        apply_loras(dit, [rewrite(tmp_path, "variant_lora.safetensors", edit=edit)])


def test_a_file_missing_layers_its_include_selects_is_refused(tmp_path):
    def edit(tensors, meta):
        return {k: v for k, v in tensors.items() if "preprocess_conv" not in k}, meta
    dit, _ = build()
    with pytest.raises(CheckpointError, match="model.preprocess_conv"):
        apply_loras(dit, [rewrite(tmp_path, "variant_lora.safetensors", edit=edit)])


def test_conditioner_layers_need_the_conditioners():
    dit, _ = build()
    with pytest.raises(CheckpointError, match="conditioners=.*conditioners.seconds_total.embedder.embedding.1"):
        apply_loras(dit, [FIXTURES / STACK[0]["file"]])
    assert applied_loras(dit) is None


def test_bad_strength_and_interval_are_refused():
    dit, _ = build()
    with pytest.raises(InputError, match="strength"):
        apply_loras(dit, [(FIXTURES / "variant_lora.safetensors", "strong")])
    with pytest.raises(InputError, match="low > high"):
        apply_loras(dit, [{"path": FIXTURES / "variant_lora.safetensors", "interval": (0.8, 0.2)}])
