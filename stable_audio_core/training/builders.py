"""Task builders by kind, imported only when asked for (each pulls in its own models and losses)."""
from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError

# kind -> (module inside stable_audio_core.training, builder function name);
# each builder is ``build(model_config, options) -> TrainingTask``.
TASK_BUILDERS: dict[str, tuple[str, str]] = {
    "vae": ("vae_task", "build_vae_task"),
    "clap": ("clap_task", "build_clap_task"),
    "diffusion": ("diffusion_task", "build_diffusion_task"),
}


def task_builder(kind: str):
    """The builder function for ``kind``; ConfigError naming what is missing otherwise."""
    if kind not in TASK_BUILDERS:
        raise ConfigError(f"unknown training task {kind!r}: use one of {', '.join(TASK_BUILDERS)}")
    module_name, function_name = TASK_BUILDERS[kind]
    qualified = f"{__package__}.{module_name}"
    try:
        module = importlib.import_module(f".{module_name}", package=__package__)
    except ModuleNotFoundError as exc:
        if exc.name not in (qualified, module_name):
            raise   # the task module exists but one of its own imports is missing: show that error
        raise ConfigError(f"training task {kind!r} is not available: the module {qualified} "
                          f"({module_name}.py) is missing from this installation") from exc
    builder = getattr(module, function_name, None)
    if builder is None:
        raise ConfigError(f"training task {kind!r} is not available: {qualified} defines no "
                          f"{function_name}()")
    return builder


def build_task(kind: str, model_config: Any, options: dict[str, Any]):
    """``TASK_BUILDERS[kind]`` applied to (model config, task options)."""
    return task_builder(kind)(model_config, options)
