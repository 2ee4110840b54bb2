"""Inference speed-ups (stable_audio_core/acceleration.py), each applied as a module swap, give
the same results as the plain model, and the generation loop has the structure the benchmarks
rely on: one conditioning pass, one batched (CFG) backbone call per step, no tensor-to-Python
conversions inside the sampler loop, bfloat16 within its stated tolerance."""

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from stable_audio_core import acceleration
from stable_audio_core.acceleration import OneDNNLinear, conv1d, onednn_linear_available, use_onednn_linear
from stable_audio_core.models.autoencoder import OobleckResidualUnit
from stable_audio_core.models.layers import ResidualUnit, Snake1d, SnakeBeta, WNConv1d
from stable_audio_core.models.unet import PaddedConv1d
from stable_audio_core.pipeline import generate
from stable_audio_core.sampling import samplers

from helpers import perturbed_model

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="torch build without oneDNN")
# float32 results of a different summation order: a few ulp of the output's scale.
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-5


@pytest.fixture
def model(config):
    return acceleration.prepare_for_inference(perturbed_model(config))


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_equals_f_linear_on_contiguous_and_transposed_inputs(bias):
    torch.manual_seed(0)
    layer = nn.Linear(48, 40, bias=bias)
    reference = [torch.randn(2, 30, 48), torch.randn(2, 48, 30).transpose(1, 2)]
    expected = [layer(x) for x in reference]
    assert use_onednn_linear(layer) == 1 and type(layer) is OneDNNLinear
    with torch.inference_mode():
        for x, want in zip(reference, expected):
            torch.testing.assert_close(layer(x), want, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


@needs_onednn
def test_onednn_linear_keeps_gradients_by_falling_back_when_they_are_needed():
    layer = nn.Linear(16, 8)
    use_onednn_linear(layer)
    x = torch.randn(4, 16, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


@needs_onednn
def test_switching_linears_keeps_state_dict_keys_and_skips_subclasses():
    class Custom(nn.Linear):
        pass

    module = nn.Sequential(nn.Linear(4, 4), Custom(4, 4))
    keys = list(module.state_dict())
    assert use_onednn_linear(module) == 1
    assert type(module[0]) is OneDNNLinear and type(module[1]) is Custom
    assert list(module.state_dict()) == keys


@needs_onednn
def test_onednn_bfloat16_linear_matches_torch_bfloat16():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(3, 20, 64, dtype=torch.bfloat16)
    expected = layer(x)
    use_onednn_linear(layer)
    with torch.inference_mode():
        # Both accumulate in float32 and round once to bfloat16 (8 bits): one bfloat16 ulp.
        torch.testing.assert_close(layer(x), expected, rtol=1e-2, atol=1e-2)


@needs_onednn
def test_bfloat16_takes_torchs_kernels_where_onednn_has_none(monkeypatch):
    # oneDNN builds no bfloat16 inner product on CPUs without AVX512-BF16 / AMX (it raises there).
    assert (torch.bfloat16 in acceleration.onednn_dtypes()) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    monkeypatch.setattr(acceleration, "onednn_dtypes", lambda: (torch.float32,))
    torch.manual_seed(0)
    layer = nn.Linear(64, 32).to(torch.bfloat16)
    use_onednn_linear(layer)
    x, weight = torch.randn(3, 20, 64, dtype=torch.bfloat16), torch.randn(8, 64, 3, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
        signal = x.transpose(1, 2).contiguous()
        assert torch.equal(conv1d(signal, weight, padding=1), F.conv1d(signal, weight, padding=1))


@needs_onednn
@pytest.mark.parametrize("kernel, stride, padding, dilation, length", [
    (1, 1, 0, 1, 40), (3, 1, 1, 1, 27), (7, 1, 9, 3, 64), (9, 4, 4, 1, 64), (5, 2, 0, 1, 33),
])  # fmt: skip
def test_im2col_convolution_equals_f_conv1d(kernel, stride, padding, dilation, length):
    torch.manual_seed(0)
    x = torch.randn(2, 24, length)
    weight, bias = torch.randn(20, 24, kernel) * 0.2, torch.randn(20)
    expected = F.conv1d(x, weight, bias, stride, padding, dilation)
    with torch.inference_mode():
        out = conv1d(x, weight, bias, stride, padding, dilation)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_long_or_differentiable_convolutions_take_the_direct_path(monkeypatch):
    calls = []
    monkeypatch.setattr(acceleration.torch.ops.mkldnn, "_linear_pointwise",
                        lambda *args: calls.append(args) or (_ for _ in ()).throw(AssertionError))
    x, weight = torch.randn(1, 4, acceleration.IM2COL_MAX_ROWS + 1), torch.randn(4, 4, 3)
    with torch.inference_mode():
        conv1d(x, weight, padding=1)  # too many output frames for im2col
    conv1d(torch.randn(1, 4, 8, requires_grad=True), weight, padding=1)  # needs a graph
    assert calls == []


def _perturbed(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return module


def _swapped(module: nn.Module, **switches) -> nn.Module:
    """A prepared copy of `module` with only the named swaps on."""
    off = dict(onednn_linear=False, onednn_conv=False, cached_snake=False, fused_residual=False)
    return acceleration.prepare_for_inference(copy.deepcopy(module), **{**off, **switches})


@needs_onednn
@pytest.mark.parametrize("conv", [WNConv1d(12, 10, kernel_size=7, dilation=3, padding=9),
                                  WNConv1d(12, 10, kernel_size=4, stride=2, padding=1),
                                  PaddedConv1d(12, 10, kernel_size=5, stride=2), PaddedConv1d(12, 10, kernel_size=3)],
                         ids=["wn-dilated", "wn-strided", "padded-strided", "padded"])
def test_onednn_convolution_swap_equals_the_plain_layer(conv):
    plain = _perturbed(conv).eval().requires_grad_(False)
    fast = _swapped(plain, onednn_conv=True)
    assert type(fast) is not type(plain) and list(fast.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 12, 40)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


@pytest.mark.parametrize("snake", [SnakeBeta(6), Snake1d(6)], ids=["snake-beta", "dac-snake"])
def test_cached_snake_swap_equals_the_plain_snake_and_keeps_gradients_when_needed(snake):
    plain = _perturbed(snake)
    fast = _swapped(plain, cached_snake=True)
    assert list(fast.state_dict()) == list(plain.state_dict())  # the cache is not checkpointed
    x = torch.randn(2, 6, 50)
    with torch.inference_mode():
        # The swap fuses the final multiply-add (addcmul: one rounding instead of two).
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-6, atol=1e-6)
        assert fast.double()(x.double()).dtype == torch.float64  # the cache follows .to()
    fast.float().requires_grad_(True)
    fast(x).sum().backward()  # training takes the plain formula
    assert fast.alpha.grad is not None


@pytest.mark.parametrize("unit", [OobleckResidualUnit(12, 3, use_snake=True), ResidualUnit(12, 9, Snake1d)],
                         ids=["oobleck", "dac"])
def test_fused_residual_tail_swap_equals_the_plain_unit(unit, monkeypatch):
    # Slices of 256 steps (the floor) over 1000 steps and batch 2: several slices and a ragged end.
    monkeypatch.setattr(acceleration, "RESIDUAL_SLICE_FLOATS", 1)
    plain = _perturbed(unit).eval().requires_grad_(False)
    fast = _swapped(plain, fused_residual=True)
    assert isinstance(fast, acceleration.FusedResidualTail)
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 12, 1000)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    # Training (a graph is needed) takes the plain path, with gradients.
    fast.requires_grad_(True)
    x.requires_grad_(True)
    fast(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in fast.parameters())


def test_fused_residual_tail_is_swapped_in_and_taken_only_where_it_applies(monkeypatch):
    elu = OobleckResidualUnit(4, 1, use_snake=False)
    assert acceleration.use_fused_residual_tails(elu) == 0  # the tail is not a Snake
    calls = []
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or torch.Tensor.addmm(*a[:3]))
    unit = _swapped(ResidualUnit(4, 1, Snake1d), fused_residual=True)
    x = torch.randn(1, 4, 50)
    with torch.inference_mode():
        unit.double()(x.double())  # not oneDNN's dtype: the plain tail
        assert calls == []
        unit.float()(x)
    assert len(calls) == 1 or not acceleration.onednn_linear_available()


def test_prepared_model_equals_the_plain_model_and_keeps_its_keys(config):
    plain = perturbed_model(config).eval().requires_grad_(False)
    keys = list(plain.state_dict())
    fast = acceleration.prepare_for_inference(copy.deepcopy(plain))
    assert list(fast.state_dict()) == keys
    inputs = plain.condition([{"prompt": 1.0, "seconds_start": 0, "seconds_total": 1}])
    x, t = torch.randn(1, plain.io_channels, 16), torch.tensor([0.7])
    latents = torch.randn(1, plain.autoencoder.latent_dim, 8)
    with torch.inference_mode():
        torch.testing.assert_close(fast.model_fn(inputs, 7.0)(x, t), plain.model_fn(inputs, 7.0)(x, t),
                                   rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
        torch.testing.assert_close(fast.autoencoder.decode(latents), plain.autoencoder.decode(latents),
                                   rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def _environment_after(code: str, extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", acceleration.HUGE_PAGES_SWITCH)}
    run = subprocess.run([sys.executable, "-c", code + "\nprint(os.environ.get('THP_MEM_ALLOC_ENABLE'))"],
                         env={**env, **extra}, capture_output=True, text=True, check=True)
    return run.stdout.strip().splitlines()[-1]


def test_huge_pages_are_requested_by_an_explicit_call_not_by_importing_the_core():
    assert _environment_after("import os, stable_audio_core.factory", {}) == "None"
    request = "import os; from stable_audio_core.acceleration import request_huge_pages; request_huge_pages()"
    assert _environment_after(request, {}) == "1"
    assert _environment_after(request, {acceleration.HUGE_PAGES_SWITCH: "0"}) == "None"
    assert _environment_after(request, {"THP_MEM_ALLOC_ENABLE": "0"}) == "0"  # the user's own setting wins


def test_the_cli_and_the_node_pack_request_huge_pages_at_their_entry():
    cli = "import os, contextlib\nfrom stable_audio_host import cli\nwith contextlib.suppress(SystemExit): cli.main(['--help'])"
    assert _environment_after(cli, {}) == "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pack = f"import os\nfrom stable_audio_host.pack import load_pack\nload_pack({root!r})"
    assert _environment_after(pack, {}) == "1"


def test_generation_conditions_once_and_calls_the_backbone_once_per_step_at_batch_2(model):
    conditioning_calls, batches = [], []
    original = model.conditioner.forward
    model.conditioner.forward = lambda *a, **k: conditioning_calls.append(1) or original(*a, **k)
    backbone_forward = model.backbone.forward
    model.backbone.forward = lambda x, *a, **k: batches.append(x.shape[0]) or backbone_forward(x, *a, **k)
    result = generate(model, conditioning={"prompt": 1.0, "seconds_start": 0, "seconds_total": 1},
                      steps=5, cfg_scale=7.0, sampler="dpmpp-3m-sde", seed=3, trim=False)
    assert conditioning_calls == [1]  # text/timing encoded once per generation, not per step
    assert batches == [2] * 5  # conditional and unconditional halves in one call per step
    assert result.latents.is_inference()  # generate runs under torch.inference_mode


@pytest.mark.parametrize("name", sorted(samplers.SAMPLERS))
def test_sampler_loop_never_reads_a_tensor_back_to_python(name, monkeypatch):
    # On a GPU each such read (bool(), .item(), float()) waits for the device; the loop reads the
    # noise levels once (tolist) before it starts.
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.0])
    x = torch.randn(1, 2, 8)
    allowed = {"read": True}

    def refuse(name):
        original = getattr(torch.Tensor, name)

        def guarded(self, *args, **kwargs):
            if not allowed["read"]:
                raise AssertionError(f"Tensor.{name} called inside the sampler loop")
            return original(self, *args, **kwargs)
        return guarded

    for method in ("__bool__", "item", "__float__"):
        monkeypatch.setattr(torch.Tensor, method, refuse(method))

    def denoise(x, sigma):
        allowed["read"] = False  # from the first model call on: inside the loop
        return x * 0.5

    samplers.SAMPLERS[name](denoise, x, sigmas, noise=samplers.gaussian_noise(x, torch.Generator().manual_seed(0)))


# bfloat16 is opt-in: load_model(matmul_dtype="bfloat16") stores linear/convolution weights in
# bfloat16 and keeps activations and the sampler state in float32. On this tiny random model with
# CFG 7 (which multiplies the difference of two outputs by 7), 4 deterministic steps: the decoded
# audio stays within 5% of its float32 peak (measured over seeds 5-11: 2.1-2.8%; casting the whole
# model to bfloat16 instead gives 3.1-5.4%).
BFLOAT16_RELATIVE_TOLERANCE = 0.05


def test_bfloat16_matmuls_stay_within_the_stated_tolerance(config, tmp_path):
    from helpers import save_checkpoint

    from stable_audio_core.factory import load_model

    path = save_checkpoint(perturbed_model(config), tmp_path / "m.safetensors")
    full = load_model(config, path)
    fast = load_model(config, path, matmul_dtype="bfloat16")
    assert fast.dtype == torch.float32  # activations and sampler state stay float32
    assert fast.backbone.transformer.layers[0].self_attn.to_qkv.weight.dtype == torch.bfloat16
    kwargs = dict(conditioning={"prompt": 1.0, "seconds_start": 0, "seconds_total": 1}, steps=4,
                  cfg_scale=7.0, sampler="dpmpp-2m", seed=5, trim=False)
    reference = generate(full, **kwargs).audio
    audio = generate(fast, **kwargs).audio
    assert audio.dtype == torch.float32
    error = (audio - reference).abs().max() / reference.abs().max()
    assert error < BFLOAT16_RELATIVE_TOLERANCE


@pytest.mark.heavy  # inductor compiles C++ for about a minute
def test_compiled_backbone_matches_eager(config, tmp_path):
    from helpers import save_checkpoint

    from stable_audio_core.factory import load_model

    path = save_checkpoint(perturbed_model(config), tmp_path / "m.safetensors")
    kwargs = dict(conditioning={"prompt": 1.0, "seconds_start": 0, "seconds_total": 1}, steps=3,
                  cfg_scale=7.0, sampler="dpmpp-2m", seed=5, trim=False)
    eager = generate(load_model(config, path), **kwargs).latents
    compiled = generate(load_model(config, path, compile=True), **kwargs).latents
    # Inductor fuses and reorders float32 arithmetic: rounding-level differences only.
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def test_loading_a_state_dict_after_the_swap_refreshes_the_frozen_snake_coefficients(config):
    prepared = acceleration.prepare_for_inference(perturbed_model(config, seed=0))
    other = perturbed_model(config, seed=1)
    prepared.load_state_dict(other.state_dict())
    latents = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = other.eval().autoencoder.decode(latents)
        got = prepared.autoencoder.decode(latents)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_sigmoid_dynamic_tanh_swap_equals_dynamic_tanh_and_refreshes_on_load():
    from stable_audio_core.models.sa3_layers import DynamicTanh

    def norm(seed):
        torch.manual_seed(seed)
        layer = DynamicTanh(48)
        for parameter in layer.parameters():
            nn.init.normal_(parameter)
        return layer

    plain, prepared = norm(0), acceleration.prepare_for_inference(copy.deepcopy(norm(0)))
    assert isinstance(prepared, acceleration.SigmoidDynamicTanh)
    x = torch.randn(3, 20, 48) * 4  # through the saturated ends of tanh too
    with torch.inference_mode():
        torch.testing.assert_close(prepared(x), plain(x), rtol=0, atol=2e-6)
        other = norm(1)
        prepared.load_state_dict(other.state_dict())
        torch.testing.assert_close(prepared(x), other(x), rtol=0, atol=2e-6)
        # bfloat16 inputs take the tanh formula itself (2 sigmoid - 1 loses small values there).
        half = copy.deepcopy(prepared).to(torch.bfloat16)
        assert torch.equal(half(x.bfloat16()), DynamicTanh.forward(half, x.bfloat16()))
    leaf = x.clone().requires_grad_(True)
    prepared.requires_grad_(True)(leaf).sum().backward()  # training: the plain formula, with gradients
    assert leaf.grad is not None and prepared.alpha.grad is not None


@pytest.mark.parametrize("shape, rot_dim, dtype", [((2, 3, 17, 64), 32, torch.float32),
                                                   ((1, 2, 9, 32), 32, torch.float32),
                                                   ((2, 3, 17, 64), 32, torch.bfloat16)])
def test_rotary_positions_equal_the_concatenated_formula_bit_for_bit(shape, rot_dim, dtype):
    from stable_audio_core.models.transformer import RotaryEmbedding, apply_rotary

    batch, heads, length, head_dim = shape
    fused = torch.randn(batch, length, 3 * heads * head_dim).to(dtype)  # q as a strided view of qkv
    x = fused[..., :heads * head_dim].view(batch, length, heads, head_dim).transpose(1, 2)
    angles = RotaryEmbedding(rot_dim)(length) * 1.7
    rotated = x[..., :rot_dim].float()
    first, second = rotated.chunk(2, dim=-1)
    expected = rotated * angles.cos() + torch.cat((-second, first), dim=-1) * angles.sin()
    expected = torch.cat((expected.to(dtype), x[..., rot_dim:]), dim=-1)
    got = apply_rotary(x, angles)
    assert got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got, expected)


def test_rotary_positions_keep_gradients_for_training():
    from stable_audio_core.models.transformer import RotaryEmbedding, apply_rotary

    x = torch.randn(2, 3, 9, 64, requires_grad=True)
    angles = RotaryEmbedding(32)(9)
    apply_rotary(x, angles).pow(2).sum().backward()
    # A rotation keeps norms: d/dx sum(R x)^2 = 2 R^T R x = 2 x.
    torch.testing.assert_close(x.grad, 2 * x.detach(), rtol=1e-5, atol=1e-5)
