"""What the training nodes share: their category and data type, folders and paths, JSON widgets,
and progress / interruption around a long core call."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ...stable_audio_core import config as core_config
from ...stable_audio_core.errors import InputError
from .. import files, hooks

CATEGORY = "audio/stable audio/training"
DATASET = "STABLE_AUDIO_DATASET"   # a training.data / training.latents dataset recipe (DatasetSpec)
PATH = "STRING"                    # checkpoint and config paths flow between nodes as strings
DEVICES = ["auto", "cpu", "cuda", "mps"]
BUNDLED_CONFIGS = Path(core_config.__file__).parent / "configs"
BUNDLED_PREFIX = "bundled/"
SEED_MAX = 2**32 - 1


def existing_path(text: str, kind: str, what: str) -> Path:
    """An absolute path as it is, or a name inside the folders of `kind` ('input', 'checkpoints',
    'text_encoders', 'output')."""
    text = (text or "").strip()
    if not text:
        raise InputError(f"{what} is empty")
    path = Path(text).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise InputError(f"{what} {path} does not exist")
        return path
    return files.resolve(kind, text)


def optional_path(text: str, kind: str, what: str) -> str | None:
    return str(existing_path(text, kind, what)) if (text or "").strip() else None


clean_name = files._clean   # the pack's one file-name sanitizer


def output_folder(name: str, what: str = "run_name") -> Path:
    """A folder inside the output folder named by `name` ('training/my_vae'), each component
    sanitized; '..' and absolute names cannot leave the output folder."""
    output_dir = hooks.folder_paths("output")[0].resolve()
    parts = [clean_name(part) for part in re.split(r"[\\/]+", name or "")]
    parts = [part for part in parts if part and part != ".."]
    if not parts:
        raise InputError(f"{what} '{name}' names no folder; use e.g. 'training/my_run'")
    return output_dir.joinpath(*parts)


def json_widget(text: str, what: str) -> dict[str, Any]:
    """A JSON object typed into a STRING widget ('' means {})."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc}); write an object like {{\"key\": 1}}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def model_config_source(text: str) -> tuple[dict | None, Path | None]:
    """(config dict, its path) from a model_config widget: JSON text, 'bundled/<name>.json', an
    absolute path, or a name in the checkpoints folder. A folder (a Hugging Face CLAP folder)
    gives (None, folder)."""
    text = (text or "").strip()
    if text.startswith("{"):
        return json_widget(text, "model_config"), None
    if text.startswith(BUNDLED_PREFIX):
        path = BUNDLED_CONFIGS / text[len(BUNDLED_PREFIX):]
        if not path.is_file():
            raise InputError(f"no bundled config '{text}'; bundled: "
                             f"{sorted(BUNDLED_PREFIX + p.name for p in BUNDLED_CONFIGS.glob('*.json'))}")
    else:
        path = existing_path(text, "checkpoints", "model_config")
    if path.is_dir():
        return None, path
    return json_widget(path.read_text(encoding="utf-8"), f"model config {path}"), path


def device_choice(device: str) -> str:
    return hooks.default_device() if device == "auto" else device


class Control:
    """Progress and interruption for a core call that takes `should_stop` / progress callbacks.

    The host's interruption is an exception; here it becomes a request to stop at the next step
    boundary (so the core finishes cleanly, e.g. writes a checkpoint), and `finish()` raises it
    afterwards so the host still sees the node as interrupted."""

    def __init__(self, total: int):
        self.progress = hooks.Progress(total)
        self.interruption: BaseException | None = None

    def update(self, done: int, total: int | None = None) -> None:
        if self.interruption is not None:
            return
        try:
            self.progress.update(done, total)
        except Exception as exc:   # the host's interruption exception (its type is the host's)
            self.interruption = exc

    def on_step(self, info: dict) -> None:
        """training.trainer.train's on_step callback."""
        self.update(info["step"], info["max_steps"])

    def should_stop(self) -> bool:
        if self.interruption is None:
            try:
                hooks.throw_if_interrupted()
            except Exception as exc:
                self.interruption = exc
        return self.interruption is not None

    def finish(self) -> None:
        """Raise the host's interruption when there was one."""
        if self.interruption is not None:
            raise self.interruption
