"""Size limits that keep generation and the nodes readable, measured on the source with ast:
every function of the pipeline under 60 lines, every node's FUNCTION method under 40."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_LIMIT = 60
NODE_FUNCTION_LIMIT = 40


def _lines(function: ast.FunctionDef) -> int:
    """Lines from the decorators to the end of the body."""
    first = min([function.lineno, *(d.lineno for d in function.decorator_list)])
    return function.end_lineno - first + 1


def _functions(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name: _lines(node) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _node_classes() -> dict[str, ast.ClassDef]:
    classes = {}
    for path in sorted((ROOT / "nodes").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                assert node.name not in classes, f"two node classes named {node.name}"
                classes[node.name] = node
    return classes


def _class_attribute(cls: ast.ClassDef, name: str, classes: dict) -> ast.AST | None:
    """The class-level assignment or method `name`, looked up through bases in nodes/."""
    for statement in cls.body:
        if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == name for t in statement.targets):
            return statement.value
        if isinstance(statement, ast.FunctionDef) and statement.name == name:
            return statement
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            found = _class_attribute(classes[base.id], name, classes)
            if found is not None:
                return found
    return None


def test_every_pipeline_function_is_under_60_lines():
    lengths = _functions(ROOT / "stable_audio_core" / "pipeline.py")
    assert "generate" in lengths and "sample_latents" in lengths
    too_long = {name: n for name, n in lengths.items() if n >= PIPELINE_LIMIT}
    assert not too_long, f"pipeline functions of {PIPELINE_LIMIT}+ lines: {too_long}"


def test_every_node_function_is_under_40_lines():
    classes = _node_classes()
    measured = {}
    for name, cls in classes.items():
        function_name = _class_attribute(cls, "FUNCTION", classes)
        if not isinstance(function_name, ast.Constant):
            continue  # a shared base without its own FUNCTION
        method = _class_attribute(cls, function_name.value, classes)
        assert isinstance(method, ast.FunctionDef), f"{name}.FUNCTION names no method"
        measured[name] = _lines(method)
    assert {"DPMSolverSampler", "TimingCondition", "VAEEncode", "TrainDiffusion"} <= set(measured)
    too_long = {name: n for name, n in measured.items() if n >= NODE_FUNCTION_LIMIT}
    assert not too_long, f"node FUNCTION methods of {NODE_FUNCTION_LIMIT}+ lines: {too_long}"
