"""Workflow files in both ComfyUI formats, and the UI -> API conversion the frontend does.

API format ("prompt"): {"<node id>": {"class_type": str, "inputs": {name: value | [src id, slot]}}}.
UI format (what the frontend saves): {"nodes": [...], "links": [...], "groups": [...], ...}; a
node lists its linked inputs and its widget values in `widgets_values`, in the order of its
widget inputs (required, then optional), with one extra value after each widget that has a
control_after_generate companion ("fixed", "randomize", ...). The conversion follows the
frontend's graphToPrompt: muted nodes (mode 2) are dropped, bypassed ones (mode 4) pass each
link through to their input of the same type, Reroutes pass links through, PrimitiveNodes and
notes are frontend-only, groups are layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
MODE_MUTED, MODE_BYPASS = 2, 4
VIRTUAL_TYPES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")


class WorkflowFileError(Exception):
    """The file is not readable JSON or not a workflow in either format."""


def parse_workflow(text: str, source: str = "workflow") -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFileError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                                f"column {exc.colno}") from None
    except RecursionError:
        raise WorkflowFileError(f"{source} nests its JSON too deeply to be a workflow") from None
    if not isinstance(data, dict):
        raise WorkflowFileError(f"{source} holds a JSON {type(data).__name__}, not a workflow object")
    return data


def read_workflow(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise WorkflowFileError(f"{path} is not UTF-8 text (byte {exc.start}): save the workflow "
                                "from ComfyUI again") from None
    return parse_workflow(text, str(path))


def is_ui_format(data: dict) -> bool:
    return isinstance(data.get("nodes"), list) and "links" in data


def check_ui_shape(workflow: dict) -> None:
    """WorkflowFileError naming the entry when a UI workflow's nodes or links are malformed (what
    the conversion reads: each node's id, type and inputs; each link's six fields)."""
    links = workflow.get("links")
    if links is not None and not isinstance(links, list):
        raise WorkflowFileError(f"the workflow's 'links' must be a list, got {type(links).__name__}")
    for i, link in enumerate(links or []):
        if isinstance(link, dict):
            missing = [k for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot") if k not in link]
            if missing:
                raise WorkflowFileError(f"link {i} lacks {missing}")
        elif not isinstance(link, list) or len(link) < 5 or not all(isinstance(v, int) for v in link[:5]):
            raise WorkflowFileError(f"link {i} must be [id, origin id, origin slot, target id, target slot, "
                                    f"type], got {link!r}"[:300])
    for i, node in enumerate(workflow["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise WorkflowFileError(f"node {i} of the workflow is not a node object with an 'id'")
        if not isinstance(node.get("type"), str):
            raise WorkflowFileError(f"node {node['id']} has no 'type' (its node class)")
        inputs = node.get("inputs")
        if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(e, dict) for e in inputs)):
            raise WorkflowFileError(f"node {node['id']} ({node['type']}): 'inputs' must be a list of objects")
        for entry in inputs or []:
            if not isinstance(entry.get("link"), (int, type(None))) or isinstance(entry.get("link"), bool):
                raise WorkflowFileError(f"node {node['id']} ({node['type']}): input {entry.get('name')!r} "
                                        f"has the link {entry.get('link')!r}, not a link id")


def input_spec(cls: type, name: str) -> tuple[Any, dict, str] | None:
    """(type, options, 'required'|'optional'|'hidden') of input `name`, or None."""
    for category, inputs in cls.INPUT_TYPES().items():
        if name in (inputs or {}):
            spec = inputs[name]
            return spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}), category
    return None


def is_widget(kind: Any, options: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def has_control_widget(name: str, kind: Any, options: dict) -> bool:
    """Does the frontend add a control_after_generate value after this widget?"""
    if "control_after_generate" in options:
        return bool(options["control_after_generate"])
    return kind == "INT" and name in ("seed", "noise_seed")  # the frontend's legacy convention


def widget_slots(cls: type) -> list[str | None]:
    """Names in `widgets_values` order; None marks a control_after_generate value."""
    slots: list[str | None] = []
    spec = cls.INPUT_TYPES()
    for category in ("required", "optional"):
        for name, entry in (spec.get(category) or {}).items():
            kind, options = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
            if is_widget(kind, options):
                slots.append(name)
                if has_control_widget(name, kind, options):
                    slots.append(None)
    return slots


def _links_by_id(links: list) -> dict[int, tuple[int, int, int, int, Any]]:
    """id -> (origin id, origin slot, target id, target slot, type), from list or dict links."""
    table = {}
    for link in links or []:
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"],
                                 link["target_slot"], link.get("type"))
        else:
            table[link[0]] = (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
    return table


def ui_to_api(workflow: dict, classes: dict[str, type]) -> dict[str, dict]:
    """Convert a UI-format workflow to an API prompt (node ids as strings).

    Nodes of unknown types are kept with their linked inputs only, so validation reports them.
    """
    nodes = {node["id"]: node for node in workflow.get("nodes", [])}
    links = _links_by_id(workflow.get("links", []))

    def source_of(link_id: int | None, wanted_type: Any) -> tuple[int, int] | None:
        """Follow a link back through reroutes and bypassed nodes to a real output."""
        seen = set()
        while link_id is not None and link_id in links and link_id not in seen:
            seen.add(link_id)
            origin, slot = links[link_id][0], links[link_id][1]
            node = nodes.get(origin)
            if node is None or node.get("mode") == MODE_MUTED:
                return None
            if node["type"] == "Reroute":
                link_id = (node.get("inputs") or [{}])[0].get("link")
                continue
            if node["type"] in VIRTUAL_TYPES:
                return None
            if node.get("mode") != MODE_BYPASS:
                return origin, slot
            inputs = node.get("inputs") or []
            order = ([slot] if slot < len(inputs) else []) + [i for i in range(len(inputs)) if i != slot]
            link_id = next((inputs[i].get("link") for i in order
                            if inputs[i].get("type") == wanted_type and inputs[i].get("link") is not None), None)
        return None

    prompt: dict[str, dict] = {}
    for node_id, node in nodes.items():
        if node["type"] in VIRTUAL_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        inputs: dict[str, Any] = {}
        cls = classes.get(node["type"])
        values = node.get("widgets_values")
        if cls is not None and isinstance(values, dict):
            inputs.update({k: v for k, v in values.items() if input_spec(cls, k)})
        elif cls is not None and isinstance(values, list):
            for name, value in zip(widget_slots(cls), values):
                if name is not None:
                    inputs[name] = value
        for entry in node.get("inputs") or []:
            name = (entry.get("widget") or {}).get("name") or entry.get("name")
            if entry.get("link") is None:
                continue
            origin_node = nodes.get(links.get(entry["link"], (None,))[0])
            if origin_node is not None and origin_node["type"] == "PrimitiveNode":
                continue  # the frontend keeps the target widget's value in step with the primitive
            source = source_of(entry["link"], entry.get("type"))
            if source is not None:
                inputs[name] = [str(source[0]), source[1]]
            elif entry.get("widget") is None:
                inputs.pop(name, None)
        api_node = {"class_type": node["type"], "inputs": inputs}
        title = node.get("title")
        if title:
            api_node["_meta"] = {"title": title}
        prompt[str(node_id)] = api_node
    return prompt


def to_api(data: dict, classes: dict[str, type]) -> tuple[dict[str, dict], dict | None]:
    """A workflow in either format -> (API prompt, the UI workflow or None)."""
    if is_ui_format(data):
        check_ui_shape(data)
        return ui_to_api(data, classes), data
    if "prompt" in data and isinstance(data["prompt"], dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # the body of a /prompt request
    return {str(k): v for k, v in data.items()}, None
