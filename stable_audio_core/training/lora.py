"""Low-rank adapters (LoRA, Hu et al. 2021) on the attention and feed-forward projections.

A wrapped projection computes ``base(x) + (alpha / rank) * up(down(x))``: ``base`` is the original
``nn.Linear`` (frozen), ``down`` is ``Tensor[rank, in]`` drawn like a fresh Linear's weight and
``up`` is ``Tensor[out, rank]`` of zeros, so a freshly adapted network computes exactly what it
computed before. Only the ``lora_down`` / ``lora_up`` parameters train. ``merge_lora`` folds every
adapter back into a plain ``nn.Linear`` (``W + scale * up @ down``) with the original module path,
so the merged network's state dict has the original key names and loads anywhere.

The low-rank math itself is `stable_audio_core.lora`'s (shared with the stable-audio-3 runtime
LoRAs). Which projections are adapted is named per backbone type (``LORA_TARGETS``); a target may also be
a regular expression over module paths, written ``"re:<pattern>"``.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..lora import low_rank_delta, low_rank_update

# Backbone type -> target name -> pattern over module paths inside the backbone.
LORA_TARGETS: dict[str, dict[str, str]] = {
    "dit": {
        "self_attention": r"(^|\.)self_attn\.(to_qkv|to_out)$",
        "cross_attention": r"(^|\.)cross_attn\.(to_q|to_kv|to_out)$",
        # SwiGLU keeps its input projection at ff.0.proj, the plain MLP at ff.0.1.
        "feed_forward": r"(^|\.)ff\.ff\.(0\.proj|0\.1|2)$",
    },
    "adp_cfg_1d": {
        "self_attention": r"(^|\.)blocks\.\d+\.attention\.(to_q|to_kv|attention\.to_out)$",
        "cross_attention": r"(^|\.)blocks\.\d+\.cross_attention\.(to_q|to_kv|attention\.to_out)$",
        "feed_forward": r"(^|\.)blocks\.\d+\.feed_forward\.(0|2)$",
    },
}
TARGET_ALIASES = {"attention": ("self_attention", "cross_attention")}
DEFAULT_TARGETS = ("attention", "feed_forward")


class LoRALinear(nn.Module):
    """``nn.Linear`` plus a trainable low-rank update; reads like the Linear it wraps.

    Args:
        base: the projection to adapt; its parameters are frozen.
        rank: inner width r of the update.
        alpha: the update is scaled by alpha / rank.
        generator: draws ``lora_down`` (uniform in +-1/sqrt(in_features), a fresh Linear's range).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ConfigError(f"lora rank must be a positive integer, got {rank!r}")
        self.base = base.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha)
        weight = base.weight
        bound = 1.0 / math.sqrt(base.in_features)
        down = (torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound
        self.lora_down = nn.Parameter(down.to(device=weight.device, dtype=weight.dtype))
        self.lora_up = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    # The wrapped Linear's attributes, for code that reads them.
    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., in_features] -> Tensor[..., out_features]."""
        return self.base(x) + low_rank_update(x, self.lora_down, self.lora_up, self.scale)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear computing the same function (the update folded in, in float32)."""
        weight = self.base.weight
        linear = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        delta = low_rank_delta(self.lora_up.float(), self.lora_down.float(), self.scale)
        linear.weight.copy_((weight.float() + delta).to(weight.dtype))
        if self.base.bias is not None:
            linear.bias.copy_(self.base.bias)
        linear.requires_grad_(weight.requires_grad)
        return linear


def target_patterns(backbone_type: str, targets: list[str] | tuple[str, ...] | None) -> list[str]:
    """Target names (or ``"re:<pattern>"``) -> regular expressions over module paths."""
    named = LORA_TARGETS.get(backbone_type, {})
    patterns = []
    for target in DEFAULT_TARGETS if targets is None else targets:
        if not isinstance(target, str):
            raise ConfigError(f"lora targets must be strings, got {target!r}")
        if target.startswith("re:"):
            try:
                re.compile(target[3:])
            except re.error as exc:
                raise ConfigError(f"lora target {target!r} is not a valid regular expression: {exc}") from exc
            patterns.append(target[3:])
            continue
        for name in TARGET_ALIASES.get(target, (target,)):
            if name not in named:
                choices = sorted(named) + sorted(TARGET_ALIASES)
                raise ConfigError(
                    f"unknown lora target {target!r} for backbone {backbone_type!r}; choose from "
                    f"{choices} or give a module-path pattern as 're:<regex>'"
                )
            patterns.append(named[name])
    return patterns


def _set_child(root: nn.Module, path: str, child: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, child)


def apply_lora(module: nn.Module, *, rank: int, alpha: float, patterns: list[str],
               generator: torch.Generator | None = None) -> list[str]:
    """Wrap every ``nn.Linear`` of ``module`` whose path matches one of ``patterns`` (in place).

    Returns the wrapped paths, in module order; ConfigError when nothing matches. Adapters are
    drawn from ``generator`` in that order, so the same seed gives the same adapters.
    """
    compiled = [re.compile(p) for p in patterns]
    paths = [name for name, child in module.named_modules()
             if type(child) is nn.Linear and any(p.search(name) for p in compiled)]
    if not paths:
        raise ConfigError(
            f"no Linear projection matches the lora targets {patterns}; check the targets for this backbone"
        )
    for path in paths:
        _set_child(module, path, LoRALinear(module.get_submodule(path), rank, alpha, generator))
    return paths


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (``lora_down``, ``lora_up``) of every LoRALinear in ``module``."""
    return [p for child in module.modules() if isinstance(child, LoRALinear)
            for p in (child.lora_down, child.lora_up)]


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(child, LoRALinear) for child in module.modules())


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every adapter of ``module`` into a plain Linear, in place; returns ``module``.

    Afterwards the state dict has exactly the keys of the network before ``apply_lora``.
    """
    if isinstance(module, LoRALinear):
        return module.merged()
    paths = [name for name, child in module.named_modules() if isinstance(child, LoRALinear)]
    for path in paths:
        _set_child(module, path, module.get_submodule(path).merged())
    return module
