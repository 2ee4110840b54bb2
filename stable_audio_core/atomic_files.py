"""Every file the project produces is written here: complete or not at all, never over a file it
was not told to replace, readable like any other file.

- Atomic: the content goes to a temp file (``.partial-*``) in the target's folder, then is renamed
  onto the target; an error or an interrupt (KeyboardInterrupt, SIGTERM via
  ``install_termination_handler``) removes the temp file.
- Exclusive: ``overwrite=False`` and ``reserve_numbered`` claim a name by creating it with
  O_EXCL, so any number of processes choosing names in one folder never pick the same one.
- Permissions: files are created with mode 0666 minus the umask (0644 usually), as ComfyUI's are.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable

from .errors import OutputFileError

PARTIAL_PREFIX = ".partial-"
_NEW_FILE = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised like Ctrl-C so the same cleanup runs."""


def install_termination_handler() -> None:
    """Make SIGTERM raise `Terminated` in the main thread (a clean exit with temp files removed).
    Only the main thread may install signal handlers; elsewhere this does nothing."""
    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def describe_failure(path: Path, exc: BaseException) -> str:
    """Why `path` could not be written, in a user's words."""
    folder = path.parent
    code = getattr(exc, "errno", None)
    try:
        full = shutil.disk_usage(folder).free < 64 * 1024
    except OSError:
        full = False
    if code == errno.ENOSPC or full:
        return f"could not write {path}: the disk holding {folder} is full (no space left on device)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"could not write {path}: no permission to create files in {folder}"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"could not write {path}: {reason}"


def _create_new(path: Path) -> bool:
    """Create `path` empty with O_EXCL; False when it already exists."""
    try:
        os.close(os.open(path, _NEW_FILE, 0o666))
    except FileExistsError:
        return False
    return True


def _temp_beside(path: Path) -> Path:
    while True:
        temp = path.with_name(f"{PARTIAL_PREFIX}{secrets.token_hex(6)}{path.suffix}")
        if _create_new(temp):
            return temp


def reserve_numbered(folder: Path, name_for: Callable[[int], str], first: int) -> Path:
    """Claim the first free name `name_for(n)` for n = first, first + 1, ... (created empty, O_EXCL);
    write it with ``atomic_write(path, ..., reserved=True)``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(first, first + 100_000):
            path = folder / name_for(number)
            if _create_new(path):
                return path
    except OSError as exc:
        raise OutputFileError(describe_failure(folder / name_for(first), exc)) from exc
    raise OutputFileError(f"no free file name in {folder} from {name_for(first)} on")


def atomic_write(path: str | Path, write: Callable[[str], None], *, overwrite: bool = True,
                 reserved: bool = False, durable: bool = False) -> Path:
    """Produce `path` by calling ``write(temp_path)`` and renaming the temp file onto `path`.

    overwrite=False refuses an existing `path` (OutputFileError) and claims the name first;
    reserved=True says `path` is an empty file this process claimed (`reserve_numbered`), removed
    again when the write fails. durable=True flushes the content to disk before the rename (a
    crash of the machine then leaves the old file or the new one). Errors of the file system become OutputFileError naming the file.
    """
    path = Path(path)
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not overwrite and not reserved:
            if not _create_new(path):
                raise OutputFileError(f"{path} already exists; choose another name or allow overwriting")
            reserved = True
        temp = _temp_beside(path)
        write(str(temp))
        if durable:
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        finished = temp is not None and not temp.exists()  # the rename happened: path is complete
        if not finished:
            if temp is not None:
                temp.unlink(missing_ok=True)
            if reserved:
                path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not finished:
            raise OutputFileError(describe_failure(path, exc)) from exc
        raise
    return path


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True, reserved: bool = False) -> Path:
    """`atomic_write` of a bytes payload."""
    return atomic_write(path, lambda temp: Path(temp).write_bytes(data), overwrite=overwrite, reserved=reserved)
