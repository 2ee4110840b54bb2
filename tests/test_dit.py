"""The diffusion transformer, its transformer blocks and the attention function.

Reference values come from tests/fixtures/dit (written by tools/make_dit_fixtures.py with
stable-audio-tools 0.0.19): tiny perturbed DiTs of the SAO 1.0 and SAO Small shapes and one with
the remaining options, their state dicts, inputs and the reference `_forward` outputs, plus the
key/shape lists of the full-size SAO 1.0 and SAO Small DiTs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from stable_audio_core.errors import ConfigError, InputError
from stable_audio_core.models.attention import attention
from stable_audio_core.models.dit import DiffusionTransformer
from stable_audio_core.models.transformer import RotaryEmbedding, apply_rotary

FIXTURES = Path(__file__).parent / "fixtures" / "dit"
CASES = ("sao_1_0_shape", "sao_small_shape", "adaln_prepend_concat_patch")
CONDITIONING = ("cross_attn_cond", "global_embed", "prepend_cond", "input_concat_cond")

# float32 on both sides with the same operations: the fixtures were reproduced bit for bit on
# torch 2.13 CPU; the margin covers other BLAS/SDPA kernels (summation order) on other machines.
TOLERANCE = 1e-5

SAO_1_0 = {"cond_token_dim": 768, "global_cond_dim": 1536, "project_cond_tokens": False,
           "transformer_type": "continuous_transformer", "io_channels": 64, "embed_dim": 1536,
           "depth": 24, "num_heads": 24}


def load_case(name: str) -> tuple[dict, str, dict, list[dict]]:
    with safe_open(str(FIXTURES / f"{name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    # Weights are stored as float16-representable values; the reference ran them in float32.
    state = {key[len("state."):]: value.float() for key, value in tensors.items() if key.startswith("state.")}
    runs = []
    for i in range(int(meta["inputs"])):
        prefix = f"{i}."
        runs.append({key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)})
    return json.loads(meta["config"]), meta["objective"], state, runs


def tiny_dit(**overrides) -> DiffusionTransformer:
    config = {"io_channels": 4, "embed_dim": 64, "depth": 1, "num_heads": 2, "cond_token_dim": 32,
              "project_cond_tokens": False, "global_cond_dim": 16}
    config.update(overrides)
    torch.manual_seed(0)
    model = DiffusionTransformer.from_config(config, "v")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


# --- parity with the reference --------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_state_dict_has_the_reference_keys_and_shapes(case):
    # (safetensors sorts keys; the full-size test below checks the order too)
    config, objective, state, _ = load_case(case)
    ours = DiffusionTransformer.from_config(config, objective).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference_forward(case):
    config, objective, state, runs = load_case(case)
    model = DiffusionTransformer.from_config(config, objective)
    model.load_state_dict(state, strict=True)
    model.eval()
    for run in runs:
        conditioning = {name: run[name] for name in CONDITIONING if name in run}
        with torch.no_grad():
            out = model(run["x"], run["t"], **conditioning)
        assert out.shape == run["output"].shape
        assert (out - run["output"]).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("name", ["sao_1_0", "sao_small"])
def test_full_size_model_has_reference_keys_shapes_and_parameter_count(name):
    record = json.loads((FIXTURES / f"{name}_dit_keys.json").read_text())
    with torch.device("meta"):
        model = DiffusionTransformer.from_config(record["config"], record["objective"])
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == record["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == record["parameter_count"]


def test_sao_1_0_has_1_056_828_544_parameters_and_grouped_cross_attention():
    with torch.device("meta"):
        model = DiffusionTransformer.from_config(SAO_1_0, "v")
    assert sum(p.numel() for p in model.parameters()) == 1_056_828_544
    cross = model.transformer.layers[0].cross_attn
    assert (cross.num_heads, cross.kv_heads) == (24, 12)
    assert model.transformer.rotary_pos_emb.inv_freq.shape == (16,)  # 32 of 64 channels rotate


# --- forward behaviour ----------------------------------------------------------------------

def test_masks_are_ignored_like_the_reference():
    model = tiny_dit()
    x, t, tokens, g = torch.randn(2, 4, 5), torch.rand(2), torch.randn(2, 3, 32), torch.randn(2, 16)
    mask = torch.tensor([[True, False, False], [True, True, False]])
    with torch.no_grad():
        plain = model(x, t, cross_attn_cond=tokens, global_embed=g)
        masked = model(x, t, cross_attn_cond=tokens, global_embed=g, cross_attn_cond_mask=mask)
    assert torch.equal(plain, masked)


def test_batch_items_are_independent():
    # Guidance stacks conditional and unconditional halves: each half must equal its own call.
    model = tiny_dit()
    x, t, tokens, g = torch.randn(2, 4, 5), torch.rand(2), torch.randn(2, 3, 32), torch.randn(2, 16)
    with torch.no_grad():
        both = model(x, t, cross_attn_cond=tokens, global_embed=g)
        first = model(x[:1], t[:1], cross_attn_cond=tokens[:1], global_embed=g[:1])
    assert (both[:1] - first).abs().max().item() < 1e-5  # different batch shapes, same float32 math


def test_scalar_time_is_broadcast_and_inputs_take_the_model_dtype():
    model = tiny_dit().to(torch.bfloat16)
    out = model(torch.randn(2, 4, 5), torch.tensor(0.5), cross_attn_cond=torch.randn(2, 3, 32),
                global_embed=torch.randn(2, 16))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 5)


@pytest.mark.parametrize("kwargs, message", [
    ({"prepend_cond": torch.randn(1, 2, 8)}, "prepend_cond"),
    ({"cross_attn_cond": torch.randn(1, 3, 31)}, "cross_attn_cond"),
    ({"global_embed": torch.randn(1, 1, 16)}, "global_embed"),
])
def test_forward_rejects_inputs_the_model_has_no_place_for(kwargs, message):
    with pytest.raises(InputError, match=message):
        tiny_dit()(torch.randn(1, 4, 5), torch.rand(1), **kwargs)


def test_forward_rejects_wrong_latent_channels_and_time_shape():
    model = tiny_dit()
    with pytest.raises(InputError, match=r"\[B, 4, L\]"):
        model(torch.randn(1, 3, 5), torch.rand(1))
    with pytest.raises(InputError, match="t must have shape"):
        model(torch.randn(2, 4, 5), torch.rand(3))


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_dit(depth=2).train()
    x, t, tokens = torch.randn(2, 4, 5), torch.rand(2), torch.randn(2, 3, 32)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.transformer.gradient_checkpointing = checkpointing
        model(x, t, cross_attn_cond=tokens).square().mean().backward()
        grads.append(model.transformer.layers[0].self_attn.to_qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)  # recomputation repeats the same float ops


# --- config ---------------------------------------------------------------------------------

def test_from_config_rejects_unknown_keys_listing_them_and_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['embed_dims'\].*allowed keys.*'embed_dim'"):
        DiffusionTransformer.from_config({**SAO_1_0, "embed_dims": 8}, "v")


@pytest.mark.parametrize("extra, named", [
    ({"conformer": True}, "conformer"),
    ({"num_memory_tokens": 4}, "num_memory_tokens"),
    ({"attn_kwargs": {"differential": True}}, "differential"),
    ({"attn_kwargs": {"qk_norm": "dyt"}}, "qk_norm"),
    ({"ff_kwargs": {"use_conv": True}}, "use_conv"),
    ({"ff_kwargs": {"mults": 2}}, "mults"),
    ({"transformer_type": "x-transformers"}, "transformer_type"),
    ({"timestep_cond_type": "input_concat", "timestep_embed_dim": 8}, "timestep_cond_type"),
    ({"global_cond_type": "add"}, "global_cond_type"),
])
def test_from_config_rejects_unsupported_options_by_name(extra, named):
    with pytest.raises(ConfigError, match=named):
        DiffusionTransformer.from_config({**SAO_1_0, "depth": 1, **extra}, "v")


def test_from_config_rejects_head_dim_below_the_rotary_minimum():
    with pytest.raises(ConfigError, match="head dim 16"):
        DiffusionTransformer.from_config({"io_channels": 4, "embed_dim": 64, "num_heads": 4, "depth": 1}, "v")


def test_from_config_rejects_context_width_not_splitting_into_heads():
    with pytest.raises(ConfigError, match="cond_token_dim"):
        DiffusionTransformer.from_config({"io_channels": 4, "embed_dim": 64, "num_heads": 2, "depth": 1,
                                          "cond_token_dim": 40, "project_cond_tokens": False}, "v")


def test_from_config_rejects_unknown_objective():
    with pytest.raises(ConfigError, match="diffusion_objective"):
        DiffusionTransformer.from_config(SAO_1_0, "epsilon")


# --- attention and rotary -------------------------------------------------------------------

def naive_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores.softmax(dim=-1) @ v


def test_attention_groups_query_heads_over_fewer_key_value_heads():
    q, k, v = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    expected = naive_attention(q, k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1))
    assert (attention(q, k, v) - expected).abs().max().item() < 1e-5  # float32 softmax reassociation


def test_attention_applies_bool_masks_float_biases_and_causality():
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    keep = torch.tensor([True, True, False, True])[None, None, None, :]
    assert (attention(q, k, v, keep) - naive_attention(q, k, v, keep)).abs().max() < 1e-5
    bias = torch.randn(1, 2, 4, 4)
    assert (attention(q, k, v, bias) - naive_attention(q, k, v, bias)).abs().max() < 1e-5
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    assert (attention(q, k, v, causal=True) - naive_attention(q, k, v, causal)).abs().max() < 1e-5
    both = attention(q, k, v, keep, causal=True)
    assert (both - naive_attention(q, k, v, keep & causal)).abs().max() < 1e-5


def test_attention_rejects_mismatched_shapes():
    with pytest.raises(InputError, match="multiple"):
        attention(torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))
    with pytest.raises(InputError, match="causal"):
        attention(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), causal=True)


def test_rotary_turns_only_the_leading_channels_and_keeps_their_norm():
    angles = RotaryEmbedding(32)(6)
    x = torch.randn(1, 2, 6, 64)
    y = apply_rotary(x, angles)
    assert torch.equal(y[..., 32:], x[..., 32:])
    assert torch.allclose(y[..., :32].norm(dim=-1), x[..., :32].norm(dim=-1), atol=1e-5)
    assert torch.allclose(y[:, :, 0], x[:, :, 0])  # position 0 is not rotated


def test_rotary_scores_depend_only_on_relative_position():
    rotary = RotaryEmbedding(32)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)
    angles = rotary(8)
    def score(i, j):
        return (apply_rotary(q, angles[i:i + 1]) * apply_rotary(k, angles[j:j + 1])).sum()
    assert torch.allclose(score(3, 1), score(7, 5), atol=1e-4)  # float32 angles up to 7 rad
