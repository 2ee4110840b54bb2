"""The pack follows the ComfyUI ecosystem's conventions: the Comfy registry's metadata in
pyproject.toml, a requirements.txt that ComfyUI-Manager installs (the same runtime dependencies
as pyproject.toml, so neither drifts), and templates with thumbnails the Templates browser shows."""

from __future__ import annotations

import re

import pytest

from helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
THUMBNAIL_LIMIT = 60_000  # bytes; the Templates browser loads every thumbnail at once


def _requirement_names(lines) -> dict[str, str]:
    """'soundfile>=0.12' -> {'soundfile': 'soundfile>=0.12'}, names normalized as pip does."""
    specs = [line.split("#")[0].strip() for line in lines]
    return {re.split(r"[<>=!~;\[ ]", s, 1)[0].lower().replace("_", "-"): s for s in specs if s}


def test_comfy_registry_metadata_is_complete():
    comfy = PYPROJECT["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy)
    assert all(isinstance(comfy[k], str) and comfy[k] for k in ("PublisherId", "DisplayName", "Icon"))
    assert re.fullmatch(r"(>=|==|~=)\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert PYPROJECT["project"]["urls"]["Repository"].startswith("https://")
    assert comfy["Icon"].endswith("/nodes/web/icon.jpg") and (ROOT / "nodes/web/icon.jpg").is_file()


def test_requirements_txt_is_in_step_with_pyproject_dependencies():
    required = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    declared = _requirement_names(PYPROJECT["project"]["dependencies"])
    assert required == declared  # same names and the same (loosest) version bounds
    assert "soundfile" in required  # ComfyUI's environment lacks it; the pack reads and writes audio with it


@pytest.mark.parametrize("workflow", sorted((ROOT / "workflows").glob("*.json")), ids=lambda p: p.stem)
def test_every_template_has_a_small_thumbnail(workflow):
    thumbnails = [workflow.with_suffix(ext) for ext in (".jpg", ".webp") if workflow.with_suffix(ext).exists()]
    assert len(thumbnails) == 1, f"run python tools/make_thumbnails.py for {workflow.name}"
    assert 0 < thumbnails[0].stat().st_size < THUMBNAIL_LIMIT
