"""`stable-audio-toolkit eval` end to end: 50 generations of the bundled model against 50 held-out clips
rendered by tools/synthdata, with random-weight OpenL3 and PaSST (1 block) weight files and the
bundled CLAP; cache, reusable reference statistics, reports, and errors before any work.

The held-out clips are synthdata's sound effects: they are synthesised in NumPy, while its music
clips need fluidsynth and a soundfont, which the test machines do not have."""

import json
import shutil
import sys
from pathlib import Path

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

TOOLS = Path(__file__).resolve().parents[1] / "tools"
GENERATIONS = 50
DATASET_SEED = 24
BATCH = 10  # generations per sampler call


def held_out_clips(folder: Path, count: int) -> list[dict]:
    """``count`` held-out sound-effect clips of 1 s (two OpenL3 windows each) written by synthdata."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    from synthdata.dataset import plan_dataset, split_ids, write_clip as render_clip
    plans = plan_dataset(DATASET_SEED, 8 * count, sfx_fraction=1.0, min_seconds=1.0, max_seconds=1.0)
    held_out = set(split_ids([p.id for p in plans], DATASET_SEED, held_out_fraction=0.25)["held_out"])
    chosen = [p for p in plans if p.id in held_out][:count]
    assert len(chosen) == count
    for sub in ("audio", "midi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return [render_clip(folder, plan, None) for plan in chosen]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    clips = held_out_clips(root / "synthdata", GENERATIONS)
    model = load_default_model()
    prompts = {}
    for start in range(0, GENERATIONS, BATCH):
        batch = clips[start:start + BATCH]
        conditioning = [{"prompt": c["description"], "seconds_start": 0.0, "seconds_total": c["duration"]}
                        for c in batch]
        result = generate(model, conditioning=conditioning, batch_size=len(batch), steps=4, seed=start,
                          seed_per_item=True, sample_size=int(1.5 * 44100), trim=False)
        for clip, audio in zip(batch, result.audio):
            write_audio(root / "generated" / f"{clip['id']}.wav", audio[:, :int(clip["duration"] * 44100)], 44100)
            prompts[clip["id"]] = {"prompt": clip["description"], "seconds_total": clip["duration"]}
    shutil.move(str(root / "synthdata" / "audio"), str(root / "reference"))
    (root / "prompts.json").write_text(json.dumps(prompts))
    for side in ("generated", "reference"):  # a small pair of folders for the cache test
        (root / "few" / side).mkdir(parents=True)
        for name in sorted(prompts)[:4]:
            shutil.copy(root / side / f"{name}.wav", root / "few" / side)
    torch.manual_seed(0)
    torch.save(OpenL3().state_dict(), root / "openl3.pth.tar")
    torch.save(PaSST(depth=1).state_dict(), root / "passt.pt")
    return root


def run_eval(root, *extra, generated=None):
    return cli_main(["eval", "--generated", str(generated or root / "generated"), "--prompts",
                     str(root / "prompts.json"), "--openl3-weights", str(root / "openl3.pth.tar"),
                     "--passt-weights", str(root / "passt.pt"), "--clap", str(DEFAULT_MODEL_DIR / "clap"),
                     "--quiet", *extra])


@pytest.mark.heavy  # 50 bundled-model generations plus four networks: about 15 minutes on 2 shared cores
def test_eval_writes_all_metrics_reports_and_reusable_reference_stats(workspace):
    out = workspace / "out"
    code = run_eval(workspace, "--reference", str(workspace / "reference"), "-o", str(out),
                    "--save-reference", str(workspace / "reference.npz"))
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["metrics"]) == {"fd_openl3", "kl_passt", "clap", "timing_mae"}
    assert all(np.isfinite(v) for v in report["metrics"].values())
    assert report["metrics"]["fd_openl3"] > 0 and report["metrics"]["kl_passt"] >= 0
    assert report["counts"] == {name: GENERATIONS for name in ("fd_openl3", "kl_passt", "clap", "timing_mae")}
    assert "FD_openl3" in (out / "report.md").read_text()
    assert (out / "distributions.png").is_file()
    cached = sorted((out / "cache" / "generated").glob("*.npy"))
    assert len(cached) == 2 * GENERATIONS  # one OpenL3 and one PaSST embedding per generated file

    # the saved reference statistics give the same numbers without the reference audio
    again = workspace / "out2"
    assert run_eval(workspace, "--reference", str(workspace / "reference.npz"), "-o", str(again),
                    "--metrics", "fd_openl3,kl_passt") == 0
    second = json.loads((again / "report.json").read_text())["metrics"]
    assert second["fd_openl3"] == pytest.approx(report["metrics"]["fd_openl3"], rel=1e-9)
    assert second["kl_passt"] == pytest.approx(report["metrics"]["kl_passt"], rel=1e-9)


@pytest.mark.heavy
def test_cached_embeddings_are_reused_not_recomputed(workspace, monkeypatch):
    out, few = workspace / "cached", workspace / "few"
    assert run_eval(workspace, "--reference", str(few / "reference"), "-o", str(out),
                    "--metrics", "fd_openl3", generated=few / "generated") == 0
    from stable_audio_core.evaluation import suite

    def fail(*args, **kwargs):
        raise AssertionError("recomputed an embedding that was cached")
    monkeypatch.setattr(suite, "openl3_embeddings", fail)
    assert run_eval(workspace, "--reference", str(few / "reference"), "-o", str(out),
                    "--metrics", "fd_openl3", generated=few / "generated") == 0


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
