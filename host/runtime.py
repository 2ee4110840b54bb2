"""The host's side of the pack's hooks (nodes/hooks.py): folders, device, progress bars on the
terminal and interruption, for running workflows without ComfyUI."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path


class Interrupted(Exception):
    """The run was interrupted (HostRuntime.interrupt()); the node stopped at its next step."""


@dataclass
class Folders:
    """Where models are read from and files written, like ComfyUI's models/, input/, output/."""

    models: Path = Path("models")
    input: Path = Path("input")
    output: Path = Path("output")

    def paths(self, kind: str) -> list[Path]:
        if kind in ("input", "output"):
            return [Path(getattr(self, kind))]
        return [Path(self.models) / kind]


@dataclass
class HostRuntime:
    folders: Folders = field(default_factory=Folders)
    device: str = "auto"
    show_progress: bool = True
    current_node: str | None = None
    _interrupt: threading.Event = field(default_factory=threading.Event)
    _bar: object = None
    progress_log: list = field(default_factory=list)  # (node id, done, total), for callers and tests

    # --- the four services nodes/hooks.py asks for -------------------------------------------
    def progress(self, done: int, total: int) -> None:
        self.progress_log.append((self.current_node, done, total))
        if not self.show_progress:
            return
        if self._bar is None or self._bar.total != total:
            self.close_bar()
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit="step", desc=f"node {self.current_node}",
                             file=sys.stderr, leave=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close_bar()

    def throw_if_interrupted(self) -> None:
        if self._interrupt.is_set():
            self._interrupt.clear()
            raise Interrupted("interrupted by the user")

    def folder_paths(self, kind: str) -> list[Path]:
        return self.folders.paths(kind)

    def default_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"

    # --- for the executor and the user ---------------------------------------------------------
    def interrupt(self) -> None:
        """Ask the running node to stop at its next progress step."""
        self._interrupt.set()

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
