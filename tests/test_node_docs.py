"""Every node has a help page where ComfyUI's frontend looks for it: <WEB_DIRECTORY>/docs/<class
key>.md, served as /extensions/<pack>/docs/<class key>.md. Each page says what the node does,
names every input and output, and gives an example (tools/make_node_docs.py writes a draft)."""

from __future__ import annotations

import re

import pytest

from stable_audio_host.pack import load_pack
from helpers import ROOT

PACK = load_pack(ROOT)
DOCS = (ROOT / PACK.module.WEB_DIRECTORY / "docs").resolve()


def test_docs_live_in_the_packs_web_directory():
    assert DOCS.is_dir() and DOCS.parent == (ROOT / "nodes" / "web").resolve()
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert pages == set(PACK.classes), "run python tools/make_node_docs.py (and edit the new pages)"


@pytest.mark.parametrize("key", sorted(PACK.classes))
def test_every_node_page_names_its_inputs_outputs_and_has_an_example(key):
    page = (DOCS / f"{key}.md").read_text()
    cls = PACK.classes[key]
    spec = cls.INPUT_TYPES()
    inputs = [name for category in ("required", "optional") for name in (spec.get(category) or {})]
    outputs = list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)
    named = set(re.findall(r"`([^`]+)`", page))

    assert page.startswith(f"# {PACK.display_names[key]}\n")
    assert [n for n in inputs + outputs if n not in named] == []
    assert "## Inputs" in page and "## Outputs" in page
    assert len(page.split("## Example", 1)[-1].strip()) > 40
