"""Stable Audio 3 parity: each committed fixture (written by tools/make_sa3_parity_fixtures.py with
the stable-audio-3 reference) is recomputed by `stable-audio-toolkit parity` within 1e-4 x max(1, max|ref|)
on every tensor: tokens and prompt embeddings, the DiT call (plain, padding mask, CFG/APG), SAME
encode/decode, the schedule and a seeded generation (latents and audio, decode noise included).
Together they cover SAME-S and SAME-L, plain and differential attention, batch 2, pingpong and
euler, CFG and APG, inpainting, outpainting and audio-to-audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from stable_audio_core.evaluation.parity import SA3_EXPECTED, run_parity
from stable_audio_host.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "sa3_parity"
NAMES = ("small_pingpong_apg", "medium_euler_cfg_inpaint", "small_a2a_extend")


@pytest.mark.parametrize("name", NAMES)
def test_parity_command_passes_on_the_reference_fixture(name, capsys):
    code = main(["parity", str(FIXTURES / name)])
    out = capsys.readouterr().out
    assert code == 0, out
    for tensor in SA3_EXPECTED:
        if tensor != "gen.init_audio" and not tensor.startswith(("dit.in.x", "dit.in.t", "dit.in.local",
                                                                  "dit.in.padding", "ae.in.")):
            assert tensor in out, f"{tensor} was not reported"


def test_fixtures_stay_small():
    sa3_folders = [FIXTURES, FIXTURES.parent / "sa3_dit", FIXTURES.parent / "same", FIXTURES.parent / "t5gemma"]
    total = sum(p.stat().st_size for folder in sa3_folders for p in folder.rglob("*") if p.is_file())
    assert total < 10 * 1024 * 1024


def _copy_fixture(name: str, folder: Path) -> Path:
    for path in FIXTURES.glob(f"{name}*"):
        target = folder / path.name
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copy(path, target)
    return folder / name


def test_a_fixture_missing_an_expected_tensor_fails(tmp_path):
    base = _copy_fixture("small_pingpong_apg", tmp_path)
    io_path = tmp_path / "small_pingpong_apg.io.safetensors"
    tensors = load_file(str(io_path))
    del tensors["gen.audio"]
    save_file(tensors, str(io_path))
    reports = run_parity(base)
    failed = [r.name for r in reports if not r.ok]
    assert failed == ["gen.audio (missing from the fixture)"]
    assert main(["parity", str(base)]) != 0


def test_a_perturbed_reference_tensor_fails(tmp_path):
    base = _copy_fixture("small_pingpong_apg", tmp_path)
    io_path = tmp_path / "small_pingpong_apg.io.safetensors"
    tensors = load_file(str(io_path))
    tensors["sched"] = tensors["sched"] + 1e-3  # 10x the tolerance of a [0, 1] schedule
    save_file(tensors, str(io_path))
    assert [r.name for r in run_parity(base) if not r.ok] == ["sched"]
