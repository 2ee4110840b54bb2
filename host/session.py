"""Running workflow files: load the pack once, read a workflow, apply --set overrides, execute.

    session = Session(Folders(models="models", input="input", output="output"))
    result = session.run_file("workflows/text_to_audio.json", sets=["Sampler.steps=8"])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .executor import Executor, RunResult
from .pack import NodePack, default_pack_folder, load_pack
from .runtime import Folders, HostRuntime
from .workflow import WorkflowFileError, input_spec, read_workflow, to_api


class OverrideError(WorkflowFileError):
    """A --set NODE.INPUT=VALUE names no node or no input of it."""


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, quoted strings), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def find_node(prompt: dict, ref: str, display_names: dict[str, str]) -> str:
    """A node by id, title, class key or display name (the last three must be unique)."""
    if ref in prompt:
        return ref
    matches = [i for i, node in prompt.items() if isinstance(node, dict) and ref in (
        (node.get("_meta") or {}).get("title"), node.get("class_type"),
        display_names.get(node.get("class_type")))]
    if len(matches) == 1:
        return matches[0]
    described = ", ".join(f"{i} ({(n.get('_meta') or {}).get('title') or n.get('class_type')})"
                          for i, n in prompt.items() if isinstance(n, dict))
    if matches:
        raise OverrideError(f"--set: '{ref}' matches nodes {matches}; use the node id")
    raise OverrideError(f"--set: no node '{ref}'; the workflow has: {described}")


def apply_overrides(prompt: dict, sets: list[str], classes: dict[str, type],
                    display_names: dict[str, str]) -> None:
    """Apply NODE.INPUT=VALUE strings in place (a linked input becomes the value)."""
    for item in sets:
        target, sep, value = item.partition("=")
        ref, dot, name = target.rpartition(".")
        if not sep or not dot or not ref or not name:
            raise OverrideError(f"--set '{item}' must look like NODE.INPUT=VALUE (NODE: id or title)")
        node_id = find_node(prompt, ref, display_names)
        node = prompt[node_id]
        cls = classes.get(node.get("class_type"))
        if cls is not None and input_spec(cls, name) is None:
            names = [n for part in ("required", "optional") for n in (cls.INPUT_TYPES().get(part) or {})]
            raise OverrideError(f"--set: node {node_id} ({node['class_type']}) has no input '{name}'; "
                                f"its inputs: {names}")
        node.setdefault("inputs", {})[name] = parse_value(value)


class Session:
    """The pack, its classes and an executor whose cache lives as long as the session."""

    def __init__(self, folders: Folders | None = None, device: str = "auto", show_progress: bool = True,
                 pack_folder: str | Path | None = None):
        self.pack: NodePack = load_pack(pack_folder or default_pack_folder())
        self.runtime = HostRuntime(folders or Folders(), device=device, show_progress=show_progress)
        set_host = getattr(self.pack.module, "set_host", None)
        if set_host is not None:
            set_host(self.runtime)
        self.executor = Executor(self.pack.classes, self.runtime, self.pack.display_names)

    def prepare(self, data: dict, sets: list[str] = ()) -> tuple[dict, dict | None]:
        prompt, workflow = to_api(data, self.pack.classes)
        apply_overrides(prompt, list(sets), self.pack.classes, self.pack.display_names)
        return prompt, workflow

    def run(self, data: dict, sets: list[str] = (), on_node=None) -> RunResult:
        prompt, workflow = self.prepare(data, sets)
        return self.executor.run(prompt, workflow, on_node=on_node)

    def run_file(self, path: str | Path, sets: list[str] = (), on_node=None) -> RunResult:
        return self.run(read_workflow(path), sets, on_node=on_node)

    def saved_files(self, result: RunResult) -> list[Path]:
        """The files the output nodes of `result` wrote, as paths."""
        output = self.runtime.folders.paths("output")[0]
        return [output / item.get("subfolder", "") / item["filename"]
                for ui in result.ui.values() for items in ui.values() if isinstance(items, list)
                for item in items if isinstance(item, dict) and "filename" in item]
