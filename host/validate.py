"""Validate an API prompt the way ComfyUI does, reporting errors per node (its node_errors shape).

Checked for every node an output node depends on: the node type exists, required inputs are
present, links point at an existing node's output of a compatible type, widget values convert
to their type and respect min/max and combo lists, the node's own VALIDATE_INPUTS agrees, and
no node depends on itself (a cycle). Nothing runs unless all of that holds.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from .workflow import input_spec

# ComfyUI built-ins a shared workflow may contain, and the pack's node that does the job here.
BUILTIN_EQUIVALENTS = {
    "SaveAudio": "StableAudio_SaveAudio", "PreviewAudio": "StableAudio_SaveAudio",
    "LoadAudio": "StableAudio_LoadAudio", "EmptyLatentAudio": "StableAudio_EmptyLatentAudio",
    "VAEEncodeAudio": "StableAudio_VAEEncode", "VAEDecodeAudio": "StableAudio_VAEDecode",
    "KSampler": "StableAudio_DPMSolverSampler", "CheckpointLoaderSimple": "StableAudio_LoadCheckpoint",
    "CLIPTextEncode": "StableAudio_T5Encode", "ConditioningStableAudio": "StableAudio_TimingCondition",
}


def error(kind: str, message: str, details: str = "", **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


@dataclass
class ValidationReport:
    node_errors: dict[str, dict] = field(default_factory=dict)
    error: dict | None = None  # a prompt-level error (no outputs, not a prompt)
    outputs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.node_errors

    def add(self, prompt: dict, node_id: str, err: dict) -> None:
        entry = self.node_errors.setdefault(node_id, {
            "errors": [], "dependent_outputs": [],
            "class_type": (prompt.get(node_id) or {}).get("class_type") if isinstance(prompt.get(node_id), dict) else None})
        entry["errors"].append(err)

    def format(self, prompt: dict | None = None) -> str:
        """One line per problem: 'node 5 (StableAudio_DPMSolverSampler "Sampler"): ...'."""
        lines = []
        if self.error:
            lines.append(f"workflow: {self.error['message']}" + (f": {self.error['details']}" if self.error['details'] else ""))
        for node_id, entry in sorted(self.node_errors.items(), key=lambda kv: _sort_key(kv[0])):
            title = ((prompt or {}).get(node_id) or {}).get("_meta", {}).get("title") if isinstance((prompt or {}).get(node_id), dict) else None
            label = f"node {node_id} ({entry['class_type']}" + (f' "{title}"' if title else "") + ")"
            for err in entry["errors"]:
                lines.append(f"{label}: {err['message']}" + (f": {err['details']}" if err["details"] else ""))
        return "\n".join(lines)


def _sort_key(node_id: str):
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's rule: equal, '*' on either side, or overlapping comma-separated unions."""
    if received == expected or "*" in (received, expected):
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def _convert(kind: Any, value: Any) -> Any:
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    if kind == "INT":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value} is not a whole number")
        return int(value)
    if kind == "FLOAT":
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return value
    if kind == "STRING":
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"expected text, got {type(value).__name__}")
        return str(value)
    if kind == "BOOLEAN":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return bool(value)
    return value


def validate_prompt(prompt: Any, classes: dict[str, type]) -> ValidationReport:
    """Check `prompt` against the node classes; the report's node_errors say what is wrong where.

    Widget values are converted in place (e.g. "4" -> 4 for an INT), as ComfyUI does.
    """
    report = ValidationReport()
    if not isinstance(prompt, dict) or not prompt:
        report.error = error("invalid_prompt", "Workflow has no nodes", "expected {node id: {class_type, inputs}}")
        return report
    known = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            report.add(prompt, node_id, error("invalid_prompt", "Node has no class_type", f"node '{node_id}'"))
            continue
        if not isinstance(node.get("inputs", {}), dict):
            report.add(prompt, node_id, error("invalid_prompt", "Node inputs must be an object", ""))
            continue
        node.setdefault("inputs", {})
        cls = classes.get(node["class_type"])
        if cls is None:
            hint = BUILTIN_EQUIVALENTS.get(node["class_type"])
            fix = (f"it is a ComfyUI built-in; use {hint} here" if hint else
                   "the node pack that provides it is not installed")
            report.add(prompt, node_id, error("missing_node_type", f"Node type '{node['class_type']}' not found", fix))
            continue
        known[node_id] = cls
    report.outputs = [i for i, cls in known.items() if getattr(cls, "OUTPUT_NODE", False) is True]
    if not report.outputs and not report.node_errors:
        report.error = error("prompt_no_outputs", "Prompt has no outputs",
                             "add an output node such as StableAudio_SaveAudio")
        return report

    needed = _needed_nodes(prompt, report.outputs or list(known))
    for cycle in _cycles(prompt, needed):
        path = " -> ".join(cycle + [cycle[0]])
        for node_id in cycle:
            report.add(prompt, node_id, error("dependency_cycle", "Dependency cycle detected", path))
    for node_id in needed:
        if node_id in known:
            _validate_node(prompt, node_id, known[node_id], classes, report)
    needed_by = {o: set(_needed_nodes(prompt, [o])) for o in report.outputs}
    for node_id, entry in report.node_errors.items():
        entry["dependent_outputs"] = [o for o in report.outputs if node_id in needed_by[o]]
    return report


def _links(node: dict) -> list[tuple[str, str, int]]:
    """(input name, source id, slot) of the node's links."""
    found = []
    for name, value in (node.get("inputs") or {}).items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            found.append((name, str(value[0]), value[1]))
    return found


def _needed_nodes(prompt: dict, outputs: list[str]) -> list[str]:
    """Every node the outputs depend on (outputs included), in discovery order."""
    seen, stack = {}, list(outputs)   # a dict: insertion-ordered, O(1) membership
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen[node_id] = None
        node = prompt.get(node_id)
        if isinstance(node, dict):
            stack.extend(src for _, src, _ in _links(node) if src in prompt)
    return list(seen)


def _cycles(prompt: dict, nodes: list[str]) -> list[list[str]]:
    """The dependency cycles among `nodes` (each once), found by an iterative depth-first search
    (a recursive one overflows Python's stack on a chain of ~1000 nodes)."""
    state, cycles = {}, []

    def sources(node_id: str) -> list[str]:
        node = prompt.get(node_id)
        return [src for _, src, _ in (_links(node) if isinstance(node, dict) else []) if src in prompt]

    for root in nodes:
        if root in state:
            continue
        state[root] = "active"
        path, pending = [root], [iter(sources(root))]
        while pending:
            src = next(pending[-1], None)
            if src is None:
                state[path.pop()] = "done"
                pending.pop()
            elif state.get(src) == "active":
                cycles.append(path[path.index(src):])
            elif src not in state:
                state[src] = "active"
                path.append(src)
                pending.append(iter(sources(src)))
    return cycles


def _validate_node(prompt: dict, node_id: str, cls: type, classes: dict, report: ValidationReport) -> None:
    node = prompt[node_id]
    inputs = node["inputs"]
    spec = cls.INPUT_TYPES()
    custom = getattr(cls, "VALIDATE_INPUTS", None)
    custom_args = inspect.getfullargspec(custom).args if custom is not None else []
    for category in ("required", "optional"):
        for name, entry in (spec.get(category) or {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if name not in inputs:
                if category == "required":
                    report.add(prompt, node_id, error("required_input_missing", "Required input is missing",
                                                      name, input_name=name))
                continue
            value = inputs[name]
            if isinstance(value, list):
                _check_link(prompt, node_id, name, kind, value, classes, report)
                continue
            try:
                value = inputs[name] = _convert(kind, value)
            except (TypeError, ValueError) as exc:
                report.add(prompt, node_id, error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                                  f"{name}, {value!r}, {exc}", input_name=name))
                continue
            if name in custom_args:
                continue  # the node validates this input itself (ComfyUI skips its own checks)
            if not isinstance(kind, list) and kind not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                report.add(prompt, node_id, error("invalid_input_type", f"Input '{name}' of type {kind} must be linked",
                                                  f"{name} got the constant {value!r}", input_name=name))
                continue
            if "min" in options and value < options["min"]:
                report.add(prompt, node_id, error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}",
                                                  name, input_name=name, received_value=value))
            elif "max" in options and value > options["max"]:
                report.add(prompt, node_id, error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}",
                                                  name, input_name=name, received_value=value))
            choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
            if choices is not None and value not in choices:
                shown = choices if len(choices) <= 20 else f"(list of length {len(choices)})"
                report.add(prompt, node_id, error("value_not_in_list", "Value not in list",
                                                  f"{name}: '{value}' not in {shown}", input_name=name))
    if custom_args and node_id not in report.node_errors:
        arguments = {a: inputs[a] for a in custom_args if a in inputs and not isinstance(inputs[a], list)}
        if len(arguments) == len([a for a in custom_args if a != "cls"]):
            result = custom(**arguments)
            if result is not True:
                report.add(prompt, node_id, error("custom_validation_failed", "Custom validation failed for node",
                                                  f"{', '.join(arguments)}" + ("" if result is False else f" - {result}")))


def _check_link(prompt, node_id, name, kind, value, classes, report) -> None:
    if len(value) != 2 or not isinstance(value[1], int):
        report.add(prompt, node_id, error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                          name, input_name=name, received_value=value))
        return
    source = prompt.get(str(value[0]))
    source_cls = classes.get(source.get("class_type")) if isinstance(source, dict) else None
    if source is None:
        report.add(prompt, node_id, error("bad_linked_input", f"Input '{name}' is linked to node {value[0]}, which does not exist",
                                          name, input_name=name))
        return
    if source_cls is None:
        return  # the source node carries its own missing_node_type error
    returns = source_cls.RETURN_TYPES
    if not 0 <= value[1] < len(returns):
        report.add(prompt, node_id, error("bad_linked_input", f"Node {value[0]} has no output {value[1]}",
                                          f"{name}: it has {len(returns)} output(s)", input_name=name))
        return
    received = returns[value[1]]
    if not types_compatible(received, kind):
        report.add(prompt, node_id, error("return_type_mismatch", "Return type mismatch between linked nodes",
                                          f"{name}, received_type({received}) mismatch input_type({kind})",
                                          input_name=name, received_type=received, linked_node=value))
