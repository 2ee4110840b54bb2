"""Task builders by kind: each is ``build(model_config, options) -> TrainingTask``."""
from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from .clap_task import build_clap_task
from .diffusion_task import build_diffusion_task
from .task import TrainingTask
from .vae_task import build_vae_task

TASK_BUILDERS: dict[str, Callable[[Any, dict[str, Any]], TrainingTask]] = {
    "vae": build_vae_task,
    "clap": build_clap_task,
    "diffusion": build_diffusion_task,
}


def task_builder(kind: str) -> Callable[[Any, dict[str, Any]], TrainingTask]:
    """The builder function for ``kind``; ConfigError listing the kinds otherwise."""
    if kind not in TASK_BUILDERS:
        raise ConfigError(f"unknown training task {kind!r}: use one of {', '.join(TASK_BUILDERS)}")
    return TASK_BUILDERS[kind]


def build_task(kind: str, model_config: Any, options: dict[str, Any]) -> TrainingTask:
    """``TASK_BUILDERS[kind]`` applied to (model config, task options)."""
    return task_builder(kind)(model_config, options)
