"""VAE training: STFT losses, A-weighting, the STFT discriminator, the task's phases and export.

Reference values come from tests/fixtures/vae_training/ (tools/make_vae_training_fixtures.py,
stable-audio-tools 0.0.19); everything else runs on a tiny Oobleck VAE built here.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stable_audio_core.checkpoint import RUN_CONFIG_FILE, RUN_MODEL_FILE, load_state_dict_strict
from stable_audio_core.errors import ConfigError, InputError
from stable_audio_core.factory import load_autoencoder
from stable_audio_core.models.autoencoder import build_autoencoder
from stable_audio_core.training.discriminator import MultiScaleSTFTDiscriminator
from stable_audio_core.training.losses import (
    MultiResolutionSTFTLoss,
    StereoSTFTLoss,
    a_weighting_db,
    a_weighting_fir,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    multiresolution_stft_distance,
    si_sdr,
)
from stable_audio_core.training.task import StepContext, TrainingTask
from stable_audio_core.training.vae_task import VAETask, build_vae_task

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "vae_training"
SAMPLE_RATE = 16000
LENGTH = 512
LAYERS = {"channels": 4, "c_mults": [1, 2], "strides": [2, 2], "use_snake": True}
TINY_VAE = {
    "model_type": "autoencoder", "sample_rate": SAMPLE_RATE, "sample_size": LENGTH, "audio_channels": 2,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 8, **LAYERS}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": 4,
                                                  "final_tanh": False, **LAYERS}},
        "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 4, "io_channels": 2,
    },
}  # fmt: skip
# Small STFTs so that LENGTH-sample clips fit every resolution.
TINY_OPTIONS = {"discriminator": {"filters": 4, "n_ffts": [128, 64]},
                "spectral": {"fft_sizes": [256, 128, 64, 32]}}  # fmt: skip
CPU = torch.device("cpu")


def tiny_task(**options) -> VAETask:
    return build_vae_task(copy.deepcopy(TINY_VAE), {**copy.deepcopy(TINY_OPTIONS), **options})


def tones(batch: int = 2, length: int = LENGTH, seed: int = 0) -> torch.Tensor:
    """Stereo sines (a different pitch per item and channel) plus a little noise."""
    t = torch.arange(length) / SAMPLE_RATE
    generator = torch.Generator().manual_seed(seed)
    freqs = 200 + 700 * torch.rand(batch, 2, 1, generator=generator)
    return 0.4 * torch.sin(2 * math.pi * freqs * t) + 0.02 * torch.randn(batch, 2, length, generator=generator)


def make_batch(audio: torch.Tensor, seeds=None) -> dict:
    seeds = list(range(audio.shape[0])) if seeds is None else seeds
    return {"audio": audio, "padding_mask": torch.ones(audio.shape[0], audio.shape[-1], dtype=torch.bool),
            "seeds": torch.tensor(seeds, dtype=torch.int64)}  # fmt: skip


def context(step: int) -> StepContext:
    return StepContext(step=step, micro_batch=0, accumulation=1, device=CPU)


def run_phases(task: VAETask, batch: dict, steps: int, lr: float = 1e-3) -> list[tuple[int, str, dict]]:
    """The trainer's step semantics by hand: every active phase, zero grads, backward, Adam."""
    phases = task.phases()
    optimizers = {p.name: torch.optim.Adam(p.parameters, lr=lr) for p in phases}
    history = []
    for step in range(steps):
        for phase in phases:
            if phase.active(step):
                optimizers[phase.name].zero_grad(set_to_none=True)
                loss, logged = phase.loss_fn(batch, context(step))
                loss.backward()
                optimizers[phase.name].step()
                history.append((step, phase.name, {"loss": loss.item(), **logged}))
    return history


# -- STFT loss --------------------------------------------------------------------------------


def test_stft_loss_is_zero_for_identical_inputs_and_positive_otherwise():
    loss = StereoSTFTLoss(MultiResolutionSTFTLoss(sample_rate=44100, perceptual_weighting=True))
    x = tones(length=4096)
    same, parts = loss(x, x.clone())
    assert same.item() == 0.0 and all(v.item() == 0.0 for v in parts.values())
    different, _ = loss(x, x + 0.01 * torch.randn_like(x))
    assert different.item() > 0.01


def test_stereo_loss_is_symmetric_in_left_and_right():
    # Swapping L and R keeps the sum and negates the difference, whose magnitudes are unchanged.
    loss = StereoSTFTLoss(MultiResolutionSTFTLoss([256, 64, 32]))
    x, y = tones(seed=1), tones(seed=2)
    swapped = loss(x.flip(1), y.flip(1))[0]
    torch.testing.assert_close(loss(x, y)[0], swapped, rtol=1e-6, atol=0)  # float32 summation order


def test_stereo_loss_is_sum_difference_mean_plus_left_right_mean():
    single = MultiResolutionSTFTLoss([256, 64, 32])
    x, y = tones(seed=3), tones(seed=4)
    total, parts = StereoSTFTLoss(single)(x, y)
    sums = single(x[:, :1] + x[:, 1:], y[:, :1] + y[:, 1:])
    diffs = single(x[:, :1] - x[:, 1:], y[:, :1] - y[:, 1:])
    sides = (single(x[:, :1], y[:, :1]) + single(x[:, 1:], y[:, 1:])) / 2
    torch.testing.assert_close(parts["stft_sum_diff"], (sums + diffs) / 2)
    torch.testing.assert_close(parts["stft_left_right"], sides)
    torch.testing.assert_close(total, (sums + diffs) / 2 + sides)


def test_a_weighting_curve_has_its_standard_values():
    # IEC 61672 table values, given to 0.1 dB.
    assert abs(a_weighting_db(1000.0)) < 1e-3
    for frequency, expected_db in [(100, -19.1), (50, -30.2), (10000, -2.5), (4000, 1.0)]:
        assert abs(a_weighting_db(frequency) - expected_db) < 0.1


def test_a_weighting_fir_is_linear_phase_and_near_0_db_at_1_khz():
    taps = a_weighting_fir(44100).double().numpy()
    assert len(taps) == 101
    np.testing.assert_allclose(taps, taps[::-1], atol=1e-7)
    response = abs(np.sum(taps * np.exp(-2j * np.pi * 1000 / 44100 * np.arange(101))))
    assert abs(20 * np.log10(response)) < 0.2  # a 101-tap least-squares fit, not the exact curve


def test_a_weighting_fir_matches_the_reference_taps():
    reference = load_file(str(FIXTURE_DIR / "stft.safetensors"))
    for rate in (44100, 48000):
        # float32 rounding of the same least-squares solution
        torch.testing.assert_close(a_weighting_fir(rate), reference[f"a_weighting_{rate}"], rtol=0, atol=1e-8)


def test_stft_losses_match_the_reference():
    reference = load_file(str(FIXTURE_DIR / "stft.safetensors"))
    x, y = reference["x"], reference["y"]
    weighted = StereoSTFTLoss(MultiResolutionSTFTLoss(sample_rate=44100, perceptual_weighting=True))
    # float32 reductions in a different order: a few ulps of a value near 1
    torch.testing.assert_close(weighted(x, y)[0], reference["stereo_weighted"][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(MultiResolutionSTFTLoss()(x, y), reference["plain"][0], rtol=1e-6, atol=0)


def test_stft_loss_rejects_clips_shorter_than_its_largest_window():
    with pytest.raises(InputError, match="at least 1025 samples"):
        MultiResolutionSTFTLoss()(torch.zeros(1, 2, 1000), torch.zeros(1, 2, 1000))


def test_metrics_score_identical_and_scaled_signals():
    x = tones(length=4096)
    assert multiresolution_stft_distance(x, x) == 0.0
    assert multiresolution_stft_distance(x[0], x[0] + 0.05 * torch.randn_like(x[0])) > 0.0
    noisy = x + 0.1 * torch.randn_like(x)
    assert si_sdr(x, x) > 100
    # scale invariance: a scaled estimate has the same SI-SDR
    assert si_sdr(0.5 * noisy, x) == pytest.approx(si_sdr(noisy, x), abs=1e-6)
    assert 0 < si_sdr(noisy, x) < 30


# -- discriminator ----------------------------------------------------------------------------


def test_discriminator_matches_the_reference():
    fixture = load_file(str(FIXTURE_DIR / "discriminator.safetensors"))
    config = json.loads((FIXTURE_DIR / "cases.json").read_text())["discriminator"]
    discriminator = MultiScaleSTFTDiscriminator(in_channels=2, **config)
    state = {k[len("state."):]: v for k, v in fixture.items() if k.startswith("state.")}
    load_state_dict_strict(discriminator, state, "reference discriminator")
    with torch.no_grad():
        real_logits, real_features = discriminator(fixture["reals"])
        fake_logits, fake_features = discriminator(fixture["fakes"])
    for i, logits in enumerate(real_logits):
        torch.testing.assert_close(logits, fixture[f"logits.{i}"], rtol=1e-5, atol=1e-6)  # float32 convs
    torch.testing.assert_close(hinge_discriminator_loss(real_logits, fake_logits), fixture["loss_dis"][0])
    torch.testing.assert_close(hinge_generator_loss(fake_logits), fixture["loss_adv"][0])
    torch.testing.assert_close(feature_matching_loss(real_features, fake_features),
                               fixture["feature_matching"][0])  # fmt: skip


def test_discriminator_returns_logits_and_features_per_scale():
    discriminator = MultiScaleSTFTDiscriminator(filters=4, in_channels=2, n_ffts=[128, 64])
    logits, features = discriminator(tones())
    assert len(logits) == len(features) == 2
    assert all(len(maps) == 5 for maps in features)  # first conv, 3 dilated, the square conv
    frames = (LENGTH - 128) // 32 + 1
    assert logits[0].shape == (2, 1, frames, 65)


# -- the task ---------------------------------------------------------------------------------


def test_training_steps_match_the_references_autoencoder_training_wrapper():
    fixture = load_file(str(FIXTURE_DIR / "training_step.safetensors"))
    case = json.loads((FIXTURE_DIR / "cases.json").read_text())["training_step"]
    task = build_vae_task(case["config"], {})  # the reference config's own loss_configs
    part = lambda prefix: {k[len(prefix):]: v for k, v in fixture.items() if k.startswith(prefix)}  # noqa: E731
    load_state_dict_strict(task.autoencoder, part("ae."), "reference autoencoder")
    load_state_dict_strict(task.discriminator, part("disc."), "reference discriminator")
    batch = {"audio": fixture["reals"], "seeds": fixture["seeds"]}
    phases = task.phases()
    optimizers = {p.name: torch.optim.SGD(p.parameters, lr=case["learning_rate"]) for p in phases}
    for step in range(case["steps"]):
        for phase in phases:
            if not phase.active(step):
                continue
            optimizers[phase.name].zero_grad(set_to_none=True)
            loss, _ = phase.loss_fn(batch, context(step))
            loss.backward()
            # Same float32 math summed in another order: losses agree to ~1e-7 relative, the
            # generator's gradients (norm ~10) to ~1e-5 of their norm; the discriminator's (norm
            # ~1e-3, after one generator update) to ~2e-7 absolute.
            if step in (0, 1):
                network, key = (task.autoencoder, "gen") if step == 0 else (task.discriminator, "disc")
                torch.testing.assert_close(loss.detach(), fixture[f"{key}_loss"][0], rtol=1e-5, atol=0)
                ours = torch.cat([p.grad.flatten() for p in network.parameters()])
                theirs = torch.cat([fixture[f"{key}_grad.{n}"].flatten() for n, _ in network.named_parameters()])
                assert (ours - theirs).norm() < 1e-4 * theirs.norm() + 1e-6
            optimizers[phase.name].step()
    # Later steps drift apart slowly (measured ~6e-6 after 4 steps): with log magnitudes of
    # A-weighted bins near the 1e-8 power floor, float rounding moves gradients by ~1e-4.
    for prefix, network in (("ae_final.", task.autoencoder), ("disc_final.", task.discriminator)):
        for name, value in network.state_dict().items():
            torch.testing.assert_close(value, fixture[prefix + name], rtol=1e-3, atol=1e-4)


def test_task_implements_the_training_protocol_with_alternating_phases():
    task = tiny_task()
    assert isinstance(task, TrainingTask) and task.kind == "vae"
    assert set(task.modules()) == {"autoencoder", "discriminator"}
    assert set(task.ema_modules()) == {"autoencoder"}
    phases = {p.name: p for p in task.phases()}
    assert [s for s in range(6) if phases["generator"].active(s)] == [0, 2, 4]
    assert [s for s in range(6) if phases["discriminator"].active(s)] == [1, 3, 5]
    assert phases["generator"].betas == phases["discriminator"].betas == (0.8, 0.99)
    # the EMA follows the autoencoder, which only the generator phase changes
    assert phases["generator"].moves_ema and not phases["discriminator"].moves_ema


def test_full_warmup_holds_the_discriminator_back_and_adversarial_terms_start_after_warmup():
    task = tiny_task(warmup_steps=4, warmup_mode="full")
    phases = {p.name: p for p in task.phases()}
    assert [s for s in range(8) if phases["discriminator"].active(s)] == [5, 7]
    batch = make_batch(tones())
    _, before = phases["generator"].loss_fn(batch, context(2))
    _, after = phases["generator"].loss_fn(batch, context(4))
    assert "adversarial" not in before and "feature_matching" not in before
    assert {"adversarial", "feature_matching", "stft", "kl"} <= set(after)


def test_zero_adversarial_weights_train_without_a_discriminator():
    task = tiny_task(adversarial=0.0, feature_matching=0.0)
    assert set(task.modules()) == {"autoencoder"}
    (phase,) = task.phases()
    assert phase.name == "generator" and phase.every == 1


def test_time_l1_adds_the_mean_absolute_waveform_error():
    batch = make_batch(tones(batch=2))
    plain = tiny_task(adversarial=0.0, feature_matching=0.0)
    with_time = tiny_task(adversarial=0.0, feature_matching=0.0, time_l1=3.0)
    with_time.autoencoder.load_state_dict(plain.autoencoder.state_dict())
    base, logged_base = plain.phases()[0].loss_fn(batch, context(0))
    total, logged = with_time.phases()[0].loss_fn(batch, context(0))
    assert "time_l1" not in logged_base and logged["time_l1"] > 0
    assert total.item() == pytest.approx(base.item() + 3.0 * logged["time_l1"], rel=1e-5)
    # The reference's loss_configs.time section sets the same weight.
    config = copy.deepcopy(TINY_VAE)
    config["training"] = {"loss_configs": {"time": {"type": "l1", "weights": {"l1": 0.5}}}}
    assert build_vae_task(config, {}).weights.time_l1 == 0.5


def _grads(module: torch.nn.Module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


def test_discriminator_phase_trains_only_the_discriminator():
    task = tiny_task()
    phase = {p.name: p for p in task.phases()}["discriminator"]
    loss, _ = phase.loss_fn(make_batch(tones()), context(1))
    loss.backward()
    assert not any(p.grad is not None for p in task.autoencoder.parameters())
    assert any(_grads(task.discriminator))


def test_generator_phase_trains_only_the_autoencoder_and_restores_the_discriminator():
    task = tiny_task()
    phase = {p.name: p for p in task.phases()}["generator"]
    loss, logged = phase.loss_fn(make_batch(tones()), context(0))
    loss.backward()
    assert "adversarial" in logged
    assert not any(p.grad is not None for p in task.discriminator.parameters())
    assert all(p.requires_grad for p in task.discriminator.parameters())
    assert any(_grads(task.autoencoder.encoder)) and any(_grads(task.autoencoder.decoder))


def test_latent_noise_comes_from_the_item_seeds_whatever_the_batch_split():
    task = tiny_task()
    audio = tones(batch=3)
    whole, _ = task._encode(audio, torch.tensor([5, 6, 7]), with_grad=False)
    alone, _ = task._encode(audio[1:2], torch.tensor([6]), with_grad=False)
    torch.testing.assert_close(whole[1:2], alone, rtol=1e-5, atol=1e-6)  # batched vs single convs
    other, _ = task._encode(audio[1:2], torch.tensor([8]), with_grad=False)
    assert not torch.allclose(other, alone)


def test_phase_two_leaves_the_encoder_unchanged_and_trains_the_decoder():
    task = tiny_task(phase=2)
    encoder_before = copy.deepcopy(task.autoencoder.encoder.state_dict())
    decoder_before = copy.deepcopy(task.autoencoder.decoder.state_dict())
    generator = {p.name: p for p in task.phases()}["generator"]
    assert {id(p) for p in generator.parameters}.isdisjoint(id(p) for p in task.autoencoder.encoder.parameters())
    run_phases(task, make_batch(tones()), steps=2)  # one generator and one discriminator step
    for key, value in task.autoencoder.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key
    assert any(not torch.equal(v, decoder_before[k]) for k, v in task.autoencoder.decoder.state_dict().items())


def test_decode_frames_decodes_the_middle_of_the_whole_crops_latents():
    task = tiny_task(phase=2, decode_frames=128)
    audio = tones(length=2 * LENGTH)  # 1024 samples: 256 latent frames, the middle 128 decoded
    batch = make_batch(audio)
    reals, decoded, latents, _ = task._reconstruct(batch, training_generator=True)
    whole, _ = task._encode(audio, batch["seeds"], with_grad=False)
    assert torch.equal(latents, whole[..., 64:192])
    assert torch.equal(reals, audio[..., 256:768])
    with torch.no_grad():
        expected = task.autoencoder.decoder(task.autoencoder.bottleneck.decode(latents))
    torch.testing.assert_close(decoded.detach(), expected)
    alone, _ = task._encode(audio[..., 256:768], batch["seeds"], with_grad=False)
    assert not torch.allclose(latents, alone, atol=1e-3)  # the crop's edges change its latents
    loss, _ = {p.name: p for p in task.phases()}["generator"].loss_fn(batch, context(0))
    loss.backward()
    assert all(p.grad is None for p in task.autoencoder.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.autoencoder.decoder.parameters())


@pytest.mark.parametrize("options, error, message", [
    ({"decode_frames": 64}, ConfigError, "phase 2"),  # phase 1 would train the encoder on the middle only
    ({"phase": 2, "decode_frames": -1}, ConfigError, "decode_frames"),
    ({"phase": 2, "decode_frames": 1.5}, ConfigError, "decode_frames"),
])  # fmt: skip
def test_bad_decode_frames_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        tiny_task(**options)


def test_decode_frames_longer_than_the_crop_are_refused_with_the_fix():
    task = tiny_task(phase=2, decode_frames=LENGTH)  # a LENGTH-sample crop has LENGTH / 4 frames
    generator = {p.name: p for p in task.phases()}["generator"]
    with pytest.raises(InputError, match="sample_size"):
        generator.loss_fn(make_batch(tones()), context(0))


def test_a_few_steps_run_through_the_trainer_and_write_a_loadable_checkpoint(tmp_path):
    from stable_audio_core.training import state
    from stable_audio_core.training.trainer import TrainerConfig, train

    class Clips:
        def __len__(self):
            return 4

        def get(self, index, seed):
            return {"audio": tones(batch=1, seed=index)[0], "padding_mask": torch.ones(LENGTH, dtype=torch.bool)}

        def collate(self, items, seeds):
            return {"audio": torch.stack([i["audio"] for i in items]),
                    "padding_mask": torch.stack([i["padding_mask"] for i in items]),
                    "seeds": torch.tensor(seeds, dtype=torch.int64)}  # fmt: skip

    task = tiny_task()
    summary = train(task, Clips(), TrainerConfig(out_dir=tmp_path, max_steps=4, batch_size=2, demo_every=4,
                                                 checkpoint_every=4, device="cpu"), progress=False)  # fmt: skip
    assert summary.step == 4
    assert {"generator/stft", "discriminator/hinge"} <= set(summary.metrics)
    checkpoint = state.read_latest(tmp_path)
    load_autoencoder(checkpoint / RUN_CONFIG_FILE, checkpoint / RUN_MODEL_FILE)   # loads strictly
    assert list((tmp_path / "demos").rglob("recon_*.wav"))


def test_export_round_trips_through_our_loader_in_the_reference_layout():
    task = tiny_task()
    run_phases(task, make_batch(tones()), steps=1)
    weights, config = task.export(None)
    assert config["model_type"] == "autoencoder" and config["model"] == TINY_VAE["model"]
    assert all(k.startswith(("encoder.", "decoder.")) for k in weights)
    assert any(k.endswith(".weight_g") for k in weights) and not any(k.endswith(".weight") for k in weights)
    model = build_autoencoder({"type": "autoencoder", "config": config["model"]}, SAMPLE_RATE)
    load_state_dict_strict(model, weights, "exported VAE")
    audio = tones()
    task.autoencoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.decode(model.encode(audio)),
                                   task.autoencoder.decode(task.autoencoder.encode(audio)))  # fmt: skip


def test_export_prefers_the_averaged_weights():
    task = tiny_task()
    averaged = copy.deepcopy(task.autoencoder)
    with torch.no_grad():
        next(averaged.parameters()).add_(1.0)
    weights, _ = task.export({"autoencoder": averaged})
    key = next(iter(averaged.state_dict()))
    torch.testing.assert_close(weights[key], averaged.state_dict()[key])


def test_start_weights_load_from_a_diffusion_checkpoints_pretransform(tmp_path):
    source = tiny_task(seed=3)
    path = tmp_path / "model.safetensors"
    save_file({f"pretransform.model.{k}": v.contiguous() for k, v in source.export(None)[0].items()}, str(path))
    task = tiny_task(checkpoint=str(path))
    for key, value in source.autoencoder.state_dict().items():
        assert torch.equal(task.autoencoder.state_dict()[key], value), key


def test_demo_writes_reals_followed_by_reconstructions(tmp_path):
    task = tiny_task(demo_items=2)
    run_phases(task, make_batch(tones(batch=3)), steps=1)
    (path,) = task.demo(tmp_path, 7, None)
    assert path.name == "recon_00000007.wav"
    import soundfile as sf
    data, rate = sf.read(str(path))
    assert rate == SAMPLE_RATE and data.shape == (4 * LENGTH, 2)


def test_reference_training_section_sets_weights_and_optimisers():
    config = copy.deepcopy(TINY_VAE)
    config["training"] = {
        "learning_rate": 1.5e-4, "warmup_steps": 0, "use_ema": True,
        "optimizer_configs": {
            "autoencoder": {"optimizer": {"type": "AdamW", "config": {"betas": [0.8, 0.99], "lr": 1.5e-4,
                                                                       "weight_decay": 1e-3}},
                            "scheduler": {"type": "InverseLR", "config": {"inv_gamma": 200000}}},
            "discriminator": {"optimizer": {"type": "AdamW", "config": {"lr": 3e-4}}}},
        "loss_configs": {
            "discriminator": {"type": "encodec", "config": {"filters": 4, "n_ffts": [128, 64]},
                              "weights": {"adversarial": 0.2, "feature_matching": 4.0}},
            "spectral": {"type": "mrstft", "config": {"fft_sizes": [256, 64], "perceptual_weighting": True},
                         "weights": {"mrstft": 2.0}},
            "time": {"type": "l1", "weights": {"l1": 0.0}},
            "bottleneck": {"type": "kl", "weights": {"kl": 1e-3}}},
        "demo": {"demo_every": 2000},
    }  # fmt: skip
    task = build_vae_task(config, {"kl": 5e-4})
    assert (task.weights.stft, task.weights.adversarial, task.weights.feature_matching, task.weights.kl) == (
        2.0, 0.2, 4.0, 5e-4)
    phases = {p.name: p for p in task.phases()}
    assert phases["generator"].learning_rate == 1.5e-4 and phases["discriminator"].learning_rate == 3e-4
    assert phases["generator"].weight_decay == 1e-3
    assert task.stft_loss.resolution_loss.fft_sizes == [256, 64]
    assert task.stft_loss.resolution_loss.perceptual_weighting
    # A config's loss section replaces the defaults whole (auraloss' default: no A-weighting).
    del config["training"]["loss_configs"]["spectral"]["config"]["perceptual_weighting"]
    assert not build_vae_task(config, {}).stft_loss.resolution_loss.perceptual_weighting


@pytest.mark.parametrize("model_edit, options, message", [
    (None, {"lerning_rate": 1e-4}, "lerning_rate"),
    (None, {"discriminator": {"filterz": 4}}, "filterz"),
    (None, {"spectral": {"fft_size": [64]}}, "fft_size"),
    (None, {"phase": 3}, "phase"),
    (None, {"warmup_mode": "late"}, "warmup_mode"),
    (lambda c: c.update(model_type="diffusion_cond"), {}, "model_type 'autoencoder'"),
    (lambda c: c.update(training={"encoder_freeze_on_warmup": True}), {}, "phase"),
    (lambda c: c.update(training={"loss_configs": {"mrmel": {}}}), {}, "mrmel"),
])  # fmt: skip
def test_bad_configs_and_options_raise_config_errors_naming_the_problem(model_edit, options, message):
    config = copy.deepcopy(TINY_VAE)
    if model_edit is not None:
        model_edit(config)
    with pytest.raises(ConfigError, match=message):
        build_vae_task(config, {**TINY_OPTIONS, **options})


def test_batches_with_the_wrong_channel_count_are_rejected():
    task = tiny_task()
    generator = {p.name: p for p in task.phases()}["generator"]
    with pytest.raises(InputError, match="audio_channels"):
        generator.loss_fn(make_batch(tones()[:, :1]), context(0))


@pytest.mark.heavy
def test_reconstruction_loss_goes_down_over_a_short_run():
    torch.manual_seed(0)
    task = tiny_task()
    clips = tones(batch=4, seed=11)
    history = run_phases(task, make_batch(clips), steps=120, lr=2e-3)
    stft = [logged["stft"] for _, name, logged in history if name == "generator"]
    first, last = sum(stft[:5]) / 5, sum(stft[-5:]) / 5
    print(f"generator STFT loss: first 5 steps {first:.3f}, last 5 steps {last:.3f}")
    assert last < 0.7 * first
