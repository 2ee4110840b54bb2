"""The generic training loop: optimizers, schedules, accumulation, clipping, bf16, EMA, data order,
data-parallel gradient averaging, checkpoints, exact resume, progress and logs.

What is trained (networks, losses, phases) comes from a task (``training.task``); the data from a
dataset with ``get(index, seed)`` and ``collate(items, seeds)`` (``training.data``), in the
order ``training.data_order`` fixes. Since every random draw of a task comes from the item seeds,
a global batch gives the same numbers however it is split across processes and micro-batches.

One optimizer step runs each active phase: zero its gradients; per micro-batch, the loss (under
bf16 autocast when asked) divided by the number of micro-batches, backward; gradients averaged
over processes; clipped; learning rate set from the schedule; optimizer step. Then the EMA.
"""
from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, InputError, NonFiniteError
from . import distributed, state
from .data_order import micro_batch_loader, mix_seed
from .ema import EMA
from .metrics_log import MetricsLog
from .lr_schedules import LRSchedule
from .task import Phase, StepContext, TrainingTask

STATE_FORMAT = "stable-audio-training-state"
STATE_VERSION = 1
PRECISIONS = {"no": None, "bf16": torch.bfloat16}
PLOT_INTERVAL = 60.0   # seconds; loss.png is redrawn at checkpoints at most this often, and at the end
# settings whose change on resume makes the run differ from an uninterrupted one
RESUME_SENSITIVE = ("max_steps", "batch_size", "accumulation", "learning_rate", "weight_decay", "betas",
                    "lr_schedule", "warmup_steps", "grad_clip", "mixed_precision", "ema_decay",
                    "ema_power", "seed")


@dataclass
class TrainerConfig:
    """Everything about *how* to train; what to train is the task's."""

    out_dir: Path
    max_steps: int
    batch_size: int = 8             # GLOBAL batch per optimizer step (all processes, all micro-batches)
    accumulation: int = 1           # micro-batches per process per step
    learning_rate: float = 1e-4
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"   # constant | cosine | linear | inverse (see training.lr_schedules)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0   # max global gradient norm per phase; None: no clipping
    mixed_precision: str = "no"     # no | bf16 (autocast around the loss)
    ema_decay: float | None = 0.999   # None: no EMA
    ema_power: float | None = 0.75    # EMA warm-up exponent (see training.ema); None: constant decay
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3       # newest complete checkpoints kept; 0 keeps all
    demo_every: int = 0             # 0: no demos
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0            # DataLoader worker processes (0: load in the training process)
    device: str = "auto"            # auto | cpu | cuda | cuda:N | mps

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (saved in ``training_state.pt``)."""
        values = asdict(self)
        values["out_dir"] = str(self.out_dir)
        values["betas"] = list(self.betas)
        return values


@dataclass
class TrainSummary:
    out_dir: Path
    start_step: int                 # step the run started (or resumed) at
    step: int                       # optimizer steps completed
    stopped: bool                   # True when should_stop / Ctrl-C / SIGTERM ended it early
    checkpoint: Path | None         # the newest checkpoint (written or resumed from)
    metrics: dict[str, float] = field(default_factory=dict)   # the last logged averages
    seconds: float = 0.0            # wall time of this call
    rank: int = 0
    world_size: int = 1


def _to_device(value, device: torch.device):
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# RNG state (tasks draw from item seeds; these cover dropout and anything else global)


def _rng_state() -> dict[str, Any]:
    python_version, python_state, python_gauss = random.getstate()
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": {"version": python_version, "state": list(python_state), "gauss": python_gauss},
    }


def _set_rng_state(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"].cpu())
    if saved["cuda"] and torch.cuda.is_available() and len(saved["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda"]])
    numpy_state = saved["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = saved["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ---------------------------------------------------------------------------------------------
# Stopping and progress


class _StopSignals:
    """The first Ctrl-C (or SIGTERM) asks for a clean stop at the next step boundary; a second
    Ctrl-C interrupts at once. Installed only in the main thread (signal handlers live there)."""

    def __init__(self):
        self.requested = False
        self.received: int | None = None   # the first signal that asked to stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.received = signum
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort at once)",
              file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def raise_received(self) -> None:
        """After the clean stop, end the caller's work the way the signal would have."""
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM)


class _Progress:
    """A tqdm bar (loss, it/s, ETA) when tqdm is installed, else a line per log interval."""

    def __init__(self, enabled: bool, start: int, total: int, log_every: int):
        self.bar = None
        self.latest: dict[str, float] = {}
        self.enabled = enabled
        self.log_every = log_every
        self.total = total
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=start, unit="step", desc="training", file=sys.stderr,
                        dynamic_ncols=True)

    def update(self, step: int, shown: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.latest.update(shown)   # phases that skip a step keep showing their last loss
        text = {key: f"{value:.4g}" for key, value in sorted(self.latest.items())}
        if self.bar is not None:
            self.bar.set_postfix(text, refresh=False)
            self.bar.update(1)
        elif step % self.log_every == 0 or step == self.total:
            print(f"step {step}/{self.total} " + " ".join(f"{k}={v}" for k, v in text.items()), file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# The loop


class _Run:
    """State of one train() call; methods are the steps of the loop."""

    def __init__(self, task: TrainingTask, dataset, config: TrainerConfig, context: distributed.DistributedContext):
        self.task, self.dataset, self.config, self.context = task, dataset, config, context
        self.device = context.device
        self.autocast_dtype = PRECISIONS[config.mixed_precision]
        task.to(self.device)
        self.modules = task.modules()
        self.phases: list[Phase] = task.phases()
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names) or not names:
            raise InputError(f"task {task.kind!r} must declare phases with distinct names, got {names}")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.base_lrs: dict[str, float] = {}
        for phase in self.phases:
            if not phase.parameters:
                raise InputError(f"phase {phase.name!r} of task {task.kind!r} has no parameters to train")
            lr = config.learning_rate if phase.learning_rate is None else phase.learning_rate
            self.base_lrs[phase.name] = lr
            self.optimizers[phase.name] = torch.optim.AdamW(
                phase.parameters, lr=lr, betas=phase.betas or config.betas,
                weight_decay=config.weight_decay if phase.weight_decay is None else phase.weight_decay)
        self.schedule = LRSchedule(config.lr_schedule, total_steps=max(1, config.max_steps),
                                   warmup_steps=config.warmup_steps)
        ema_sources = task.ema_modules() if config.ema_decay is not None else {}
        self.ema = EMA(ema_sources, config.ema_decay, config.ema_power) if ema_sources else None
        self.step = 0
        self.data_position = 0
        self.checkpoint: Path | None = None
        self.saved_step = -1
        self.trained_seconds = 0.0

    # -- checkpoints ---------------------------------------------------------------------------

    def training_state(self, rng_states: list[dict]) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "task_kind": self.task.kind,
            "step": self.step, "data_position": self.data_position,
            "epoch": self.data_position // len(self.dataset),
            "world_size": self.context.world_size,
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "lr_schedule": {"name": self.schedule.name, "total_steps": self.schedule.total_steps,
                            "warmup_steps": self.schedule.warmup_steps},
            "rng": rng_states,
            "config": self.config.to_dict(),
            "trained_seconds": self.trained_seconds,
        }

    def save(self, log: MetricsLog) -> None:
        """Every process calls this at the same step; rank 0 writes."""
        if self.saved_step == self.step:
            return
        rng_states = distributed.gather_objects(self.context, _rng_state())
        if self.context.is_main:
            ema = self.ema.averaged if self.ema else None
            weights, model_config = self.task.export(ema)
            # optional task hook: more files for the checkpoint folder (e.g. a tokenizer)
            extra = self.task.export_files(ema) if hasattr(self.task, "export_files") else None
            self.checkpoint = state.write_checkpoint(self.config.out_dir, self.step,
                                                     self.training_state(rng_states), weights, model_config,
                                                     extra_files=extra)
            state.prune_checkpoints(self.config.out_dir, self.config.keep_checkpoints)
            log.plot(min_interval=PLOT_INTERVAL)
        else:
            self.checkpoint = state.checkpoints_dir(self.config.out_dir) / state.step_dir_name(self.step)
        self.saved_step = self.step
        distributed.barrier(self.context)

    def restore(self, checkpoint: Path, saved: dict[str, Any]) -> None:
        if saved.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{checkpoint} is not a training state written by this trainer")
        if saved["task_kind"] != self.task.kind:
            raise CheckpointError(f"{checkpoint} was written by a {saved['task_kind']!r} run, not "
                                  f"{self.task.kind!r}: use another --out folder")
        for kind, ours, theirs in (("networks", self.modules, saved["modules"]),
                                   ("phases", self.optimizers, saved["optimizers"])):
            if set(ours) != set(theirs):
                raise CheckpointError(f"{checkpoint} holds {kind} {sorted(theirs)} but this task has "
                                      f"{sorted(ours)}: it belongs to a different training setup")
        try:
            for name, module in self.modules.items():
                module.load_state_dict(saved["modules"][name])
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(saved["optimizers"][name])
            if self.ema is not None:
                if saved["ema"] is None:   # EMA switched on when resuming: start it from the weights
                    self.ema.load_state_dict({"updates": 0, "modules": {
                        name: module.state_dict() for name, module in self.ema.sources.items()}})
                else:
                    self.ema.load_state_dict(saved["ema"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{checkpoint} does not fit this task's networks or phases (was the "
                                  f"model config or a task option changed?): {exc}") from exc
        changed = [key for key in RESUME_SENSITIVE
                   if saved["config"].get(key) != self.config.to_dict().get(key)]
        if changed and self.context.is_main:
            print(f"note: resuming with changed {', '.join(changed)}: training continues from the "
                  "checkpoint, but no longer as the original run would have", file=sys.stderr)
        rng_states = saved["rng"]
        if len(rng_states) != self.context.world_size and self.context.is_main:
            print(f"note: the checkpoint was written by {len(rng_states)} process(es), this run has "
                  f"{self.context.world_size}: the data order continues exactly, global RNG streams "
                  "(dropout) do not", file=sys.stderr)
        _set_rng_state(rng_states[min(self.context.rank, len(rng_states) - 1)])
        self.step = int(saved["step"])
        self.data_position = int(saved["data_position"])
        self.trained_seconds = float(saved.get("trained_seconds", 0.0))
        self.checkpoint = checkpoint
        self.saved_step = self.step

    # -- one optimizer step ----------------------------------------------------------------------

    def run_phase(self, phase: Phase, micro_batches: list[dict], lr_factor: float) -> dict[str, float]:
        optimizer = self.optimizers[phase.name]
        optimizer.zero_grad(set_to_none=True)
        accumulation = len(micro_batches)
        loss_sum = torch.zeros((), device=self.device)
        logged: dict[str, float] = defaultdict(float)
        for index, batch in enumerate(micro_batches):
            context = StepContext(step=self.step, micro_batch=index, accumulation=accumulation,
                                  device=self.device, autocast_dtype=self.autocast_dtype)
            autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                        if self.autocast_dtype is not None else nullcontext())
            with autocast:
                loss, extra = phase.loss_fn(batch, context)
            (loss.float() / accumulation).backward()
            loss_sum += loss.detach().float()
            for key, value in extra.items():
                logged[f"{phase.name}/{key}"] += float(value) / accumulation
        loss_value = loss_sum.item() / accumulation
        if not math.isfinite(loss_value):
            raise NonFiniteError(
                f"the {phase.name!r} loss is {loss_value} at step {self.step}; nothing was updated and "
                f"the last checkpoint is intact: lower the learning rate, raise warm-up, or train "
                f"without mixed precision")
        distributed.average_gradients(self.context, phase.parameters)
        logged[f"{phase.name}/loss"] = loss_value
        if self.config.grad_clip is not None:
            with_grad = [p for p in phase.parameters if p.grad is not None]
            if with_grad:
                norm = torch.nn.utils.clip_grad_norm_(with_grad, self.config.grad_clip)
                logged[f"{phase.name}/grad_norm"] = float(norm)
        for group in optimizer.param_groups:
            group["lr"] = self.base_lrs[phase.name] * lr_factor
        optimizer.step()
        return dict(logged)

    def run_step(self, micro_batches: list[dict]) -> dict[str, float]:
        lr_factor = self.schedule(self.step)
        metrics: dict[str, float] = {}
        moved = False
        for phase in self.phases:
            if phase.active(self.step):
                metrics.update(self.run_phase(phase, micro_batches, lr_factor))
                moved = moved or phase.moves_ema
        if self.ema is not None and moved:
            self.ema.update()
        self.step += 1
        self.data_position += self.config.batch_size
        metrics["lr"] = self.config.learning_rate * lr_factor
        return metrics

    def demo(self) -> None:
        folder = self.config.out_dir / "demos" / state.step_dir_name(self.step)
        folder.mkdir(parents=True, exist_ok=True)
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            # Demos draw noise; a forked RNG keeps training identical with or without them.
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                self.task.demo(folder, self.step, self.ema.averaged if self.ema else None)
        except Exception as exc:  # a failing demo must not end a long run; the error is shown
            print(f"warning: demo at step {self.step} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _validate(config: TrainerConfig, dataset, world_size: int) -> None:
    if config.mixed_precision not in PRECISIONS:
        raise InputError(f"mixed_precision must be one of {sorted(PRECISIONS)}, got {config.mixed_precision!r}")
    if config.max_steps < 0 or config.accumulation < 1 or config.batch_size < 1:
        raise InputError("max_steps must be >= 0 and batch_size, accumulation >= 1")
    if config.checkpoint_every < 1 or config.log_every < 1:
        raise InputError("checkpoint_every and log_every must be >= 1")
    split = world_size * config.accumulation
    if config.batch_size % split:
        raise InputError(f"batch_size {config.batch_size} (the global batch) must be divisible by "
                         f"processes x accumulation = {world_size} x {config.accumulation}; try "
                         f"batch_size {max(split, config.batch_size // split * split)}")
    for method in ("get", "collate", "__len__"):
        if not hasattr(dataset, method):
            raise InputError(f"the dataset ({type(dataset).__name__}) has no {method}(): use "
                             "training.data.AudioFolderDataset or LatentDataset")
    if len(dataset) == 0:
        raise InputError("the dataset is empty: check the data folder (and manifest / split)")


def train(task: TrainingTask, dataset, config: TrainerConfig, *, resume: bool = True,
          progress: bool = True, should_stop: Callable[[], bool] | None = None,
          on_step: Callable[[dict], None] | None = None) -> TrainSummary:
    """Train ``task`` on ``dataset`` until ``config.max_steps`` optimizer steps are done.

    Resumes from ``config.out_dir`` when it holds a checkpoint (``resume=True``). Stops early at a
    step boundary, with a checkpoint, when ``should_stop()`` returns True (the summary says
    ``stopped``) or on Ctrl-C / SIGTERM (then KeyboardInterrupt / SystemExit(143) is raised after
    the checkpoint is written; a second Ctrl-C interrupts at once, without one). ``on_step`` gets
    ``{"step", "max_steps", "metrics", "rank"}`` after every step on every process. Under
    ``torchrun`` every process calls this with the same arguments.
    """
    started = time.time()
    context = distributed.setup(config.device)
    try:
        _validate(config, dataset, context.world_size)
        run = _Run(task, dataset, config, context)
        config.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = state.find_resume_state(config.out_dir, map_location=context.device) if resume else None
        if resumed is None and state.list_checkpoints(config.out_dir):
            if resume:
                raise CheckpointError(f"{config.out_dir} holds checkpoint folders but none is complete and "
                                      "readable: remove its checkpoints/ folder to start over")
            raise InputError(f"{config.out_dir} already holds checkpoints of an earlier run: resume it, "
                             "or train into an empty folder")
        if context.is_main:
            state.clean_leftovers(config.out_dir)
        log = MetricsLog(config.out_dir, enabled=context.is_main)
        if resumed is not None:
            run.restore(*resumed)
            log.truncate_after(run.step)
            if context.is_main and progress:
                print(f"resumed from {resumed[0]} (step {run.step})", file=sys.stderr)
        else:
            log.truncate_after(0)   # records of a run that died before its first checkpoint
            _seed_everything(mix_seed(config.seed, context.rank, 2))
            distributed.broadcast_modules(context, run.modules)
        distributed.barrier(context)
        return _loop(run, log, progress, should_stop, on_step, started)
    finally:
        distributed.teardown(context)


def _loop(run: _Run, log: MetricsLog, progress: bool, should_stop, on_step, started: float) -> TrainSummary:
    config, context = run.config, run.context
    start_step = run.step
    steps = max(0, config.max_steps - start_step)
    loader = micro_batch_loader(
        run.dataset, run_seed=config.seed, start_position=run.data_position, steps=steps,
        batch_size=config.batch_size, rank=context.rank, world_size=context.world_size,
        accumulation=config.accumulation, num_workers=config.num_workers,
        pin_memory=context.device.type == "cuda")
    bar = _Progress(progress and context.is_main, start_step, config.max_steps, config.log_every)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    last_logged: dict[str, float] = {}
    stopped = False
    window_start, window_steps = time.time(), 0
    batches = iter(loader)
    try:
        with _StopSignals() as signals:
            while run.step < config.max_steps:
                asked = signals.requested or (should_stop is not None and bool(should_stop()))
                if distributed.any_process(context, asked):
                    stopped = True
                    break
                step_started = time.time()
                micro_batches = [_to_device(next(batches), context.device) for _ in range(config.accumulation)]
                metrics = run.run_step(micro_batches)
                run.trained_seconds += time.time() - step_started
                window_steps += 1
                for key, value in metrics.items():
                    sums[key] += value
                    counts[key] += 1
                bar.update(run.step, {key: value for key, value in metrics.items()
                                      if key.endswith("/loss") or key == "lr"})
                if on_step is not None:
                    on_step({"step": run.step, "max_steps": config.max_steps, "metrics": metrics,
                             "rank": context.rank})
                if run.step % config.log_every == 0 or run.step == config.max_steps:
                    means = distributed.mean_metrics(context, {k: sums[k] / counts[k] for k in sums})
                    means["lr"] = metrics["lr"]
                    now = time.time()
                    record = {"step": run.step, **means, "time": now,
                              "steps_per_s": window_steps / max(now - window_start, 1e-9),
                              "epoch": run.data_position // len(run.dataset)}
                    log.write(record)
                    last_logged = record
                    sums.clear()
                    counts.clear()
                    window_start, window_steps = now, 0
                if config.demo_every and run.step % config.demo_every == 0 and context.is_main:
                    run.demo()
                if run.step % config.checkpoint_every == 0:
                    run.save(log)
            if run.step > start_step or stopped:
                run.save(log)   # still under the handlers: a Ctrl-C now cannot tear the final save
            if context.is_main:
                log.plot()   # the final curve, whatever the throttle skipped
    finally:
        bar.close()
        del batches
    if signals.received is not None:
        if context.is_main:
            print(f"stopped at step {run.step}; checkpoint {run.checkpoint}; train again with the same "
                  "settings to resume", file=sys.stderr)
        signals.raise_received()
    return TrainSummary(out_dir=config.out_dir, start_step=start_step, step=run.step, stopped=stopped,
                        checkpoint=run.checkpoint, metrics=last_logged, seconds=time.time() - started,
                        rank=context.rank, world_size=context.world_size)
