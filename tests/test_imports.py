"""The core's import structure: model files are plain torch (they import nothing from
`acceleration`, which swaps its speed-ups into them), and the core's modules import each other
without a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "stable_audio_core"
PACKAGE = CORE.name
MODEL_MODULES = sorted(f"{PACKAGE}.models.{path.stem}" for path in (CORE / "models").glob("*.py")
                       if path.stem != "__init__")


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement in `path` names, at any depth (inside functions
    too), relative imports resolved; `from a import b` counts as a and as a.b."""
    package = module_name(path) if path.stem == "__init__" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def core_graph() -> dict[str, set[str]]:
    """Module of the core -> the core's modules it imports (a package counts as its __init__)."""
    modules = {module_name(path): path for path in CORE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {target for target in imported_names(path) if target in modules}
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_importing_the_model_files_imports_no_acceleration():
    # One fresh interpreter for all of them (each start imports torch): none pulls it in.
    code = (f"import sys, {', '.join(MODEL_MODULES)}; "
            "print(sorted(m for m in sys.modules if m.endswith('acceleration')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_model_file_imports_acceleration():
    offenders = {path.name: sorted(name for name in imported_names(path) if "acceleration" in name)
                 for path in (CORE / "models").rglob("*.py")}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_core_has_no_import_cycle():
    assert find_cycle(core_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
