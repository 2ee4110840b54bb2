"""Learning-rate schedules: a pure function of the optimizer step, so resuming needs no state.

Every schedule is a multiplier of the base learning rate. A linear warm-up from 0 (exclusive)
to 1 over ``warmup_steps`` steps multiplies whichever decay follows it:

- ``constant``: 1.
- ``cosine``: half a cosine from 1 down to ``final_fraction`` over the steps after warm-up.
- ``linear``: a straight line from 1 down to ``final_fraction`` over the steps after warm-up.
- ``inverse``: ``(1 + t / inv_gamma) ** -power`` (stable-audio-tools' InverseLR decay, without its
  exponential warm-up, which the linear warm-up replaces), never below ``final_fraction``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

SCHEDULES = ("constant", "cosine", "linear", "inverse")


@dataclass(frozen=True)
class LRSchedule:
    """``schedule(step)`` is the learning-rate multiplier for the optimizer step ``step`` (0-based)."""

    name: str = "constant"
    total_steps: int = 1
    warmup_steps: int = 0
    final_fraction: float = 0.0
    inv_gamma: float = 1e6      # stable-audio-tools' diffusion configs use 1e6 and power 0.5
    power: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise InputError(f"unknown learning-rate schedule {self.name!r}: use one of {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise InputError(f"learning-rate schedule needs warmup_steps >= 0 and total_steps >= 1, "
                             f"got {self.warmup_steps} and {self.total_steps}")

    def __call__(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warmup * self.decay(max(0, step - self.warmup_steps))

    def decay(self, t: int) -> float:
        """The multiplier ``t`` steps after warm-up ended."""
        if self.name == "constant":
            return 1.0
        if self.name == "inverse":
            return max(self.final_fraction, (1.0 + t / self.inv_gamma) ** -self.power)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, t / span)
        if self.name == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        return self.final_fraction + (1.0 - self.final_fraction) * shape
