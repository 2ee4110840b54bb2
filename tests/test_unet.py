"""The 1-D U-Net of Stable Audio 1.0 (adp_cfg_1d) and its classifier-free guidance.

Reference values come from tests/fixtures/unet (written by tools/make_unet_fixtures.py with
stable-audio-tools 0.0.19): tiny perturbed U-Nets of the paper's shape and with the remaining
options, their state dicts, inputs and the reference wrapper's outputs without guidance, with
guidance as generate_diffusion_cond calls it (batch_cfg, rescale_cfg) and with a negative prompt;
plus the key/shape list of the paper's full-size U-Net.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from stable_audio_core.config import load_model_config
from stable_audio_core.errors import ConfigError, InputError
from stable_audio_core.models.stable_audio import ModelInputs, unet_unconditional_inputs
from stable_audio_core.models.unet import UNet1d
from stable_audio_core.sampling.guidance import guided_model_fn

from helpers import ROOT, perturbed_model, tiny_config

FIXTURES = Path(__file__).parent / "fixtures" / "unet"
CASES = ("paper_shape", "options_global_concat_xattn_time", "no_time_concat_level1")
PAPER_CONFIG = ROOT / "stable_audio_core" / "configs" / "stable_audio_paper_unet.json"
CONDITIONING = ("cross_attn_cond", "cross_attn_mask", "global_embed", "input_concat_cond")

# float32 on both sides, same operations up to the attention kernel (SDPA vs the reference's
# einsum/softmax); measured below 1e-6 here. Errors are per unit of max(1, max|reference|), as in
# the parity check, because guidance scales outputs by the CFG scale.
TOLERANCE = 1e-5

SMALL = {"in_channels": 4, "context_embedding_features": 8, "context_embedding_max_length": 4,
         "channels": 32, "resnet_groups": 4, "multipliers": [1, 1, 1], "factors": [1, 2],
         "num_blocks": [1, 1], "attentions": [1, 0, 1], "attention_heads": 2, "attention_multiplier": 1}


def load_case(name: str) -> tuple[dict, dict, list[dict], float]:
    with safe_open(str(FIXTURES / f"{name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    # Weights are stored as float16-representable values; the reference ran them in float32.
    state = {key[len("state."):]: value.float() for key, value in tensors.items() if key.startswith("state.")}
    runs = []
    for i in range(int(meta["inputs"])):
        prefix = f"{i}."
        runs.append({key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)})
    return json.loads(meta["config"]), state, runs, float(meta["cfg_scale"])


def case_model(name: str) -> tuple[UNet1d, list[dict], float]:
    config, state, runs, scale = load_case(name)
    model = UNet1d.from_config(config).eval()
    model.load_state_dict(state, strict=True)
    return model, runs, scale


def relative_error(mine: torch.Tensor, reference: torch.Tensor) -> float:
    return float((mine - reference).abs().max()) / max(1.0, float(reference.abs().max()))


def model_inputs(run: dict) -> ModelInputs:
    return ModelInputs(**{name: run.get(name) for name in CONDITIONING})


def small_unet(seed: int = 0, **overrides) -> UNet1d:
    torch.manual_seed(seed)
    model = UNet1d.from_config({**SMALL, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


# --- the reference's keys, shapes and sizes ---------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_state_dict_keys_and_shapes_equal_the_reference(name):
    config, state, _, _ = load_case(name)
    ours = UNet1d.from_config(config).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_paper_unet_keys_and_shapes_equal_the_reference():
    reference = json.loads((FIXTURES / "paper_unet_keys.json").read_text())
    config = load_model_config(PAPER_CONFIG).diffusion_config
    assert config == reference["config"]
    with torch.device("meta"):
        model = UNet1d.from_config(config)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == reference["keys"]


def test_paper_unet_has_907M_parameters():
    reference = json.loads((FIXTURES / "paper_unet_keys.json").read_text())
    with torch.device("meta"):
        model = UNet1d.from_config(load_model_config(PAPER_CONFIG).diffusion_config)
    total = sum(p.numel() for p in model.parameters())
    assert total == reference["parameters"] == 906_679_744
    assert abs(total - 907e6) <= 0.01 * 907e6  # the paper's "907M"


def test_count_params_tool_reports_the_paper_unet_total():
    from tools.count_params import backbone_parameter_counts   # the repository root is on sys.path (conftest)
    counts = backbone_parameter_counts(PAPER_CONFIG)
    assert sum(counts.values()) == 906_679_744
    assert set(counts) >= {"downsamples", "bottleneck", "upsamples", "fixed_embedding"}


# --- outputs against the reference -----------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_output_without_guidance_matches_the_reference(name):
    model, runs, _ = case_model(name)
    for run in runs:
        with torch.no_grad():
            out = model(run["x"], run["t"], **model_inputs(run).__dict__)
        assert out.shape == run["output"].shape
        assert relative_error(out, run["output"]) < TOLERANCE


@pytest.mark.parametrize("name", CASES)
def test_guidance_against_the_learned_unconditional_embedding_matches_the_reference(name):
    model, runs, scale = case_model(name)
    for run in runs:
        inputs = model_inputs(run)
        model_fn = guided_model_fn(model, dict(inputs.__dict__), unet_unconditional_inputs(inputs, None),
                                   scale, model.default_cfg_rescale)
        with torch.no_grad():
            assert relative_error(model_fn(run["x"], run["t"]), run["output_cfg"]) < TOLERANCE


@pytest.mark.parametrize("name", [n for n in CASES if "xattn_time" not in n])
def test_negative_prompt_guidance_matches_the_reference(name):
    model, runs, scale = case_model(name)
    checked = 0
    for run in runs:
        if "output_cfg_negative" not in run:
            continue
        inputs = model_inputs(run)
        negative = ModelInputs(cross_attn_cond=run["negative_cross_attn_cond"],
                               cross_attn_mask=run["negative_cross_attn_mask"])
        model_fn = guided_model_fn(model, dict(inputs.__dict__), unet_unconditional_inputs(inputs, negative),
                                   scale, model.default_cfg_rescale)
        with torch.no_grad():
            assert relative_error(model_fn(run["x"], run["t"]), run["output_cfg_negative"]) < TOLERANCE
        checked += 1
    assert checked


# --- guidance semantics ------------------------------------------------------------------------

def test_unconditional_half_uses_the_learned_embedding_not_zeros():
    model = small_unet()
    x, t = torch.randn(2, 4, 8), torch.tensor([0.3, 0.7])
    tokens = torch.randn(2, 3, 8)
    everywhere = torch.ones(2, 3, dtype=torch.bool)
    learned = model.fixed_embedding.embedding.weight[:3].expand(2, -1, -1)
    with torch.no_grad():
        unconditional = model(x, t, cross_attn_cond=tokens, fixed_embedding_mask=everywhere)
        assert torch.allclose(unconditional, model(x, t, cross_attn_cond=learned), atol=1e-6)
        # The prompt no longer matters, and zeros are something else.
        assert torch.allclose(unconditional, model(x, t, cross_attn_cond=5 * tokens,
                                                   fixed_embedding_mask=everywhere), atol=1e-6)
        assert not torch.allclose(unconditional, model(x, t, cross_attn_cond=torch.zeros_like(tokens)),
                                  atol=1e-3)


def test_negative_prompt_keeps_its_tokens_and_takes_learned_rows_at_its_padding():
    positive = ModelInputs(cross_attn_cond=torch.randn(1, 4, 8), cross_attn_mask=torch.ones(1, 4))
    negative = ModelInputs(cross_attn_cond=torch.randn(1, 4, 8),
                           cross_attn_mask=torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    null = unet_unconditional_inputs(positive, negative)
    assert torch.equal(null["cross_attn_cond"], negative.cross_attn_cond)
    assert null["fixed_embedding_mask"].tolist() == [[False, False, True, True]]
    assert unet_unconditional_inputs(positive, None)["fixed_embedding_mask"].all()


def test_guidance_combines_the_halves_with_the_reference_rescale():
    model = small_unet()
    x, t = torch.randn(1, 4, 8), torch.tensor([0.4])
    inputs = {"cross_attn_cond": torch.randn(1, 3, 8)}
    with torch.no_grad():
        cond = model(x, t, **inputs)
        uncond = model(x, t, **inputs, fixed_embedding_mask=torch.ones(1, 3, dtype=torch.bool))
        guided = guided_model_fn(model, inputs, {"fixed_embedding_mask": torch.ones(1, 3, dtype=torch.bool)},
                                 6.0, 0.4)(x, t)
    plain = uncond + 6.0 * (cond - uncond)
    # std over the channel axis, mixed 0.4 : 0.6 (UNetCFG1d's scale_phi)
    expected = 0.4 * plain * cond.std(dim=1, keepdim=True) / plain.std(dim=1, keepdim=True) + 0.6 * plain
    assert torch.allclose(guided, expected, atol=1e-5)
    assert model.default_cfg_rescale == 0.4


def test_guidance_inputs_only_the_unconditional_half_sets_are_off_in_the_conditional_half():
    seen = {}

    def net(x, t, flag=None, **unused):
        seen["flag"] = flag
        return x * 0

    guided_model_fn(net, {}, {"flag": torch.ones(2, 3, dtype=torch.bool)}, 3.0)(torch.zeros(2, 1, 4),
                                                                                torch.zeros(2))
    assert seen["flag"].tolist() == [[False] * 3] * 2 + [[True] * 3] * 2


def test_cross_attention_mask_zeroes_padded_keys_and_values():
    # The reference multiplies padded keys and values by 0 (score 0, value 0) rather than
    # dropping them from the softmax: a padded token changes nothing whatever its content.
    model = small_unet()
    x, t = torch.randn(1, 4, 8), torch.tensor([0.5])
    tokens = torch.randn(1, 3, 8)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    changed = tokens.clone()
    changed[0, 2] = 10 * torch.randn(8)
    with torch.no_grad():
        out = model(x, t, cross_attn_cond=tokens, cross_attn_mask=mask)
        assert torch.allclose(out, model(x, t, cross_attn_cond=changed, cross_attn_mask=mask), atol=1e-6)
        assert not torch.allclose(out, model(x, t, cross_attn_cond=tokens[:, :2]), atol=1e-4)


# --- lengths ------------------------------------------------------------------------------------

def test_required_length_multiple_is_patch_size_times_the_downsampling_factors():
    assert small_unet().required_length_multiple == 2
    assert small_unet(factors=[2, 4], patch_size=2).required_length_multiple == 16
    with torch.device("meta"):
        paper = UNet1d.from_config(load_model_config(PAPER_CONFIG).diffusion_config)
    assert paper.required_length_multiple == 16


def test_output_keeps_the_input_shape():
    model = small_unet(factors=[2, 2], patch_size=2, out_channels=6)
    with torch.no_grad():
        out = model(torch.randn(3, 4, 24), torch.rand(3), cross_attn_cond=torch.randn(3, 2, 8))
    assert out.shape == (3, 6, 24)


def test_lengths_off_the_multiple_are_refused():
    model = small_unet(factors=[2, 2])
    with pytest.raises(InputError, match="multiple of 4"):
        model(torch.randn(1, 4, 10), torch.rand(1), cross_attn_cond=torch.randn(1, 2, 8))


def test_too_many_tokens_for_the_learned_embedding_are_refused():
    with pytest.raises(InputError, match="context_embedding_max_length"):
        small_unet()(torch.randn(1, 4, 8), torch.rand(1), cross_attn_cond=torch.randn(1, 5, 8))


def unet_model_config() -> dict:
    config = tiny_config(timing="int")
    config["model"]["diffusion"] = {
        "type": "adp_cfg_1d", "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
        "config": {**SMALL, "in_channels": 16, "context_embedding_features": 32, "factors": [2, 2]},
    }
    return config


def test_pipeline_window_is_a_multiple_of_the_vae_ratio_times_the_unet_multiple():
    from stable_audio_core.pipeline import generate, window_length

    model = perturbed_model(unet_model_config())
    assert model.min_input_length == 16 * 4
    assert window_length(model, 16 * 5) == 128  # 80 samples -> 2 x 64
    result = generate(model, conditioning={"prompt": 2.0, "seconds_start": 0, "seconds_total": 1},
                      steps=2, cfg_scale=3.0, sampler="dpmpp-2m", seed=3, sample_size=16 * 5, trim=False)
    assert result.latents.shape == (1, 16, 8) and result.audio.shape == (1, 2, 128)


def test_stable_audio_model_uses_each_backbones_default_rescale():
    assert perturbed_model(unet_model_config()).default_cfg_rescale == 0.4
    assert perturbed_model(tiny_config()).default_cfg_rescale == 0.0


# --- config errors -------------------------------------------------------------------------------

def test_unknown_config_keys_are_listed():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['channel_mults'\]"):
        UNet1d.from_config({**SMALL, "channel_mults": [1, 2]})


def test_missing_required_keys_are_named():
    config = dict(SMALL)
    del config["context_embedding_max_length"]
    with pytest.raises(ConfigError, match="context_embedding_max_length"):
        UNet1d.from_config(config)


@pytest.mark.parametrize("override, message", [
    ({"use_stft": True}, "use_stft"),
    ({"factors": [2]}, "len"),
    ({"resnet_groups": 5}, "resnet_groups"),
    ({"channels": 16}, "multiples of 32"),
    ({"attention_heads": None}, "attention_heads"),
    ({"kernel_multiplier_downsample": 3}, "even"),
    ({"context_channels": [4, 4]}, "one nonzero"),
])
def test_configs_the_reference_cannot_run_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        UNet1d.from_config({**copy.deepcopy(SMALL), **override})
