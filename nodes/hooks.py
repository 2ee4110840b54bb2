"""The one place where the pack meets its host: progress, interruption, folders and device.

Inside ComfyUI these use `comfy.utils.ProgressBar`, `comfy.model_management` and `folder_paths`
(imported when first needed, never at import time). A host that runs the pack without ComfyUI
(our `stable_audio_host`) calls `set_host(...)` with an object offering the same four services;
without either, progress is silent and folders are `./models`, `./input`, `./output`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

_host = None  # set by set_host(); takes precedence over ComfyUI's modules


def set_host(host) -> None:
    """Install a host: an object with progress(value, total), throw_if_interrupted(),
    folder_paths(kind) -> list[Path] ('checkpoints', 'text_encoders', 'input', 'output') and
    default_device() -> str. Pass None to remove it."""
    global _host
    _host = host


def _comfy(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class Progress:
    """Step progress of one node: `update(done, total)` after each step; also checks interruption."""

    def __init__(self, total: int):
        self.total = int(total)
        self._bar = None
        if _host is None:
            utils = _comfy("comfy.utils")
            if utils is not None:
                self._bar = utils.ProgressBar(self.total)

    def update(self, done: int, total: int | None = None) -> None:
        total = self.total if total is None else int(total)
        if _host is not None:
            _host.progress(done, total)
        elif self._bar is not None:
            self._bar.update_absolute(done, total)
        throw_if_interrupted()


def throw_if_interrupted() -> None:
    """Raise the host's interruption exception when the user asked to stop."""
    if _host is not None:
        _host.throw_if_interrupted()
        return
    management = _comfy("comfy.model_management")
    if management is not None:
        management.throw_exception_if_processing_interrupted()


def folder_paths(kind: str) -> list[Path]:
    """Folders for `kind`: 'checkpoints', 'text_encoders', 'loras', 'input' or 'output' (first one is written)."""
    if _host is not None:
        return [Path(p) for p in _host.folder_paths(kind)]
    comfy_paths = _comfy("folder_paths")
    if comfy_paths is not None:
        if kind == "input":
            return [Path(comfy_paths.get_input_directory())]
        if kind == "output":
            return [Path(comfy_paths.get_output_directory())]
        try:
            return [Path(p) for p in comfy_paths.get_folder_paths(kind)]
        except KeyError:
            return []
    defaults = {"checkpoints": "models/checkpoints", "text_encoders": "models/text_encoders",
                "loras": "models/loras"}
    return [Path(defaults.get(kind, kind))]


def default_device() -> str:
    """The device 'auto' means: the host's choice, ComfyUI's torch device, else CUDA if present."""
    if _host is not None:
        return str(_host.default_device())
    management = _comfy("comfy.model_management")
    if management is not None:
        return str(management.get_torch_device())
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"
