"""Checkpoint directories written atomically, and finding the one to resume from.

Layout under a run's ``out_dir``::

    checkpoints/step-00001000/   training_state.pt   everything needed to resume exactly
                                 model.safetensors   the inference checkpoint (task.export)
                                 model_config.json   its stable-audio-tools config
                                 complete.json       written last: {"step", "files": {name: bytes}}
    latest                       one line naming the newest complete checkpoint directory

A checkpoint is written into ``checkpoints/.tmp-step-...``, every file fsynced, ``complete.json``
last, then the directory is renamed into place and ``latest`` is replaced with ``os.replace``; a
process killed at any point leaves either the old ``latest`` or the new one, never a partial
checkpoint behind it. Removal (pruning) renames a directory to ``.trash-...`` before deleting it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoint import RUN_CONFIG_FILE, RUN_LATEST_FILE, RUN_MODEL_FILE, load_failure_reason
from ..errors import CheckpointError

# The names the loaders read (`latest`, the weights, their config) come from checkpoint.py, so
# the run layout written here and the one `resolve_checkpoint`/`config_beside` read are one.
CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
MANIFEST_FILE = "complete.json"
# Test hook: "STEP:FLAG_FILE" makes the write of checkpoint STEP create FLAG_FILE and stall halfway,
# so a test can kill the process in the middle of a checkpoint write.
PAUSE_ENV = "STABLE_AUDIO_TEST_CHECKPOINT_PAUSE"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINTS


def _fsync_path(path: Path) -> None:
    """Flush a file's (or on POSIX a directory's) contents to disk."""
    if path.is_dir() and os.name == "nt":
        return   # Windows cannot open directories; its renames are durable on their own
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _pause_for_test(step: int) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    pause_step, _, flag = spec.partition(":")
    if int(pause_step) == step:
        Path(flag).write_text(str(os.getpid()))
        time.sleep(600)


def _shareless(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU tensors, no two keys sharing storage (safetensors refuses shared ones)."""
    seen: set[tuple[int, int]] = set()
    result = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if ident in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        seen.add(ident)
        result[key] = tensor
    return result


def write_checkpoint(out_dir: str | Path, step: int, training_state: dict[str, Any],
                     weights: dict[str, Tensor] | None = None, model_config: dict | None = None,
                     extra_files: dict[str, bytes] | None = None) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically, point ``latest`` at it, return its path.

    ``training_state`` must hold only tensors, numbers, strings, lists, tuples, dicts and None, so
    that ``torch.load(weights_only=True)`` reads it back. ``extra_files`` (plain file names to
    contents) are written beside the model, e.g. to make the folder a Hugging Face model folder.
    """
    from safetensors.torch import save_file

    extra_files = dict(extra_files or {})
    reserved = {STATE_FILE, RUN_MODEL_FILE, RUN_CONFIG_FILE, MANIFEST_FILE}
    bad = sorted(name for name in extra_files
                 if name in reserved or Path(name).name != name or name.startswith("."))
    if bad:
        raise CheckpointError(f"cannot write extra checkpoint file(s) {bad}: use plain file names other "
                              f"than {sorted(reserved)}")
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    temp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if temp.exists():
        shutil.rmtree(temp)
    try:   # an error or an interrupt (Ctrl-C, SIGTERM) removes the unfinished folder
        temp.mkdir()
        with open(temp / STATE_FILE, "wb") as handle:
            torch.save(training_state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        _pause_for_test(step)
        if weights is not None:
            save_file(_shareless(weights), str(temp / RUN_MODEL_FILE))
            _fsync_path(temp / RUN_MODEL_FILE)
        if model_config is not None:
            _write_bytes(temp / RUN_CONFIG_FILE, (json.dumps(model_config, indent=2) + "\n").encode())
        for name, data in extra_files.items():
            _write_bytes(temp / name, data)
        files = {path.name: path.stat().st_size for path in sorted(temp.iterdir())}
        _write_bytes(temp / MANIFEST_FILE, (json.dumps({"step": step, "files": files}) + "\n").encode())
        _fsync_path(temp)
        if final.exists():   # the same step written again (a rerun); retire the old one first
            _remove_dir(final)
        os.replace(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_path(root)
    set_latest(out_dir, final)
    return final


def set_latest(out_dir: str | Path, checkpoint: Path) -> None:
    out_dir = Path(out_dir)
    pointer = out_dir / f".{RUN_LATEST_FILE}.tmp-{os.getpid()}"
    _write_bytes(pointer, f"{CHECKPOINTS}/{checkpoint.name}\n".encode())
    os.replace(pointer, out_dir / RUN_LATEST_FILE)
    _fsync_path(out_dir)


def _remove_dir(path: Path) -> None:
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def is_complete(checkpoint: Path) -> bool:
    """True when ``complete.json`` exists and every file it lists has the recorded size."""
    try:
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
        return all((checkpoint / name).stat().st_size == size for name, size in manifest["files"].items()) \
            and STATE_FILE in manifest["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``step-*`` directory (complete or not), oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        name = path.name
        if path.is_dir() and name.startswith("step-") and name[5:].isdigit():
            found.append((int(name[5:]), path))
    return sorted(found)


def read_latest(out_dir: str | Path) -> Path | None:
    """The directory ``latest`` names, or None when there is no readable pointer."""
    try:
        name = (Path(out_dir) / RUN_LATEST_FILE).read_text().strip()
    except OSError:
        return None
    return Path(out_dir) / name if name else None


def resume_candidates(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints to try, best first: the newest complete one (normally what ``latest``
    names; newer only when a run died between the rename and the pointer update), then older ones."""
    complete = [path for _, path in reversed(list_checkpoints(out_dir)) if is_complete(path)]
    latest = read_latest(out_dir)
    if latest is not None and latest in complete and complete[0] != latest:
        print(f"note: {latest.name} is named by 'latest' but the complete {complete[0].name} is newer; "
              f"resuming from the newer one", file=sys.stderr)
    return complete


def load_training_state(checkpoint: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    try:
        return torch.load(str(checkpoint / STATE_FILE), map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several error types
        raise CheckpointError(f"{checkpoint / STATE_FILE} could not be read ({load_failure_reason(exc)})") from None


def find_resume_state(out_dir: str | Path, map_location: torch.device | str = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies and loads, with its training state; None when none does."""
    for checkpoint in resume_candidates(out_dir):
        try:
            return checkpoint, load_training_state(checkpoint, map_location)
        except CheckpointError as exc:
            print(f"warning: skipping unreadable checkpoint {checkpoint}: {exc}", file=sys.stderr)
    return None


def clean_leftovers(out_dir: str | Path) -> None:
    """Delete the temporary and half-deleted directories a killed run may have left."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(path, ignore_errors=True)
    for path in Path(out_dir).glob(f".{RUN_LATEST_FILE}.tmp-*"):
        path.unlink(missing_ok=True)


def prune_checkpoints(out_dir: str | Path, keep: int) -> list[Path]:
    """Keep the ``keep`` newest complete checkpoints (and whatever ``latest`` names); 0 keeps all.

    Incomplete ``step-*`` directories older than the newest complete one are removed too.
    Returns the removed directories.
    """
    if keep <= 0:
        return []
    checkpoints = list_checkpoints(out_dir)
    complete = [path for _, path in checkpoints if is_complete(path)]
    keep_set = set(complete[-keep:])
    latest = read_latest(out_dir)
    if latest is not None:
        keep_set.add(latest)
    newest_complete = complete[-1] if complete else None
    removed = []
    for step, path in checkpoints:
        stale_partial = newest_complete is not None and path not in complete and path.name < newest_complete.name
        if (path in complete and path not in keep_set) or stale_partial:
            _remove_dir(path)
            removed.append(path)
    return removed
