"""The contract between the generic training loop and what is being trained.

A *task* (VAE, CLAP, diffusion) owns its networks and losses; the *trainer* owns everything
generic: optimizers, learning-rate schedules, gradient accumulation and clipping, mixed precision,
EMA, data order, distributed gradient averaging, checkpoints, resume, progress and logs.

One optimizer step of the trainer runs every active phase of the task in order. A phase is one
optimizer over a fixed list of parameters and one loss; a GAN has two phases (discriminator, then
generator), the other tasks have one.

Batches (made by ``training.data``) are dicts:

- ``"audio"``: ``Tensor[B, C, T]`` float32 at the model's rate, or ``"latents"``: ``Tensor[B, C, L]``
  when training from pre-encoded latents;
- ``"padding_mask"``: ``Tensor[B, T]`` (or ``[B, L]``) bool, True where there is real content;
- ``"metadata"``: ``list[dict]`` with at least ``"prompt"``, ``"seconds_start"``,
  ``"seconds_total"``;
- ``"seeds"``: ``Tensor[B]`` int64, one seed per item, fixed by (run seed, epoch, dataset index).

Every random draw a task makes per item (noise, timesteps, condition dropout, latent sampling)
comes from ``item_generators(batch["seeds"], salt)``, never from the global RNG, so a global batch
gives the same numbers however it is split across processes and micro-batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..errors import InputError

Batch = dict[str, Any]
LossFn = Callable[[Batch, "StepContext"], tuple[Tensor, dict[str, float]]]


@dataclass
class StepContext:
    """What a loss function may know about the step it runs in."""

    step: int                      # optimizer steps completed before this one
    micro_batch: int               # index of the micro-batch within gradient accumulation
    accumulation: int              # number of micro-batches in this step
    device: torch.device
    autocast_dtype: torch.dtype | None = None   # dtype of the autocast region the loss runs in


@dataclass
class Phase:
    """One optimizer over ``parameters`` minimising the loss returned by ``loss_fn``.

    ``loss_fn(batch, ctx)`` returns the scalar loss (mean over the micro-batch's items) and a dict
    of floats to log. ``start_step``/``every`` make a phase run only on some steps (for example a
    discriminator warm-up). ``learning_rate``/``betas`` override the trainer's defaults. The EMA is
    updated after a step only when a phase with ``moves_ema`` ran in it, so a discriminator-only
    step leaves the averaged weights (and the EMA warm-up count) as they were.
    """

    name: str
    parameters: list[nn.Parameter]
    loss_fn: LossFn
    start_step: int = 0
    every: int = 1
    learning_rate: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    moves_ema: bool = True   # False: this phase never changes the task's ema_modules (a discriminator)

    def active(self, step: int) -> bool:
        return step >= self.start_step and (step - self.start_step) % self.every == 0


@runtime_checkable
class TrainingTask(Protocol):
    """What the trainer needs from a task. See the module docstring."""

    kind: str   # "vae" | "clap" | "diffusion"

    def modules(self) -> dict[str, nn.Module]:
        """Every network whose state is checkpointed (trainable or not), by a stable name."""

    def phases(self) -> list[Phase]:
        """The phases of one optimizer step, in order. Called once, after ``to(device)``."""

    def ema_modules(self) -> dict[str, nn.Module]:
        """The networks whose exponential moving average the trainer keeps (may be empty)."""

    def to(self, device: torch.device) -> "TrainingTask":
        """Move every network to ``device``; returns self."""

    def export(self, ema: dict[str, nn.Module] | None) -> tuple[dict[str, Tensor], dict]:
        """The inference checkpoint and its model config, in stable-audio-tools' layout.

        ``ema`` maps the names of ``ema_modules()`` to their averaged copies; when given, the
        averaged weights are exported in place of the raw ones.
        """

    def demo(self, out_dir: Path, step: int, ema: dict[str, nn.Module] | None) -> list[Path]:
        """Write demo outputs (audio, text) for this step into ``out_dir``; may return []."""


SALTS = {"noise": 1, "timestep": 2, "dropout": 3, "latent": 4, "crop": 5, "prompt": 6, "lora": 7}


def latent_padding_mask(mask: Tensor, frames: int) -> Tensor:
    """A padding mask over audio samples BoolTensor[..., T] -> one over latent frames
    BoolTensor[..., frames], by nearest sampling as stable-audio-tools' diffusion training does
    (``F.interpolate(mode="nearest")``): frame j takes the sample at floor(j * T / frames). With
    T = frames * ratio and content up to sample n (the datasets' masks), the first ceil(n / ratio)
    frames are real. The one rule for training from audio and from pre-encoded latents."""
    if mask.shape[-1] < frames:
        raise InputError(f"cannot take {frames} latent frames from a mask of {mask.shape[-1]} samples")
    index = torch.arange(frames, device=mask.device) * mask.shape[-1] // frames
    return mask[..., index].bool()


def item_generators(seeds: Tensor, salt: int | str, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One freshly seeded generator per item, for the random draw named by ``salt``."""
    salt_value = SALTS[salt] if isinstance(salt, str) else int(salt)
    generators = []
    for seed in seeds.tolist():
        generator = torch.Generator(device=device)
        generator.manual_seed((int(seed) * 1_000_003 + salt_value * 7_919) % (2**63 - 1))
        generators.append(generator)
    return generators


def per_item_randn(seeds: Tensor, salt: int | str, shape: tuple[int, ...],
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """``Tensor[B, *shape]`` of standard normals, item ``i`` drawn from its own generator."""
    draws = [torch.randn(shape, generator=g, dtype=dtype) for g in item_generators(seeds, salt)]
    return torch.stack(draws).to(device)


def per_item_rand(seeds: Tensor, salt: int | str, shape: tuple[int, ...] = (),
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """``Tensor[B, *shape]`` of uniforms in [0, 1), item ``i`` drawn from its own generator."""
    draws = [torch.rand(shape, generator=g, dtype=dtype) for g in item_generators(seeds, salt)]
    return torch.stack(draws).to(device)
