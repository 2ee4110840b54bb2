"""`stable-audio eval` end to end: generations of the bundled model against rendered reference clips,
random-weight OpenL3 and PaSST (1 block) weight files, the bundled CLAP; cache, reusable reference
statistics, reports, and errors before any work."""

import json

import numpy as np
import pytest
import torch

from helpers import write_clip
from stable_audio_core.audio.io import write_audio
from stable_audio_core.default_model import DEFAULT_MODEL_DIR, load_default_model
from stable_audio_core.evaluation.openl3 import OpenL3
from stable_audio_core.evaluation.passt import PaSST
from stable_audio_core.pipeline import generate
from stable_audio_host.cli import main as cli_main

PROMPTS = ["warm piano chords", "fast drum loop", "soft ambient pad", "bright plucked strings"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model = load_default_model()
    prompts = {}
    for index, prompt in enumerate(PROMPTS):
        result = generate(model, prompt, seconds_total=2.0, steps=4, seed=index, sample_size=int(3.0 * 44100))
        write_audio(root / "generated" / f"clip{index}.wav", result.audio[0], 44100)
        write_clip(root / "reference" / f"clip{index}.wav", 2.0 + 0.5 * index, rate=44100, channels=2)
        prompts[f"clip{index}"] = {"prompt": prompt, "seconds_total": 2.0}
    (root / "prompts.json").write_text(json.dumps(prompts))
    torch.manual_seed(0)
    torch.save(OpenL3().state_dict(), root / "openl3.pth.tar")
    torch.save(PaSST(depth=1).state_dict(), root / "passt.pt")
    return root


def run_eval(root, *extra):
    return cli_main(["eval", "--generated", str(root / "generated"), "--prompts", str(root / "prompts.json"),
                     "--openl3-weights", str(root / "openl3.pth.tar"), "--passt-weights", str(root / "passt.pt"),
                     "--clap", str(DEFAULT_MODEL_DIR / "clap"), "--quiet", *extra])


@pytest.mark.heavy  # bundled-model generations plus four networks: minutes on 2 shared cores
def test_eval_writes_all_metrics_reports_and_reusable_reference_stats(workspace):
    out = workspace / "out"
    code = run_eval(workspace, "--reference", str(workspace / "reference"), "-o", str(out),
                    "--save-reference", str(workspace / "reference.npz"))
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["metrics"]) == {"fd_openl3", "kl_passt", "clap", "timing_mae"}
    assert all(np.isfinite(v) for v in report["metrics"].values())
    assert report["metrics"]["fd_openl3"] > 0 and report["metrics"]["kl_passt"] >= 0
    assert report["counts"] == {"fd_openl3": 4, "kl_passt": 4, "clap": 4, "timing_mae": 4}
    assert "FD_openl3" in (out / "report.md").read_text()
    assert (out / "distributions.png").is_file()
    cached = sorted((out / "cache" / "generated").glob("*.npy"))
    assert len(cached) == 8  # one OpenL3 and one PaSST embedding per generated file

    # the saved reference statistics give the same numbers without the reference audio
    again = workspace / "out2"
    assert run_eval(workspace, "--reference", str(workspace / "reference.npz"), "-o", str(again),
                    "--metrics", "fd_openl3,kl_passt") == 0
    second = json.loads((again / "report.json").read_text())["metrics"]
    assert second["fd_openl3"] == pytest.approx(report["metrics"]["fd_openl3"], rel=1e-9)
    assert second["kl_passt"] == pytest.approx(report["metrics"]["kl_passt"], rel=1e-9)


@pytest.mark.heavy
def test_cached_embeddings_are_reused_not_recomputed(workspace, monkeypatch):
    out = workspace / "cached"
    assert run_eval(workspace, "--reference", str(workspace / "reference"), "-o", str(out),
                    "--metrics", "fd_openl3") == 0
    from stable_audio_core.evaluation import suite

    def fail(*args, **kwargs):
        raise AssertionError("recomputed an embedding that was cached")
    monkeypatch.setattr(suite, "openl3_embeddings", fail)
    assert run_eval(workspace, "--reference", str(workspace / "reference"), "-o", str(out),
                    "--metrics", "fd_openl3") == 0


def test_eval_errors_name_the_missing_piece(tmp_path, capsys):
    workspace = tmp_path
    for index in range(2):
        write_clip(tmp_path / "generated" / f"clip{index}.wav", 1.0, rate=44100, channels=2)
        write_clip(tmp_path / "reference" / f"clip{index}.wav", 1.0, rate=44100, channels=2)
    assert cli_main(["eval", "--generated", str(tmp_path / "nowhere"), "--metrics", "fd_openl3"]) == 2
    assert "not a folder of audio files" in capsys.readouterr().err
    assert cli_main(["eval", "--generated", str(workspace / "generated"), "--reference",
                     str(workspace / "reference"), "--metrics", "fd_openl3"]) == 2
    assert "--openl3-weights" in capsys.readouterr().err
    assert cli_main(["eval", "--generated", str(workspace / "generated"), "--reference", str(workspace / "reference"),
                     "--metrics", "kl_passt", "--passt-weights", str(tmp_path / "passt.pt")]) == 2
    err = capsys.readouterr().err
    assert "passt.pt" in err and "passt-s-f128-p16-s10-ap.476-swa.pt" in err
    (tmp_path / "prompts.json").write_text(json.dumps({"clip0": "a drum loop"}))
    torch.save({}, tmp_path / "630k-audioset-fusion-best.pt")
    assert cli_main(["eval", "--generated", str(workspace / "generated"), "--metrics", "clap", "--prompts",
                     str(tmp_path / "prompts.json"), "--clap", str(tmp_path / "630k-audioset-fusion-best.pt")]) == 2
    assert "is a LAION checkpoint file, which has no tokenizer" in capsys.readouterr().err
    assert cli_main(["eval", "--generated", str(workspace / "generated"), "--metrics", "fad"]) == 2
    assert "unknown metrics" in capsys.readouterr().err
