"""Files the nodes read and write: model and input listings, and safe output paths.

Names come from widgets, so they are checked: a model or input name must resolve inside one of
its folders, and an output prefix is sanitized component by component and stays inside the
output folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..stable_audio_core.atomic_files import reserve_numbered
from ..stable_audio_core.errors import InputError
from . import hooks

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
LORA_SUFFIXES = (".safetensors", ".ckpt")
CONFIG_SUFFIXES = (".json",)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def _walk(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    if not folder.is_dir():
        return []
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")]


def list_files(kind: str, suffixes: tuple[str, ...]) -> list[str]:
    """Names (relative, '/'-separated) of the files with `suffixes` in the folders of `kind`."""
    return sorted({name for folder in hooks.folder_paths(kind) for name in _walk(folder, suffixes)})


def list_model_folders(kind: str, marker: str = "config.json") -> list[str]:
    """Sub-folders of `kind`'s folders holding `marker` (Hugging Face model folders)."""
    names = set()
    for folder in hooks.folder_paths(kind):
        if folder.is_dir():
            names.update(p.parent.relative_to(folder).as_posix() for p in folder.rglob(marker)
                         if p.parent != folder)
    return sorted(names)


def resolve(kind: str, name: str) -> Path:
    """The path of `name` inside one of `kind`'s folders; never outside them."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise InputError(f"'{name}' is not a name inside the {kind} folder")
    folders = hooks.folder_paths(kind)
    for folder in folders:
        path = folder / name
        if path.exists():
            return path
    raise InputError(f"'{name}' was not found in the {kind} folder(s) {[str(f) for f in folders]}")


def _clean(component: str) -> str:
    return re.sub(r"[^\w\-. ]+", "_", component).strip(" .")


def output_path(prefix: str, extension: str) -> tuple[Path, str, str]:
    """Claim a new file for `prefix` ('audio/StableAudio') -> (path, filename, subfolder).

    ComfyUI's naming: <subfolder>/<stem>_<counter:05>_.<ext>, the counter one past the highest
    already there. The file is created empty (O_EXCL) before it is returned, so concurrent savers
    never get the same name; write it with ``write_audio(..., reserved=True)``. Components are
    sanitized; '..' and absolute prefixes cannot leave the folder.
    """
    output_dir = hooks.folder_paths("output")[0].resolve()
    parts = [_clean(p) for p in re.split(r"[\\/]+", prefix or "")]
    parts = [p for p in parts if p and p != ".."]
    stem = parts.pop() if parts else "StableAudio"
    folder = output_dir.joinpath(*parts)
    if output_dir != folder.resolve() and output_dir not in folder.resolve().parents:
        raise InputError(f"filename_prefix '{prefix}' leads outside the output folder")
    pattern = re.compile(re.escape(stem) + r"_(\d+)_\.")
    taken = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else [])
             if (m := pattern.match(p.name))]
    path = reserve_numbered(folder, lambda n: f"{stem}_{n:05d}_.{extension}", max(taken, default=0) + 1)
    return path, path.name, "/".join(parts)
