"""Classifier-free guidance: one batched call, the reference's null inputs, rescale semantics."""

import torch

from stable_audio_core.sampling.guidance import combine_guidance

from helpers import perturbed_model, tiny_config

META = [{"prompt": 3.0, "seconds_start": 1.0, "seconds_total": 4.0}]


def test_guided_output_is_uncond_plus_scaled_difference_with_zero_text_tokens():
    model = perturbed_model(tiny_config(), seed=2)
    inputs = model.condition(META)
    x, t = torch.randn(1, 16, 12), torch.tensor([0.3])
    net = model.backbone
    cond = net(x, t, cross_attn_cond=inputs.cross_attn_cond, global_embed=inputs.global_embed)
    # The DiT's unconditional side: cross-attention tokens zeroed, global embedding shared.
    uncond = net(x, t, cross_attn_cond=torch.zeros_like(inputs.cross_attn_cond), global_embed=inputs.global_embed)
    guided = model.model_fn(inputs, cfg_scale=4.0)(x, t)
    # One batched call vs two single calls: float32 reduction order only.
    torch.testing.assert_close(guided, uncond + 4.0 * (cond - uncond), rtol=1e-4, atol=1e-5)


def test_cfg_scale_one_calls_the_backbone_once_unbatched():
    model = perturbed_model(tiny_config(), seed=2)
    calls = []
    original = model.backbone.forward
    model.backbone.forward = lambda x, *a, **k: calls.append(x.shape[0]) or original(x, *a, **k)
    try:
        model.model_fn(model.condition(META), cfg_scale=1.0)(torch.randn(1, 16, 8), torch.tensor([0.5]))
        model.model_fn(model.condition(META), cfg_scale=3.0)(torch.randn(1, 16, 8), torch.tensor([0.5]))
    finally:
        del model.backbone.forward
    assert calls == [1, 2]


def test_full_rescale_restores_the_conditional_channel_std():
    cond, uncond = torch.randn(2, 8, 30), torch.randn(2, 8, 30)
    out = combine_guidance(cond, uncond, 7.0, rescale=1.0)
    torch.testing.assert_close(out.std(dim=1), cond.std(dim=1), rtol=1e-5, atol=1e-6)
    plain = combine_guidance(cond, uncond, 7.0)
    torch.testing.assert_close(combine_guidance(cond, uncond, 7.0, rescale=0.5),
                               0.5 * out + 0.5 * plain, rtol=1e-5, atol=1e-6)
