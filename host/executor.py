"""Run a validated API prompt: nodes in dependency order, outputs cached between runs.

A node's cache key is its class, its widget values, its IS_CHANGED answer and the keys of the
nodes feeding it, so a second run re-executes only what changed and what depends on it (as
ComfyUI does). Only the latest run's entries are kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .runtime import HostRuntime, Interrupted
from .validate import ValidationReport, _links, validate_prompt


class WorkflowInvalid(Exception):
    """Validation failed; nothing ran. `report.node_errors` has ComfyUI's per-node shape."""

    def __init__(self, report: ValidationReport, prompt: Any):
        self.report, self.prompt = report, prompt
        super().__init__("workflow is invalid, nothing was run:\n" + report.format(prompt if isinstance(prompt, dict) else None))


class NodeExecutionError(Exception):
    """A node raised while running; the nodes after it did not run."""

    def __init__(self, node_id: str, class_type: str, exc: BaseException):
        self.node_id, self.class_type, self.original = node_id, class_type, exc
        super().__init__(f"node {node_id} ({class_type}) failed: {type(exc).__name__}: {exc}")


@dataclass
class RunResult:
    ui: dict[str, dict] = field(default_factory=dict)        # output nodes' "ui" dicts
    outputs: dict[str, tuple] = field(default_factory=dict)  # every node's returned values
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


def topological_order(prompt: dict, nodes: list[str]) -> list[str]:
    """`nodes` ordered so every node comes after the nodes it reads (ties by node id)."""
    remaining = set(nodes)
    deps = {n: {src for _, src, _ in _links(prompt[n]) if src in remaining} for n in nodes}
    order = []
    while remaining:
        ready = sorted((n for n in remaining if not deps[n] & remaining),
                       key=lambda n: (0, int(n)) if n.isdigit() else (1, n))
        if not ready:
            raise RuntimeError("dependency cycle")  # validation reports cycles before this
        order += ready
        remaining -= set(ready)
    return order


def _fingerprint(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


class Executor:
    def __init__(self, classes: dict[str, type], runtime: HostRuntime | None = None,
                 display_names: dict[str, str] | None = None):
        self.classes = classes
        self.runtime = runtime or HostRuntime()
        self.display_names = display_names or {}
        self._cache: dict[str, tuple] = {}
        self._objects: dict[tuple[str, str], Any] = {}
        self._uncached = 0

    def validate(self, prompt: Any) -> ValidationReport:
        return validate_prompt(prompt, self.classes)

    def run(self, prompt: Any, workflow: dict | None = None,
            on_node: Callable[[str, str, int, int], None] | None = None,
            on_executed: Callable[[str, dict | None], None] | None = None) -> RunResult:
        """Validate, then execute everything the output nodes need. Raises WorkflowInvalid
        (nothing ran), NodeExecutionError or Interrupted.

        `on_node(id, class, index, total)` is called before a node runs, `on_executed(id, ui)` after
        it ran or was taken from the cache (a server sends ComfyUI's `executed` message from it)."""
        order, keys = self._plan(prompt)
        result = RunResult()
        hidden = {"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": workflow} if workflow else {},
                  "UNIQUE_ID": None}
        for index, node_id in enumerate(order):
            node = prompt[node_id]
            cls = self.classes[node["class_type"]]
            if keys[node_id] in self._cache:
                result.outputs[node_id], ui = self._cache[keys[node_id]]
                result.cached.append(node_id)
            else:
                if on_node:
                    on_node(node_id, node["class_type"], index + 1, len(order))
                outputs, ui = self._execute(node_id, node, cls, result.outputs, hidden)
                self._cache[keys[node_id]] = (outputs, ui)
                result.outputs[node_id] = outputs
                result.executed.append(node_id)
            if ui is not None:
                result.ui[node_id] = ui
            if on_executed:
                on_executed(node_id, ui)
        live = set(keys.values())
        self._cache = {k: v for k, v in self._cache.items() if k in live}
        return result

    def cached_nodes(self, prompt: Any) -> list[str]:
        """The nodes whose outputs running `prompt` now would take from the cache."""
        order, keys = self._plan(prompt)
        return [node_id for node_id in order if keys[node_id] in self._cache]

    def _plan(self, prompt: Any) -> tuple[list[str], dict[str, str]]:
        """The nodes the outputs need, in execution order, and their cache keys."""
        report = self.validate(prompt)
        if not report.ok:
            raise WorkflowInvalid(report, prompt)
        needed = {n for o in report.outputs for n in _needed(prompt, o)}
        order = topological_order(prompt, sorted(needed))
        keys: dict[str, str] = {}
        for node_id in order:
            keys[node_id] = self._key(prompt[node_id], self.classes[prompt[node_id]["class_type"]], keys)
        return order, keys

    def _key(self, node: dict, cls: type, keys: dict[str, str]) -> str:
        parts = [node["class_type"]]
        widgets = {}
        for name, value in sorted(node["inputs"].items()):
            if isinstance(value, list):
                parts.append(f"{name}<-{keys[str(value[0])]}:{value[1]}")
            else:
                widgets[name] = value
                parts.append(f"{name}={_fingerprint(value)}")
        changed = getattr(cls, "IS_CHANGED", None)
        if changed is not None:
            answer = changed(**widgets)
            if isinstance(answer, float) and math.isnan(answer):
                self._uncached += 1
                answer = f"always-{self._uncached}"
            parts.append(f"changed={_fingerprint(answer)}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _execute(self, node_id, node, cls, outputs, hidden) -> tuple[tuple, dict | None]:
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                kwargs[name] = outputs[str(value[0])][value[1]]
            else:
                kwargs[name] = value
        declared = cls.INPUT_TYPES()
        kwargs = {k: v for k, v in kwargs.items()
                  if k in (declared.get("required") or {}) or k in (declared.get("optional") or {})}
        for name, kind in (declared.get("hidden") or {}).items():
            kwargs[name] = node_id if kind == "UNIQUE_ID" else hidden.get(kind)
        instance = self._objects.setdefault((node_id, node["class_type"]), cls())
        self.runtime.current_node = node_id
        started = time.time()
        try:
            returned = getattr(instance, cls.FUNCTION)(**kwargs)
        except Interrupted:
            raise
        except Exception as exc:
            raise NodeExecutionError(node_id, node["class_type"], exc) from exc
        finally:
            self.runtime.close_bar()
        ui = None
        if isinstance(returned, dict):
            ui, returned = returned.get("ui"), returned.get("result", ())
        returned = tuple(returned or ())
        if len(returned) != len(cls.RETURN_TYPES):
            raise NodeExecutionError(node_id, node["class_type"], RuntimeError(
                f"returned {len(returned)} value(s), RETURN_TYPES declares {len(cls.RETURN_TYPES)}"))
        if self.runtime.show_progress:
            name = self.display_names.get(node["class_type"], node["class_type"])
            print(f"  node {node_id} {name}: {time.time() - started:.2f} s", file=sys.stderr)
        return returned, ui


def _needed(prompt: dict, output: str) -> list[str]:
    from .validate import _needed_nodes
    return _needed_nodes(prompt, [output])
