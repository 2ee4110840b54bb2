"""Diffusion training: objective formulas, per-item randomness, condition dropout, frozen text
encoder, LoRA, export and fine-tuning, on tiny configs (helpers.tiny_config and the committed
parity configs)."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from stable_audio_core.errors import ConfigError, InputError
from stable_audio_core.factory import load_model
from stable_audio_core.pipeline import generate
from stable_audio_core.training.data import collate_items
from stable_audio_core.training.diffusion_task import (
    DiffusionTask, build_diffusion_task, dropout_draws, noised_and_target, per_item_mse,
    sample_timesteps,
)
from stable_audio_core.training.export import save_diffusion_checkpoint
from stable_audio_core.training.lora import LoRALinear, apply_lora, lora_parameters, merge_lora, target_patterns
from stable_audio_core.training.task import StepContext, latent_padding_mask, per_item_rand, per_item_randn

from helpers import FIXTURES, tiny_config

CPU = StepContext(step=0, micro_batch=0, accumulation=1, device=torch.device("cpu"))
# float32 on both sides of every comparison of one computation done two ways (batched vs per item,
# merged vs adapted weights): only summation order differs.
FLOAT_TOL = 1e-5


def parity_config(name: str) -> dict:
    return json.loads((FIXTURES / "parity" / f"{name}.json").read_text())["model_config"]


class ToneDataset:
    """Stereo tones whose pitch the (number) prompt names; the dataset contract of training.data."""

    def __init__(self, count: int, sample_size: int, sample_rate: int = 44100, prompt_key: str = "prompt"):
        self.count, self.sample_size, self.sample_rate, self.prompt_key = count, sample_size, sample_rate, prompt_key

    def __len__(self) -> int:
        return self.count

    def get(self, index: int, seed: int) -> dict:
        pitch = index % 4
        t = torch.arange(self.sample_size) / self.sample_rate
        phase = float(torch.rand((), generator=torch.Generator().manual_seed(seed)) * 6.28)
        wave = 0.5 * torch.sin(2 * math.pi * 1000.0 * (pitch + 1) * t + phase)
        real = self.sample_size - 16 * (index % 3)
        wave[real:] = 0.0
        return {"audio": torch.stack([wave, -wave]), "padding_mask": torch.arange(self.sample_size) < real,
                "metadata": {self.prompt_key: float(pitch), "seconds_start": 0, "seconds_total": 1}}

    def collate(self, items: list[dict], seeds) -> dict:
        return collate_items(items, seeds)


class ToneLatents(ToneDataset):
    """The same items as pre-encoded latents (random, fixed per index): no VAE in the loop."""

    def get(self, index: int, seed: int) -> dict:
        item = super().get(index, seed)
        latents = torch.randn(16, self.sample_size // 16, generator=torch.Generator().manual_seed(index))
        return {"latents": latents, "padding_mask": torch.ones(latents.shape[-1], dtype=torch.bool),
                "metadata": item["metadata"]}


def audio_batch(size: int = 4, seed0: int = 0, sample_size: int = 1024) -> dict:
    data = ToneDataset(8, sample_size)
    seeds = list(range(seed0, seed0 + size))
    return data.collate([data.get(i, s) for i, s in enumerate(seeds)], seeds)


def latent_batch(size: int = 4, channels: int = 16, length: int = 64) -> dict:
    g = torch.Generator().manual_seed(3)
    return {"latents": torch.randn(size, channels, length, generator=g),
            "padding_mask": torch.ones(size, length, dtype=torch.bool),
            "metadata": [{"prompt": float(i), "seconds_start": 0, "seconds_total": 1} for i in range(size)],
            "seeds": torch.arange(10, 10 + size)}


def split(batch: dict, start: int, stop: int) -> dict:
    return {k: (v[start:stop] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}


# --- the objective -------------------------------------------------------------------------------

def test_v_objective_noised_input_and_target_follow_the_cosine_schedule():
    x0 = torch.tensor([[[1.0, -2.0]], [[0.5, 3.0]], [[2.0, 2.0]]])
    noise = torch.tensor([[[0.3, 0.1]], [[-1.0, 0.0]], [[1.5, -0.5]]])
    t = torch.tensor([0.0, 0.5, 1.0])
    noised, target = noised_and_target(x0, noise, t, "v")
    c = math.cos(math.pi / 4)  # t = 0.5: alpha = sigma = cos(pi / 4)
    expected_noised = torch.tensor([[[1.0, -2.0]], [[c * 0.5 - c, c * 3.0]], [[1.5, -0.5]]])
    expected_target = torch.tensor([[[0.3, 0.1]], [[-c - c * 0.5, -c * 3.0]], [[-2.0, -2.0]]])
    assert torch.allclose(noised, expected_noised, atol=1e-6)
    assert torch.allclose(target, expected_target, atol=1e-6)


def test_rectified_flow_interpolates_linearly_and_targets_noise_minus_data():
    x0, noise = torch.full((2, 1, 3), 2.0), torch.full((2, 1, 3), -1.0)
    t = torch.tensor([0.25, 1.0])
    for objective in ("rectified_flow", "rf_denoiser"):
        noised, target = noised_and_target(x0, noise, t, objective)
        assert torch.allclose(noised[0], torch.full((1, 3), 0.75 * 2.0 - 0.25))
        assert torch.allclose(noised[1], noise[1])
        assert torch.allclose(target, noise - x0)


def test_timestep_samplers_stay_in_the_unit_interval_with_the_expected_centre():
    seeds = torch.arange(4000)
    uniform = sample_timesteps(seeds, "uniform")
    assert torch.equal(uniform, per_item_rand(seeds, "timestep"))
    # 4000 draws: the standard error of a mean of U[0,1) is 0.0046; 0.02 is > 4 of them.
    assert abs(float(uniform.mean()) - 0.5) < 0.02
    assert abs(float(sample_timesteps(seeds, "logit_normal").median()) - 0.5) < 0.03
    for sampler in ("logit_normal", "trunc_logit_normal", "log_snr"):
        t = sample_timesteps(seeds, sampler)
        assert t.shape == (4000,) and float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_step_uses_item_seeds_and_the_loss_is_the_mse_to_the_v_target():
    task = build_diffusion_task(tiny_config(), {"seed": 1, "cond_dropout": 0.0})
    batch = latent_batch()
    step = task.prepare(batch)
    assert torch.equal(step.t, per_item_rand(batch["seeds"], "timestep"))
    assert torch.equal(step.noise, per_item_randn(batch["seeds"], "noise", (16, 64)))
    alpha = torch.cos(step.t * math.pi / 2)[:, None, None]
    sigma = torch.sin(step.t * math.pi / 2)[:, None, None]
    assert torch.allclose(step.noised, alpha * batch["latents"] + sigma * step.noise, atol=1e-6)
    assert torch.allclose(step.target, alpha * step.noise - sigma * batch["latents"], atol=1e-6)

    loss, logs = task.loss(batch, CPU)
    inputs = task.model.condition(batch["metadata"])
    by_hand = task.model.model_fn(inputs)(step.noised, step.t)
    assert loss.item() == pytest.approx(((by_hand - step.target) ** 2).mean().item(), rel=1e-5)
    assert logs["mse"] == pytest.approx(loss.item())


def test_a_batch_gives_the_same_draws_and_losses_however_it_is_split():
    task = build_diffusion_task(tiny_config(), {"seed": 2})
    batch = audio_batch(4)
    whole = task.prepare(batch)
    halves = [task.prepare(split(batch, 0, 1)), task.prepare(split(batch, 1, 4))]
    for name in ("x0", "t", "noise", "dropped"):
        joined = torch.cat([getattr(h, name) for h in halves])
        assert torch.allclose(getattr(whole, name).float(), joined.float(), atol=FLOAT_TOL), name
    loss, _ = task.loss(batch, CPU)
    parts = [task.loss(split(batch, i, i + 1), CPU)[0].item() for i in range(4)]
    assert loss.item() == pytest.approx(sum(parts) / 4, rel=1e-5)


def test_latents_from_audio_are_posterior_draws_seeded_per_item():
    task = build_diffusion_task(tiny_config(), {"seed": 2})
    batch = audio_batch(2)
    first, _ = task.clean_latents(batch, torch.device("cpu"))
    again, _ = task.clean_latents(batch, torch.device("cpu"))
    mean = task.model.autoencoder.encode(batch["audio"])
    assert torch.equal(first, again)
    assert not torch.allclose(first, mean)           # a draw, not the mean
    swapped = {**batch, "audio": batch["audio"].flip(0), "seeds": batch["seeds"].flip(0)}
    assert torch.allclose(task.clean_latents(swapped, torch.device("cpu"))[0], first.flip(0), atol=FLOAT_TOL)


# --- condition dropout ------------------------------------------------------------------------------

def test_condition_dropout_drops_ten_percent_of_items_reproducibly():
    seeds = torch.arange(5000)
    dropped = dropout_draws(seeds)[:, 0] < 0.1
    # Binomial(5000, 0.1): standard deviation 0.0042 of the rate; 0.02 is about 5 of them.
    assert abs(float(dropped.float().mean()) - 0.1) < 0.02
    assert torch.equal(dropped, dropout_draws(seeds)[:, 0] < 0.1)
    task = build_diffusion_task(tiny_config(), {})
    assert task.options.cond_dropout == 0.1


def test_dropped_dit_items_see_zero_cross_attention_tokens_but_keep_the_global_embedding():
    task = build_diffusion_task(tiny_config(), {"cond_dropout": 1.0})
    batch = latent_batch(2)
    step = task.prepare(batch)
    kept = task.model.condition(batch["metadata"])
    assert step.dropped[:, 0].all()
    assert torch.count_nonzero(step.inputs["cross_attn_cond"]) == 0
    assert torch.equal(step.inputs["global_embed"], kept.global_embed)
    # The unconditional branch is the one classifier-free guidance evaluates at sampling time.
    none = build_diffusion_task(tiny_config(), {"cond_dropout": 0.0})
    assert torch.equal(none.prepare(batch).inputs["cross_attn_cond"], kept.cross_attn_cond)


def test_dropped_unet_items_use_the_learned_unconditional_embedding():
    config = parity_config("paperunet_v_dpmpp2m")
    task = build_diffusion_task(config, {"cond_dropout": 1.0})
    latents = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
    batch = {"latents": latents, "padding_mask": torch.ones(2, 8, dtype=torch.bool), "seeds": torch.tensor([4, 5]),
             "metadata": [{"prompt": 1.0, "seconds_start": 0, "seconds_total": 3},
                          {"prompt": 7.0, "seconds_start": 2, "seconds_total": 5}]}
    step = task.prepare(batch)
    assert step.inputs["fixed_embedding_mask"].all()
    loss, _ = task.loss(batch, CPU)
    unconditional = task.predict(step)
    other = dict(step.inputs, cross_attn_cond=torch.randn_like(step.inputs["cross_attn_cond"]))
    assert torch.allclose(task.model.backbone(step.noised, step.t, **other), unconditional, atol=FLOAT_TOL)
    assert loss.item() == pytest.approx(((unconditional - step.target) ** 2).mean().item(), rel=1e-5)


# --- what trains ------------------------------------------------------------------------------------

def t5_folder(tmp_path):
    """A tiny T5 text-encoder folder: the committed transformers fixture + a word-level tokenizer."""
    folder = tmp_path / "t5"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURES / "t5" / "relu" / name, folder / name)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: 3 + i for i, w in enumerate("a soft loud drum bell".split())}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_text_encoder_is_frozen_and_the_rest_of_the_conditioner_trains(tmp_path):
    config = tiny_config()
    config["model"]["conditioning"]["configs"][0] = {"id": "prompt", "type": "t5",
                                                     "config": {"t5_model_name": "tiny-t5", "max_length": 6}}
    with pytest.raises(ConfigError, match="text_encoder"):
        build_diffusion_task(config, {})
    task = build_diffusion_task(config, {"text_encoder": str(t5_folder(tmp_path))})
    encoder = task.model.conditioner.conditioners["prompt"].text_encoder.model
    batch = latent_batch(2)
    batch["metadata"] = [{"prompt": "a soft drum", "seconds_start": 0, "seconds_total": 1},
                         {"prompt": "loud bell", "seconds_start": 0, "seconds_total": 1}]
    loss, _ = task.loss(batch, CPU)
    loss.backward()
    trained = {id(p) for p in task.phases()[0].parameters}
    assert all(id(p) not in trained and p.grad is None for p in encoder.parameters())
    timing = task.model.conditioner.conditioners["seconds_total"]
    assert all(id(p) in trained and p.grad is not None for p in timing.parameters())
    assert all(id(p) in trained for p in task.model.backbone.parameters())
    assert not any(p.requires_grad for p in task.model.autoencoder.parameters())

    # Cached text features are computed one text at a time: the same numbers up to float rounding.
    cached = build_diffusion_task(config, {"text_encoder": str(t5_folder(tmp_path / "again")), "cache_text_embeddings": 8})
    for _ in range(2):  # the second pass reads the cache
        tokens = cached.model.conditioner(batch["metadata"], "cpu")["prompt"][0]
        assert torch.allclose(tokens, task.model.conditioner(batch["metadata"], "cpu")["prompt"][0], atol=FLOAT_TOL)
    assert len(cached.model.conditioner.conditioners["prompt"].text_encoder._cache) == 2


def test_lora_starts_as_the_identity_and_merging_keeps_the_function():
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.GELU(), torch.nn.Linear(12, 8))
    x = torch.randn(5, 8)
    before = block(x)
    keys = set(block.state_dict())
    paths = apply_lora(block, rank=2, alpha=4.0, patterns=[r"^[02]$"], generator=torch.Generator().manual_seed(1))
    assert paths == ["0", "2"] and isinstance(block[0], LoRALinear)
    assert torch.equal(block(x), before)
    with torch.no_grad():
        for p in lora_parameters(block):
            p.add_(0.3 * torch.randn(p.shape))
    adapted = block(x)
    assert not torch.allclose(adapted, before)
    merge_lora(block)
    assert set(block.state_dict()) == keys and type(block[0]) is torch.nn.Linear
    assert torch.allclose(block(x), adapted, atol=FLOAT_TOL)


@pytest.mark.parametrize("fixture", ["sao1_dit_v_dpmpp2m", "paperunet_v_dpmpp2m"])
def test_lora_targets_the_attention_and_feed_forward_projections_and_only_they_train(fixture):
    config = parity_config(fixture)
    plain = build_diffusion_task(config, {"seed": 3})
    task = build_diffusion_task(config, {"seed": 3, "lora": {"rank": 4, "alpha": 8}})
    names = task.lora_paths
    assert any("cross" in n for n in names) and any("ff" in n or "feed_forward" in n for n in names)
    assert all("to_timestep_embed" not in n and "to_mapping" not in n for n in names)
    params = task.phases()[0].parameters
    assert {id(p) for p in params} == {id(p) for p in lora_parameters(task.model.backbone)}
    frames = 8 if "unet" in fixture else 64
    batch = latent_batch(2, 16, frames)
    step = task.prepare(batch)
    assert torch.allclose(task.predict(step), plain.predict(step), atol=FLOAT_TOL)
    with pytest.raises(ConfigError, match="unknown lora target"):
        target_patterns(config["model"]["diffusion"]["type"], ["everything"])


def test_lora_export_is_a_plain_checkpoint_with_the_adapters_merged(tmp_path):
    config = tiny_config()
    task = build_diffusion_task(config, {"seed": 4, "lora": {"rank": 2, "targets": ["attention"]}})
    with torch.no_grad():
        for p in lora_parameters(task.model.backbone):
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    weights, model_config = task.export()
    plain = build_diffusion_task(config, {"seed": 4})
    assert set(weights) == set(plain.export()[0])
    save_file(weights, str(tmp_path / "model.safetensors"))
    loaded = load_model(model_config, tmp_path / "model.safetensors")
    step = task.prepare(latent_batch(2))
    assert torch.allclose(task.predict(step, loaded.backbone), task.predict(step), atol=FLOAT_TOL)


# --- export, fine-tuning, demos and the trainer -----------------------------------------------------

def sgd_steps(task: DiffusionTask, batches: list[dict], lr: float = 1e-3) -> list[float]:
    phase = task.phases()[0]
    optimizer = torch.optim.Adam(phase.parameters, lr=lr)
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        loss, _ = phase.loss_fn(batch, CPU)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_export_with_ema_loads_in_our_factory_and_generates(tmp_path):
    task = build_diffusion_task(tiny_config(), {"seed": 5})
    sgd_steps(task, [latent_batch(2), latent_batch(2)])
    ema = copy.deepcopy(task.model.backbone)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    checkpoint, config_path = save_diffusion_checkpoint(task.model, tmp_path, backbone=ema)
    weights, _ = task.export({"backbone": ema})
    model = load_model(config_path, checkpoint)
    for key, value in ema.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)
        assert torch.equal(weights[f"model.model.{key}"], value)
    result = generate(model, conditioning={"prompt": 1.0, "seconds_start": 0, "seconds_total": 1},
                      steps=3, seed=0, sampler="dpmpp-2m", trim=False)
    assert result.audio.shape == (1, 2, 1024) and torch.isfinite(result.audio).all()


def test_fine_tuning_starts_from_the_checkpoint_and_its_vae(tmp_path):
    source = build_diffusion_task(tiny_config(), {"seed": 6})
    checkpoint, _ = save_diffusion_checkpoint(source.model, tmp_path / "released")
    vae_only = {k[len("pretransform.model."):]: v for k, v in source.export()[0].items()
                if k.startswith("pretransform.model.")}
    save_file(vae_only, str(tmp_path / "vae.safetensors"))
    task = build_diffusion_task(tiny_config(), {"seed": 7, "checkpoint": str(checkpoint)})
    assert all(torch.equal(a, b) for a, b in zip(task.model.state_dict().values(), source.model.state_dict().values()))
    vae = build_diffusion_task(tiny_config(), {"seed": 7, "pretransform_checkpoint": str(tmp_path / "vae.safetensors")})
    assert all(torch.equal(a, b) for a, b in zip(vae.model.autoencoder.state_dict().values(),
                                                 source.model.autoencoder.state_dict().values()))
    assert not torch.equal(next(vae.model.backbone.parameters()), next(source.model.backbone.parameters()))


def test_options_are_checked_and_the_config_training_section_sets_defaults():
    with pytest.raises(ConfigError, match="unknown diffusion training option"):
        build_diffusion_task(tiny_config(), {"dropout": 0.2})
    with pytest.raises(ConfigError, match="timestep_sampler"):
        build_diffusion_task(tiny_config(), {"timestep_sampler": "sobol"})
    config = tiny_config()
    config["training"] = {"cfg_dropout_prob": 0.25, "timestep_sampler": "logit_normal", "learning_rate": 1e-4}
    task = build_diffusion_task(config, {})
    assert task.options.cond_dropout == 0.25 and task.options.timestep_sampler == "logit_normal"
    latents_only = build_diffusion_task(tiny_config(), {"latents": True})
    with pytest.raises(InputError, match="latents"):
        latents_only.prepare(audio_batch(2))


def test_padding_mask_restricts_the_loss_to_real_frames_when_asked():
    output, target = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    target[0, :, 2:] = 5.0
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert torch.allclose(per_item_mse(output, target, mask), torch.tensor([1.0, 1.0]))
    assert torch.allclose(per_item_mse(output, target), torch.tensor([13.0, 1.0]))
    # Item i of audio_batch has 16 * (i % 3) padded samples; a latent frame (16 samples) counts as
    # padding when its first sample is padding (nearest-neighbour resize, as stable-audio-tools).
    frames = latent_padding_mask(audio_batch(4)["padding_mask"], 64)
    assert frames.sum(dim=1).tolist() == [64, 63, 62, 64]
    batch = latent_batch(2)
    batch["padding_mask"] = frames[1:3]
    assert build_diffusion_task(tiny_config(), {}).prepare(batch).loss_mask is None
    task = build_diffusion_task(tiny_config(), {"mask_padding": True})
    assert torch.equal(task.prepare(batch).loss_mask, frames[1:3])


def test_demo_writes_one_clip_per_prompt_with_the_ema_weights(tmp_path):
    prompts = [{"prompt": 1.0, "seconds_start": 0, "seconds_total": 1}, {"prompt": 3.0, "seconds_start": 0, "seconds_total": 1}]
    task = build_diffusion_task(tiny_config(), {"demo_prompts": prompts, "demo_steps": 2})
    ema = {"backbone": copy.deepcopy(task.model.backbone)}
    paths = task.demo(tmp_path, 12, ema)
    assert [p.name for p in paths] == ["demo_00000012_00.wav", "demo_00000012_01.wav"]
    assert task.model.backbone.training   # the trained weights are back, in training mode


def test_trainer_runs_diffusion_steps_and_writes_a_loadable_checkpoint(tmp_path):
    trainer = pytest.importorskip("stable_audio_core.training.trainer")
    task = build_diffusion_task(tiny_config(), {"seed": 8, "latents": True})
    config = trainer.TrainerConfig(out_dir=tmp_path / "run", max_steps=3, batch_size=4, accumulation=2,
                                   learning_rate=1e-3, checkpoint_every=3, log_every=1, device="cpu")
    summary = trainer.train(task, ToneLatents(8, 1024), config, progress=False)
    assert summary.step == 3 and summary.checkpoint is not None
    model = load_model(summary.checkpoint / "model_config.json", summary.checkpoint / "model.safetensors")
    result = generate(model, conditioning={"prompt": 2.0, "seconds_start": 0, "seconds_total": 1},
                      steps=2, seed=1, sampler="dpmpp-2m", trim=False)
    assert torch.isfinite(result.audio).all()


@pytest.mark.heavy
@pytest.mark.parametrize("fixture", ["tiny", "saosmall_dit_rf_euler", "paperunet_v_dpmpp2m"])
def test_loss_goes_down_over_a_short_run(fixture, capsys):
    """200 steps on pre-encoded latents of eight tones; the loss is measured on held-out item
    seeds (noise, times and dropout never seen in training) before and after."""
    config = tiny_config() if fixture == "tiny" else parity_config(fixture)
    task = build_diffusion_task(config, {"seed": 9})
    data = ToneDataset(8, config["sample_size"])
    items = [data.get(i, i) for i in range(8)]
    with torch.no_grad():
        latents = task.model.autoencoder.encode(torch.stack([item["audio"] for item in items]))

    def batch(first_seed: int) -> dict:
        return {"latents": latents, "padding_mask": torch.ones(8, latents.shape[-1], dtype=torch.bool),
                "metadata": [item["metadata"] for item in items], "seeds": torch.arange(first_seed, first_seed + 8)}

    def held_out_loss() -> float:
        with torch.no_grad():
            return sum(task.loss(batch(10_000 + 8 * k), CPU)[0].item() for k in range(4)) / 4

    before = held_out_loss()
    losses = sgd_steps(task, [batch(8 * step) for step in range(200)], lr=1e-3)
    after = held_out_loss()
    with capsys.disabled():
        print(f"\n{fixture}: held-out loss {before:.4f} -> {after:.4f}; training loss, mean of the first 10 "
              f"steps {sum(losses[:10]) / 10:.4f}, of the last 10 {sum(losses[-10:]) / 10:.4f}")
    assert after < 0.5 * before


# --- torchrun: two processes equal one (script mode below) ---------------------------------------

def run_tiny_training(out_dir, steps: int = 3, accumulation: int = 1):
    from stable_audio_core.training.trainer import TrainerConfig, train
    task = build_diffusion_task(tiny_config(), {"seed": 10})
    config = TrainerConfig(out_dir=out_dir, max_steps=steps, batch_size=4, accumulation=accumulation,
                           learning_rate=1e-3, checkpoint_every=steps, log_every=1, device="cpu")
    return train(task, ToneDataset(8, 1024), config, progress=False)


def final_modules(out_dir) -> dict:
    from stable_audio_core.training import state
    saved = torch.load(state.read_latest(out_dir) / state.STATE_FILE, weights_only=True)
    return {f"{name}.{key}": value for name, module in saved["modules"].items() for key, value in module.items()}


@pytest.mark.heavy
def test_torchrun_two_processes_train_the_same_weights_as_one(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not found beside the Python running the tests")
    run_tiny_training(tmp_path / "one")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", __file__, str(tmp_path / "two")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = final_modules(tmp_path / "one"), final_modules(tmp_path / "two")
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    print(f"\ndiffusion, 1 vs 2 processes after 3 steps: max |weight difference| {worst:.2e}")
    # Same per-item draws; only the float summation order of the gradient mean differs, which
    # Adam (lr 1e-3) can turn into weight differences of ~1e-6 (measured 1.1e-6).
    assert worst < 1e-5


if __name__ == "__main__":
    import os
    import sys
    from pathlib import Path
    torch.set_num_threads(1 if "LOCAL_RANK" in os.environ else 2)
    run_tiny_training(Path(sys.argv[1]))


def test_stable_audio_3_training_is_refused_before_any_model_is_built():
    # An SA3 config must not silently get the Stable Audio Open DiT (both are diffusion type "dit").
    config = json.loads((FIXTURES / "sa3_parity" / "small_pingpong_apg.json").read_text())["model_config"]
    with pytest.raises(ConfigError, match="Stable Audio 3"):
        build_diffusion_task(config, {"seed": 0})
