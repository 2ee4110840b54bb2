"""Reference parity: every committed stable-audio-tools fixture is recomputed within tolerance."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from stable_audio_core.evaluation.parity import RELATIVE_TOLERANCE, run_parity
from stable_audio_host.cli import main as cli_main

from helpers import FIXTURES

PARITY = FIXTURES / "parity"
NAMES = sorted(p.name[: -len(".json")] for p in PARITY.glob("*.json"))


def test_fixture_set_covers_both_model_shapes_and_a_negative_prompt():
    assert any("sao1" in n for n in NAMES) and any("saosmall" in n for n in NAMES)
    assert any("negative" in n for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_tensor_matches_the_reference(name):
    reports = run_parity(PARITY / name)
    covered = {r.name for r in reports}
    for required in ("enc_mean", "dec_of_mean", "model_out_cfg1", "model_out_cfg7",
                     "gen_initial_noise", "gen_latents", "gen_audio"):
        assert required in covered
    bad = [r.line() for r in reports if not r.ok]
    assert not bad, "\n".join(bad)


def test_parity_command_exits_zero_on_committed_fixtures(capsys):
    assert cli_main(["parity", str(PARITY / NAMES[0])]) == 0
    out = capsys.readouterr().out
    assert "model_out_cfg7" in out and "all tensors within tolerance" in out


def test_parity_command_fails_when_weights_differ(tmp_path, capsys):
    # The check must be able to fail: nudge one DiT weight and the outputs leave tolerance.
    name = NAMES[0]
    for suffix in (".json", ".io.safetensors"):
        shutil.copy(PARITY / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    weights = load_file(str(PARITY / f"{name}.weights.safetensors"))
    key = next(k for k in weights if k.endswith("to_out.weight"))
    weights[key] = weights[key] + 10 * RELATIVE_TOLERANCE + 0.01
    save_file(weights, str(tmp_path / f"{name}.weights.safetensors"))
    assert cli_main(["parity", str(tmp_path / name)]) == 1
    assert "FAIL" in capsys.readouterr().out
