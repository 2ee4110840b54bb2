"""The Stable Audio 3 diffusion transformer and its duration conditioner.

Reference values come from tests/fixtures/sa3_dit (written by tools/make_sa3_dit_fixtures.py with
stable-audio-3 at 636f906): tiny perturbed DiTs (plain attention, differential attention, and one
with the other builder switches), their state dicts in the checkpoint layout, inputs, the
reference's forward without guidance, with the padding mask, and with CFG/APG guidance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from stable_audio_core.errors import ConfigError
from stable_audio_core.models.attention import attention
from stable_audio_core.models.sa3_conditioning import ExpoNumberConditioner
from stable_audio_core.models.sa3_dit import ExpoFourierFeatures, SA3DiT, qk_norm_factory
from stable_audio_core.models.sa3_layers import SelfAttention, attend
from stable_audio_core.sampling.sa3 import guided_velocity

FIXTURES = Path(__file__).parent / "fixtures" / "sa3_dit"
CASES = ("plain", "differential", "variant")
PREFIX = "model.model."


def close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    # The project's parity tolerance: float32 on both sides, relative to the output's scale.
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    error = (ours - reference).abs().max().item()
    assert error <= tolerance, f"max abs error {error:.3e} > {tolerance:.3e}"


def load_case(name: str) -> tuple[dict, dict, dict]:
    with safe_open(str(FIXTURES / f"{name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return meta, tensors, {key[len(PREFIX):]: value.float() for key, value in tensors.items()
                           if key.startswith(PREFIX)}


def build(name: str) -> tuple[SA3DiT, dict, dict]:
    meta, tensors, state = load_case(name)
    model = SA3DiT.from_config(json.loads(meta["config"]), meta["objective"])
    model.load_state_dict(state, strict=True)
    inputs = {key[len("dit.in."):]: value for key, value in tensors.items() if key.startswith("dit.in.")}
    inputs["padding_mask"] = inputs["padding_mask"].bool()
    inputs["negative_cross_attn_mask"] = inputs["negative_cross_attn_mask"].bool()
    return model.eval(), inputs, tensors


# --- parity with the reference ------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_state_dict_has_the_reference_keys_shapes_and_order(case):
    meta, _, state = load_case(case)
    ours = SA3DiT.from_config(json.loads(meta["config"]), meta["objective"]).state_dict()
    assert list(ours) == json.loads(meta["state_dict_keys"])
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_the_reference_without_guidance(case):
    model, inputs, tensors = build(case)
    with torch.no_grad():
        out = model(inputs["x"], inputs["t"], inputs["cross_attn_cond"], inputs["global_cond"],
                    inputs["local_add_cond"])
    close(out, tensors["dit.out.plain"])


@pytest.mark.parametrize("case", CASES)
def test_forward_with_padding_mask_matches_the_reference_value_zeroing(case):
    model, inputs, tensors = build(case)
    with torch.no_grad():
        out = model(inputs["x"], inputs["t"], inputs["cross_attn_cond"], inputs["global_cond"],
                    inputs["local_add_cond"], inputs["padding_mask"])
    close(out, tensors["dit.out.padding_mask"])
    # The mask matters (item 1 has padded frames), so the check above is not vacuous.
    assert (tensors["dit.out.padding_mask"][1] - tensors["dit.out.plain"][1]).abs().max() > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_guided_calls_match_the_reference_forward(case):
    model, inputs, tensors = build(case)
    meta, _, _ = load_case(case)
    for name, spec in json.loads(meta["guidance"]).items():
        negative = spec["negative"]
        model_fn = guided_velocity(
            model, cross_attn_cond=inputs["cross_attn_cond"], global_embed=inputs["global_cond"],
            local_add_cond=inputs["local_add_cond"],
            padding_mask=inputs["padding_mask"] if spec.get("padding_mask") else None,
            negative_cross_attn_cond=inputs["negative_cross_attn_cond"] if negative else None,
            negative_cross_attn_mask=inputs["negative_cross_attn_mask"] if negative else None,
            cfg_scale=spec["cfg_scale"], apg_scale=spec["apg_scale"],
            cfg_interval=tuple(spec.get("cfg_interval", (0.0, 1.0))),
            norm_threshold=spec.get("cfg_norm_threshold", 0.0),
        )
        with torch.no_grad():
            out = model_fn(inputs["x"], inputs["t"])
        close(out, tensors[f"dit.out.{name}"])


def test_duration_conditioner_matches_the_reference():
    with safe_open(str(FIXTURES / "seconds_total.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    prefix = "conditioner.conditioners.seconds_total."
    config = dict(json.loads(meta["config"]), output_dim=int(meta["output_dim"]))
    conditioner = ExpoNumberConditioner.from_config(config)
    conditioner.load_state_dict({k[len(prefix):]: v.float() for k, v in tensors.items()
                                 if k.startswith(prefix)}, strict=True)
    tokens, mask = conditioner(tensors["cond.in.seconds_total"].tolist(), "cpu")
    close(tokens, tensors["cond.out.seconds_total"])
    assert mask.shape == (tokens.shape[0], 1) and bool(mask.all())


# --- properties ---------------------------------------------------------------------------------

def test_expo_fourier_features_span_half_to_ten_thousand_hertz_cosines_first():
    features = ExpoFourierFeatures(8)(torch.tensor([0.01]))
    freqs = torch.tensor([0.5 * (20000.0 ** (i / 3)) for i in range(4)], dtype=torch.float64)
    angles = 2 * math.pi * 0.01 * freqs
    expected = torch.cat([angles.cos(), angles.sin()]).float()
    # float32 angles up to 2 pi * 100 rad: their rounding (~1e-5 rad) bounds the error.
    torch.testing.assert_close(features[0], expected, atol=1e-4, rtol=0)


def test_duration_is_clamped_to_the_conditioner_range():
    conditioner = ExpoNumberConditioner(16, min_val=0, max_val=384)
    tokens, _ = conditioner([384.0, 1000.0, 0.0, -5.0], "cpu")
    torch.testing.assert_close(tokens[0], tokens[1])
    torch.testing.assert_close(tokens[2], tokens[3])


def test_padded_keys_stay_in_the_softmax_with_zero_value():
    torch.manual_seed(0)
    attn = SelfAttention(64, 32, qk_norm=qk_norm_factory("rms", 1e-6)).eval()
    x = torch.randn(1, 6, 64)
    mask = torch.tensor([[True, True, True, True, False, False]])
    with torch.no_grad():
        out = attn(x, padding_mask=mask)
        q, k, v = (part.view(1, 6, 2, 32).transpose(1, 2) for part in attn.to_qkv(x).chunk(3, -1))
        q, k = attn.q_norm(q), attn.k_norm(k)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), dim=-1)  # all 6 keys
        expected = attn.to_out((weights @ (v * mask[:, None, :, None])).transpose(1, 2).reshape(1, 6, 64))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_differential_attention_subtracts_two_maps_over_the_same_values():
    q, k, v, q2, k2 = torch.randn(5, 1, 2, 4, 32).unbind(0)
    torch.testing.assert_close(attend([q, q2], [k, k2], v),
                               attention(q, k, v) - attention(q2, k2, v))


def test_local_conditioning_is_embedded_even_when_all_zeros():
    model, inputs, _ = build("plain")
    x, t = inputs["x"], inputs["t"]
    with torch.no_grad():
        # Omitted, it is the all-zero input the reference's generate passes for text-to-audio.
        without = model(x, t, inputs["cross_attn_cond"], inputs["global_cond"])
        zeros = model(x, t, inputs["cross_attn_cond"], inputs["global_cond"],
                      torch.zeros_like(inputs["local_add_cond"]))
        for layer in model.transformer.layers:  # the zero input's embedding is the MLP's biases
            for linear in (layer.to_local_embed[0], layer.to_local_embed[2]):
                linear.bias.zero_()
        skipped = model(x, t, inputs["cross_attn_cond"], inputs["global_cond"])
    torch.testing.assert_close(without, zeros, atol=0, rtol=0)
    assert (zeros - skipped).abs().max() > 1e-3


def test_memory_tokens_take_the_first_rotary_positions():
    model, inputs, _ = build("plain")
    memory = model.transformer.memory_tokens.shape[0]
    # Rotary attention depends on relative positions only: had the latents restarted at
    # position 0 after the memory tokens, the output would differ.
    with torch.no_grad():
        reference = model(inputs["x"], inputs["t"], inputs["cross_attn_cond"], inputs["global_cond"])
        rotary = model.transformer.rotary_pos_emb
        original = rotary.forward
        rotary.forward = lambda n: torch.cat([original(memory), original(n - memory)])
        restarted = model(inputs["x"], inputs["t"], inputs["cross_attn_cond"], inputs["global_cond"])
        rotary.forward = original
        restored = model(inputs["x"], inputs["t"], inputs["cross_attn_cond"], inputs["global_cond"])
    assert (reference - restarted).abs().max() > 1e-3
    torch.testing.assert_close(reference, restored)


# --- building from configs ----------------------------------------------------------------------

def tiny_config(**overrides) -> dict:
    meta, _, _ = load_case("plain")
    return dict(json.loads(meta["config"]), **overrides)


def test_unknown_config_keys_are_refused_with_their_names():
    with pytest.raises(ConfigError, match="not_a_key"):
        SA3DiT.from_config(tiny_config(not_a_key=1), "rf_denoiser")
    with pytest.raises(ConfigError, match="typo"):
        SA3DiT.from_config(tiny_config(attn_kwargs={"qk_norm": "rms", "typo": 1}), "rf_denoiser")


@pytest.mark.parametrize("key, value", [("global_cond_type", "prepend"), ("patch_size", 2),
                                        ("timestep_features_type", "learned"), ("sliding_window", [1, 1]),
                                        ("norm_type", "dyt"), ("input_concat_dim", 4)])
def test_unsupported_options_are_refused_naming_the_supported_value(key, value):
    with pytest.raises(ConfigError, match=key):
        SA3DiT.from_config(tiny_config(**{key: value}), "rf_denoiser")


def test_heads_narrower_than_the_rotary_dim_are_refused():
    with pytest.raises(ConfigError, match="head dim 16"):
        SA3DiT.from_config(tiny_config(num_heads=8), "rf_denoiser")


# --- full size ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["small", "medium"])
def test_full_size_dit_has_the_reference_keys_shapes_and_parameter_count(name):
    # Reconstructed Small / Medium configs (SPEC.md g.1), built on the meta device on both sides.
    entry = json.loads((FIXTURES / "full_size_dit_keys.json").read_text())[name]
    with torch.device("meta"):
        model = SA3DiT.from_config(entry["config"], entry["objective"])
    state = model.state_dict()
    assert [[key, list(value.shape)] for key, value in state.items()] == entry["keys"]
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
