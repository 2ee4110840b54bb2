"""Load a node pack folder the way ComfyUI does: its `__init__.py` executed as a package.

ComfyUI imports each folder of custom_nodes/ with importlib as a package (so the pack's relative
imports work) and reads NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS from it. We do the
same under the name `custom_nodes.<folder>`, with a `custom_nodes` parent package standing for
ComfyUI's custom_nodes/ directory.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

PARENT = "custom_nodes"


class PackLoadError(Exception):
    """A pack folder could not be imported or does not export NODE_CLASS_MAPPINGS."""


@dataclass
class NodePack:
    module: types.ModuleType
    classes: dict[str, type]
    display_names: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.module.__name__


def module_name(folder: Path) -> str:
    # Dots would split the name into packages; ComfyUI replaces them the same way.
    return f"{PARENT}.{folder.name.replace('.', '_x_')}"


def _parent_package(folder: Path) -> None:
    parent = sys.modules.get(PARENT)
    if parent is None:
        parent = types.ModuleType(PARENT)
        parent.__path__ = []
        sys.modules[PARENT] = parent
    if str(folder.parent) not in list(parent.__path__):
        parent.__path__.append(str(folder.parent))


def load_pack(folder: str | Path) -> NodePack:
    """Import `folder` (holding __init__.py) as package custom_nodes.<folder> and read its nodes.

    Loading the same folder twice returns the module already imported.
    """
    folder = Path(folder).resolve()
    init = folder / "__init__.py"
    if not init.is_file():
        raise PackLoadError(f"{folder} is not a node pack: it has no __init__.py")
    name = module_name(folder)
    module = sys.modules.get(name)
    if module is None:
        _parent_package(folder)
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise PackLoadError(f"importing the node pack {folder} failed: {type(exc).__name__}: {exc}") from exc
    classes = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if not isinstance(classes, dict):
        raise PackLoadError(f"{folder}/__init__.py exports no NODE_CLASS_MAPPINGS dict")
    return NodePack(module, dict(classes), dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}))


def default_pack_folder() -> Path:
    """The repository root, which is this project's node pack (host/ sits inside it)."""
    return Path(__file__).resolve().parent.parent
