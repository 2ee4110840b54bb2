"""Exponential moving average of network weights (the weights a diffusion model is released with)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Averaged copies of ``modules``: ``avg = decay_t * avg + (1 - decay_t) * weight`` per update.

    With ``warmup_power`` the decay ramps up as ``decay_t = min(decay, 1 - (1 + t) ** -power)``
    (t = updates done so far; the first update copies the weights), the warm-up stable-audio-tools
    gets from ema_pytorch (power 3/4), so short runs are not stuck near the initial weights.
    Buffers (running statistics, fixed tables) are copied, not averaged.
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float, warmup_power: float | None = 0.75):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup_power = warmup_power
        self.updates = 0
        self.sources = modules
        self.averaged: dict[str, nn.Module] = {}
        for name, module in modules.items():
            twin = copy.deepcopy(module).eval()
            twin.requires_grad_(False)
            self.averaged[name] = twin

    def current_decay(self) -> float:
        if self.warmup_power is None:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + self.updates) ** -self.warmup_power)

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        for name, source in self.sources.items():
            twin = self.averaged[name]
            for avg, param in zip(twin.parameters(), source.parameters()):
                if avg.dtype.is_floating_point:
                    avg.lerp_(param.detach().to(avg.dtype), weight)
                else:
                    avg.copy_(param)
            for avg, buffer in zip(twin.buffers(), source.buffers()):
                avg.copy_(buffer)
        self.updates += 1

    def to(self, device: torch.device) -> "EMA":
        for twin in self.averaged.values():
            twin.to(device)
        return self

    def state_dict(self) -> dict:
        return {"updates": self.updates, "modules": {name: twin.state_dict() for name, twin in self.averaged.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for name, twin in self.averaged.items():
            twin.load_state_dict(state["modules"][name])
