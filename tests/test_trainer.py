"""The generic trainer: exact resume, kill safety, torchrun data parallelism, logs and checkpoints.

Tiny tasks defined here stand in for the real ones: a linear regression (one phase) and a GAN-like
task (two phases with their own learning rates, the discriminator starting one step late). The
dataset follows the data contract (``get(index, seed)``, ``collate(items, seeds)``) and crops at a
seed-dependent offset, so data randomness is part of what must resume exactly.

Also runnable as a script (``python tests/test_trainer.py OUT_DIR --task gan ...``): the kill and
torchrun tests start it as a subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from stable_audio_core.training import state
from stable_audio_core.training.task import Phase, per_item_randn
from stable_audio_core.training.trainer import TrainerConfig, train

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


# ---------------------------------------------------------------------------------------------
# Tiny data and tasks


class TinyCrops:
    """``count`` fixed random signals; an item is a window at an offset drawn from its seed."""

    def __init__(self, count: int = 10, length: int = 12, window: int = 8):
        self.signals = torch.randn(count, 1, length, generator=torch.Generator().manual_seed(123))
        self.window = window

    def __len__(self) -> int:
        return len(self.signals)

    def get(self, index: int, seed: int) -> dict:
        room = self.signals.shape[-1] - self.window + 1
        offset = int(torch.randint(room, (), generator=torch.Generator().manual_seed(seed)))
        return {"audio": self.signals[index, :, offset:offset + self.window].clone(),
                "padding_mask": torch.ones(self.window, dtype=torch.bool),
                "metadata": {"prompt": f"item {index}", "seconds_start": offset, "seconds_total": 12}}

    def collate(self, items: list[dict], seeds: list[int]) -> dict:
        return {"audio": torch.stack([item["audio"] for item in items]),
                "padding_mask": torch.stack([item["padding_mask"] for item in items]),
                "metadata": [item["metadata"] for item in items],
                "seeds": torch.tensor(seeds, dtype=torch.int64)}


class RegressionTask:
    """Predict a fixed linear function of the window plus per-item noise."""

    kind = "diffusion"

    def __init__(self, window: int = 8):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(window, 16), nn.Tanh(), nn.Linear(16, 1))
        self.true_weights = torch.linspace(-1, 1, window)

    def modules(self):
        return {"model": self.model}

    def ema_modules(self):
        return {"model": self.model}

    def to(self, device):
        self.model.to(device)
        self.true_weights = self.true_weights.to(device)
        return self

    def loss(self, batch, ctx):
        audio = batch["audio"][:, 0]
        noise = per_item_randn(batch["seeds"], "noise", (1,), device=audio.device)
        target = audio @ self.true_weights[:, None] + 0.1 * noise
        loss = ((self.model(audio) - target) ** 2).mean()
        return loss, {"mse": float(loss.detach())}

    def phases(self):
        return [Phase("model", list(self.model.parameters()), self.loss)]

    def export(self, ema):
        model = (ema or {}).get("model", self.model)
        return {f"model.{k}": v for k, v in model.state_dict().items()}, {"model_type": "tiny"}

    def demo(self, out_dir, step, ema):
        path = Path(out_dir) / "demo.txt"
        path.write_text(f"step {step}, noise {torch.randn(1).item()}\n")   # global RNG on purpose
        return [path]


class GanTask(RegressionTask):
    """A generator maps per-item noise to windows; a discriminator learns real from fake."""

    kind = "vae"

    def __init__(self, window: int = 8):
        torch.manual_seed(1)
        self.generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, window))
        self.discriminator = nn.Sequential(nn.Linear(window, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))

    def modules(self):
        return {"generator": self.generator, "discriminator": self.discriminator}

    def ema_modules(self):
        return {"generator": self.generator}

    def to(self, device):
        self.generator.to(device)
        self.discriminator.to(device)
        return self

    def fake(self, batch):
        z = per_item_randn(batch["seeds"], "latent", (4,), device=batch["audio"].device)
        return self.generator(z)

    def discriminator_loss(self, batch, ctx):
        real = self.discriminator(batch["audio"][:, 0])
        fake = self.discriminator(self.fake(batch).detach())
        loss = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
        return loss, {}

    def generator_loss(self, batch, ctx):
        fake = self.fake(batch)
        adversarial = -self.discriminator(fake).mean()
        reconstruction = ((fake - batch["audio"][:, 0]) ** 2).mean()
        return adversarial + reconstruction, {"reconstruction": float(reconstruction.detach())}

    def phases(self):
        return [Phase("discriminator", list(self.discriminator.parameters()), self.discriminator_loss,
                      start_step=1, learning_rate=3e-3, betas=(0.5, 0.9)),
                Phase("generator", list(self.generator.parameters()), self.generator_loss)]

    def export(self, ema):
        generator = (ema or {}).get("generator", self.generator)
        return {f"generator.{k}": v for k, v in generator.state_dict().items()}, {"model_type": "tiny_gan"}

    def export_files(self, ema):   # the optional hook: more files in each checkpoint folder
        return {"tokenizer.json": b'{"tiny": true}'}


TASKS = {"regression": RegressionTask, "gan": GanTask}


def tiny_config(out_dir: Path, **overrides) -> TrainerConfig:
    values = dict(out_dir=out_dir, max_steps=8, batch_size=4, accumulation=2, learning_rate=1e-2,
                  lr_schedule="cosine", warmup_steps=2, ema_decay=0.9, checkpoint_every=3,
                  keep_checkpoints=2, log_every=2, seed=7, device="cpu")
    values.update(overrides)
    return TrainerConfig(**values)


def stop_at(step: int):
    """(should_stop, on_step) that stop a run once ``step`` optimizer steps are done."""
    done = {"step": 0}

    def on_step(info):
        done["step"] = info["step"]
    return (lambda: done["step"] >= step), on_step


def final_state(out_dir: Path) -> dict:
    checkpoint = state.read_latest(out_dir)
    return torch.load(checkpoint / state.STATE_FILE, weights_only=True)


def assert_tensors_identical(a, b, where: str = "") -> None:
    """Recursively: identical structure, and every tensor bit-identical (torch.equal)."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_tensors_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tensors_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where}: max abs diff {(a.float() - b.float()).abs().max()}"
    else:
        assert a == b, f"{where}: {a} != {b}"


def assert_same_training(a: dict, b: dict) -> None:
    for key in ("step", "data_position", "modules", "ema", "optimizers", "rng"):
        assert_tensors_identical(a[key], b[key], key)


# ---------------------------------------------------------------------------------------------
# Resume


@pytest.mark.parametrize("task_name, overrides", [
    ("regression", {}),
    ("gan", {"lr_schedule": "linear", "accumulation": 1, "batch_size": 3}),
])
def test_resumed_run_is_bit_identical_to_uninterrupted_run(tmp_path, task_name, overrides):
    # 10 items, global batch 4 (or 3): epochs end mid-batch, and the stop (step 4) falls between
    # checkpoints (3, 6), so the stop itself writes the checkpoint that is resumed from.
    whole = train(TASKS[task_name](), TinyCrops(), tiny_config(tmp_path / "whole", **overrides), progress=False)
    assert whole.step == 8 and not whole.stopped

    should_stop, on_step = stop_at(4)
    first = train(TASKS[task_name](), TinyCrops(), tiny_config(tmp_path / "split", **overrides),
                  progress=False, should_stop=should_stop, on_step=on_step)
    assert first.stopped and first.step == 4
    second = train(TASKS[task_name](), TinyCrops(), tiny_config(tmp_path / "split", **overrides), progress=False)
    assert second.start_step == 4 and second.step == 8

    assert_same_training(final_state(tmp_path / "whole"), final_state(tmp_path / "split"))
    exported = [(path / "model.safetensors").read_bytes() for path in
                (state.read_latest(tmp_path / "whole"), state.read_latest(tmp_path / "split"))]
    assert exported[0] == exported[1]


def test_resume_falls_back_to_newest_complete_checkpoint_when_latest_is_damaged(tmp_path):
    train(RegressionTask(), TinyCrops(), tiny_config(tmp_path, max_steps=6), progress=False)
    newest = state.read_latest(tmp_path)
    assert newest.name == "step-00000006"
    with open(newest / state.STATE_FILE, "r+b") as handle:   # torn write of a newer checkpoint
        handle.truncate(100)
    found, saved = state.find_resume_state(tmp_path)
    assert found.name == "step-00000003" and saved["step"] == 3


def test_ctrl_c_stops_at_the_step_boundary_with_a_checkpoint(tmp_path):
    def interrupt_at_step_2(info):
        if info["step"] == 2:
            signal.raise_signal(signal.SIGINT)   # what Ctrl-C delivers to the main thread
    # A shell's background job (nohup, CI runners) starts with SIGINT ignored: install Python's
    # own handler for the test, as an interactive terminal has it, and put back what was there.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):   # after the checkpoint, so callers stop too
            train(RegressionTask(), TinyCrops(), tiny_config(tmp_path), progress=False,
                  on_step=interrupt_at_step_2)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    finally:
        signal.signal(signal.SIGINT, outer)
    latest = state.read_latest(tmp_path)
    assert latest.name == "step-00000002" and state.is_complete(latest)


def test_resume_prefers_a_newer_complete_checkpoint_than_latest_names(tmp_path):
    # A kill between renaming step-6 into place and replacing `latest` leaves latest at step-3.
    train(RegressionTask(), TinyCrops(), tiny_config(tmp_path, max_steps=6), progress=False)
    state.set_latest(tmp_path, tmp_path / "checkpoints" / "step-00000003")
    found, saved = state.find_resume_state(tmp_path)
    assert found.name == "step-00000006" and saved["step"] == 6


def test_data_loading_workers_do_not_change_the_run(tmp_path):
    train(RegressionTask(), TinyCrops(), tiny_config(tmp_path / "inline", max_steps=4), progress=False)
    train(RegressionTask(), TinyCrops(), tiny_config(tmp_path / "workers", max_steps=4, num_workers=2), progress=False)
    assert_same_training(final_state(tmp_path / "inline"), final_state(tmp_path / "workers"))


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    from stable_audio_core.errors import InputError
    train(RegressionTask(), TinyCrops(), tiny_config(tmp_path, max_steps=1), progress=False)
    with pytest.raises(InputError, match="earlier run"):
        train(RegressionTask(), TinyCrops(), tiny_config(tmp_path, max_steps=1), resume=False, progress=False)


# ---------------------------------------------------------------------------------------------
# Checkpoints, logs, plot


def test_checkpoints_logs_plot_and_demos_are_written(tmp_path):
    summary = train(GanTask(), TinyCrops(), tiny_config(tmp_path, demo_every=4), progress=False)
    # keep_checkpoints=2 of steps 3, 6, 8
    assert [p.name for _, p in state.list_checkpoints(tmp_path)] == ["step-00000006", "step-00000008"]
    assert summary.checkpoint == tmp_path / "checkpoints" / "step-00000008"
    assert (tmp_path / "latest").read_text().strip() == "checkpoints/step-00000008"
    saved = torch.load(summary.checkpoint / "training_state.pt", weights_only=True)
    assert saved["step"] == 8 and set(saved["optimizers"]) == {"discriminator", "generator"}
    assert json.loads((summary.checkpoint / "model_config.json").read_text()) == {"model_type": "tiny_gan"}
    assert (summary.checkpoint / "tokenizer.json").read_bytes() == b'{"tiny": true}'   # export_files
    assert state.is_complete(summary.checkpoint)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert {"generator/loss", "discriminator/loss", "generator/reconstruction", "lr"} <= set(records[-1])
    assert sorted(p.name for p in (tmp_path / "demos").iterdir()) == ["step-00000004", "step-00000008"]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_skips_the_plot_with_one_message(tmp_path, monkeypatch, capsys):
    from stable_audio_core.training.metrics_log import MetricsLog
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib...` fail
    log = MetricsLog(tmp_path)
    log.write({"step": 1, "model/loss": 0.5, "lr": 1e-3})
    assert log.plot() is None and log.plot() is None
    assert capsys.readouterr().err.count("matplotlib is not installed") == 1


def test_log_records_past_the_resumed_step_are_dropped(tmp_path):
    from stable_audio_core.training.metrics_log import MetricsLog, read_log
    log = MetricsLog(tmp_path)
    for step in (2, 4, 6):
        log.write({"step": step, "model/loss": 1.0 / step})
    (tmp_path / "log.jsonl").open("a").write('{"step": 8, "mod')   # torn by a kill
    log.truncate_after(4)
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [2, 4]


def test_learning_rate_schedules_warm_up_then_decay():
    from stable_audio_core.training.lr_schedules import LRSchedule
    cosine = LRSchedule("cosine", total_steps=12, warmup_steps=2, final_fraction=0.1)
    assert [cosine(s) for s in (0, 1)] == [0.5, 1.0]
    assert cosine(7) == pytest.approx(0.55) and cosine(12) == pytest.approx(0.1)
    linear = LRSchedule("linear", total_steps=10)
    assert linear(5) == pytest.approx(0.5)
    inverse = LRSchedule("inverse", inv_gamma=10, power=1.0)
    assert inverse(10) == pytest.approx(0.5)
    assert LRSchedule("constant", warmup_steps=4)(1) == 0.5


def test_ema_warms_up_from_a_copy_toward_the_set_decay():
    from stable_audio_core.training.ema import EMA
    layer = nn.Linear(2, 1)
    ema = EMA({"layer": layer}, decay=0.3, warmup_power=0.75)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update()   # first update copies
    assert torch.equal(ema.averaged["layer"].weight, layer.weight)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    ema.update()   # decay min(0.3, 1 - 2 ** -0.75 = 0.405) = 0.3
    assert torch.allclose(ema.averaged["layer"].weight, torch.full((1, 2), 0.3 * 1.0 + 0.7 * 3.0))
    ema.update()   # third update: decay min(0.3, 1 - 3 ** -0.75 = 0.561) = 0.3, weights already at 3 move on
    assert torch.allclose(ema.averaged["layer"].weight, torch.full((1, 2), 0.3 * 2.4 + 0.7 * 3.0))


class AlternatingGanTask(GanTask):
    """Discriminator alone on odd steps, generator alone on even steps (the VAE task's layout)."""

    def phases(self):
        return [Phase("discriminator", list(self.discriminator.parameters()), self.discriminator_loss,
                      start_step=1, every=2, learning_rate=3e-3, betas=(0.5, 0.9), moves_ema=False),
                Phase("generator", list(self.generator.parameters()), self.generator_loss, every=2)]


def test_ema_moves_only_on_steps_that_change_its_modules(tmp_path):
    train(AlternatingGanTask(), TinyCrops(), tiny_config(tmp_path / "a", max_steps=8), progress=False)
    assert final_state(tmp_path / "a")["ema"]["updates"] == 4   # generator steps 0, 2, 4, 6
    train(GanTask(), TinyCrops(), tiny_config(tmp_path / "b", max_steps=8), progress=False)
    assert final_state(tmp_path / "b")["ema"]["updates"] == 8   # the generator runs every step there


def test_data_order_visits_every_item_once_per_epoch_with_distinct_seeds():
    from stable_audio_core.training.data_order import DataOrder
    order = DataOrder(7, run_seed=3)
    first = [order.item(p) for p in range(7)]
    second = [order.item(p) for p in range(7, 14)]
    assert sorted(i for i, _ in first) == list(range(7)) == sorted(i for i, _ in second)
    assert [i for i, _ in first] != [i for i, _ in second]
    assert len({s for _, s in first + second}) == 14


def test_batch_not_divisible_by_processes_times_accumulation_is_refused(tmp_path):
    from stable_audio_core.errors import InputError
    with pytest.raises(InputError, match="divisible"):
        train(RegressionTask(), TinyCrops(), tiny_config(tmp_path, batch_size=3, accumulation=2), progress=False)


def test_non_finite_loss_stops_before_updating(tmp_path):
    from stable_audio_core.errors import NonFiniteError
    task = RegressionTask()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.loss = lambda batch, ctx: (task.model(batch["audio"][:, 0]).sum() * float("nan"), {})
    with pytest.raises(NonFiniteError, match="'model' loss is nan at step 0"):
        train(task, TinyCrops(), tiny_config(tmp_path), progress=False)
    assert_tensors_identical(before, task.model.state_dict())


def test_task_builders_map_each_kind_to_its_builder_and_name_the_kinds():
    from stable_audio_core.errors import ConfigError
    from stable_audio_core.training import builders
    from stable_audio_core.training.clap_task import build_clap_task
    from stable_audio_core.training.diffusion_task import build_diffusion_task
    from stable_audio_core.training.vae_task import build_vae_task
    assert builders.task_builder("vae") is build_vae_task
    assert builders.task_builder("clap") is build_clap_task
    assert builders.task_builder("diffusion") is build_diffusion_task
    with pytest.raises(ConfigError, match="vae, clap, diffusion"):
        builders.build_task("gan", {}, {})


def test_train_command_takes_the_window_shape_from_the_model_config():
    from argparse import Namespace
    from stable_audio_core.errors import ConfigError, InputError
    from stable_audio_host.train_cli import dataset_shape
    vae = Namespace(task="vae", config="model_config.json")
    assert dataset_shape(vae, {"sample_rate": 44100, "sample_size": 65536}) == (44100, 65536, 2)
    assert dataset_shape(vae, {"sample_rate": 16000, "sample_size": 4096, "audio_channels": 1}) == (16000, 4096, 1)
    with pytest.raises(InputError, match="no sample_size"):
        dataset_shape(vae, {"sample_rate": 44100})
    with pytest.raises(ConfigError, match="not a folder"):
        dataset_shape(vae, "some/folder")
    clap = Namespace(task="clap", sample_rate=48000, seconds=10.0)
    assert dataset_shape(clap, None) == (48000, 480000, 1)


def test_train_command_runs_a_task_on_a_folder_of_audio(tmp_path, monkeypatch):
    import soundfile
    from stable_audio_host import cli
    from stable_audio_core.training import builders
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        soundfile.write(data / f"clip{i}.wav", (0.1 * torch.randn(12, 1)).numpy(), 8000)
        (data / f"clip{i}.json").write_text(json.dumps({"description": f"clip {i}"}))
    (tmp_path / "config.json").write_text(json.dumps({"sample_rate": 8000, "sample_size": 8, "audio_channels": 1}))
    built = {}

    def build_regression(model_config, options):
        built.update(config=model_config, options=options)
        return RegressionTask()
    monkeypatch.setattr(builders, "task_builder", lambda kind: build_regression)
    code = cli.main(["train", "diffusion", "--data", str(data), "--out", str(tmp_path / "run"),
                     "--config", str(tmp_path / "config.json"), "--steps", "4", "--batch-size", "2",
                     "--checkpoint-every", "2", "--lr-schedule", "cosine", "--device", "cpu", "--quiet",
                     "--lora-rank", "4", "--option", "cond_dropout=0.2", "--ema-decay", "0"])
    assert code == 0
    assert built["options"] == {"seed": 0, "lora": {"rank": 4, "alpha": 4}, "cond_dropout": 0.2}
    saved = final_state(tmp_path / "run")
    assert saved["step"] == 4 and saved["ema"] is None and saved["config"]["lr_schedule"] == "cosine"


def test_encode_latents_command_writes_a_latent_dataset(tmp_path):
    import soundfile
    from helpers import tiny_config as tiny_model_config
    from safetensors.torch import save_file
    from stable_audio_host import cli
    from stable_audio_core.factory import build_model
    from stable_audio_core.training.latents import LatentDataset
    config = tiny_model_config()   # Oobleck VAE, downsampling 16, latent_dim 16, window 1024
    (tmp_path / "config.json").write_text(json.dumps(config))
    vae = build_model(config).autoencoder
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        soundfile.write(data / f"clip{i}.wav", (0.1 * torch.randn(1500, 2)).numpy(), 44100)
    code = cli.main(["encode-latents", "--data", str(data), "--out", str(tmp_path / "latents"),
                     "--config", str(tmp_path / "config.json"), "--checkpoint", str(tmp_path / "vae.safetensors"),
                     "--device", "cpu", "--quiet"])
    assert code == 0
    latents = LatentDataset(tmp_path / "latents")
    assert len(latents) == 3 and latents.get(0, seed=1)["latents"].shape == (16, 64)


# ---------------------------------------------------------------------------------------------
# Kill safety and torchrun (subprocesses running this file as a script)


def _script_command(out_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__)), str(out_dir), *args]


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_kill_during_checkpoint_write_keeps_last_good_checkpoint_and_resume_finishes_identically(tmp_path):
    reference = tmp_path / "reference"
    train(GanTask(), TinyCrops(), tiny_config(reference, max_steps=9), progress=False)

    run_dir, flag = tmp_path / "killed", tmp_path / "writing-step-6"
    env = {**os.environ, state.PAUSE_ENV: f"6:{flag}"}
    process = subprocess.Popen(_script_command(run_dir, "--task", "gan", "--steps", "9"), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(flag, process)   # training_state.pt of step 6 is written, the rest is not
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert state.read_latest(run_dir).name == "step-00000003"
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    found, _ = state.find_resume_state(run_dir)
    assert found.name == "step-00000003"

    summary = train(GanTask(), TinyCrops(), tiny_config(run_dir, max_steps=9), progress=False)
    assert summary.start_step == 3 and summary.step == 9
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert_same_training(final_state(reference), final_state(run_dir))


@pytest.mark.heavy
def test_kills_at_random_moments_never_break_resume(tmp_path):
    import random
    reference = tmp_path / "reference"
    config = dict(max_steps=24, checkpoint_every=2)
    train(GanTask(), TinyCrops(), tiny_config(reference, **config), progress=False)
    run_dir = tmp_path / "killed"
    chooser = random.Random(0)
    kills = 0
    for attempt in range(30):
        before = _listing(run_dir / "checkpoints")
        process = subprocess.Popen(_script_command(run_dir, "--task", "gan", "--steps", "24",
                                                   "--checkpoint-every", "2"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # once this process has started writing checkpoints, kill it at a random moment
        while process.poll() is None and _listing(run_dir / "checkpoints") == before:
            time.sleep(0.01)
        time.sleep(chooser.uniform(0.0, 0.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        latest = state.read_latest(run_dir)
        assert latest is not None and state.is_complete(latest)
        if process.returncode == 0:
            break
    assert process.returncode == 0, f"the run did not finish in 30 attempts ({kills} kills)"
    assert kills >= 3, f"only {kills} kills landed mid-run"
    print(f"{kills} kills, {attempt + 1} runs")
    assert_same_training(final_state(reference), final_state(run_dir))


def _listing(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.is_dir() else set()


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    torchrun = VENV_BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not found in .venv")
    single, accumulated, double = tmp_path / "single", tmp_path / "accumulated", tmp_path / "double"
    train(RegressionTask(), TinyCrops(), tiny_config(single, accumulation=1), progress=False)
    train(RegressionTask(), TinyCrops(), tiny_config(accumulated, accumulation=2), progress=False)
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(Path(__file__)), str(double),
         "--task", "regression", "--steps", "8", "--accumulation", "1"],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = final_state(single), final_state(double)
    assert two["world_size"] == 2 and two["step"] == 8
    for name in ("modules", "ema"):
        for key, value in _flat(one[name]).items():
            # Same math, different float summation order (two per-process means averaged by the
            # all-reduce vs one mean over the batch): float32 rounding; measured 3e-8 after 8 steps.
            assert torch.allclose(value, _flat(two[name])[key], rtol=0, atol=1e-6), key
    # Two micro-batches in one process sum g1/2 + g2/2, two processes (g1 + g2)/2: halving is exact
    # in binary floating point, so these agree bit for bit.
    assert_tensors_identical(final_state(accumulated)["modules"], two["modules"])
    assert_tensors_identical(final_state(accumulated)["optimizers"], two["optimizers"])


def _flat(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {k: v for key, item in tree.items() for k, v in _flat(item, f"{prefix}/{key}").items()}
    return {}


# ---------------------------------------------------------------------------------------------
# Script mode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--task", choices=sorted(TASKS), default="gan")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1 if "LOCAL_RANK" in os.environ else 2)
    config = tiny_config(args.out_dir, max_steps=args.steps, accumulation=args.accumulation,
                         checkpoint_every=args.checkpoint_every)
    train(TASKS[args.task](), TinyCrops(), config, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
