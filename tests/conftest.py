"""Shared fixtures. The helpers they use (tiny configs and checkpoints built in the test, never
downloaded) live in helpers.py, which tests import directly."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helpers import point_bundled_model_at, tiny_config, write_bundled_stand_in  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def config() -> dict:
    return copy.deepcopy(tiny_config())


@pytest.fixture(scope="session")
def bundled_stand_in_files(tmp_path_factory) -> Path:
    return write_bundled_stand_in(tmp_path_factory.mktemp("bundled") / "default_model")


@pytest.fixture
def bundled_stand_in(bundled_stand_in_files, monkeypatch) -> Path:
    """The bundled default model replaced by a tiny random one of its kind (the real weights may
    not exist yet, and would be slow): DEFAULT_MODEL_DIR points at it for the test."""
    point_bundled_model_at(bundled_stand_in_files, monkeypatch)
    return bundled_stand_in_files
