"""The evaluation node in our host: random-weight OpenL3 / PaSST files and the tiny CLAP fixture
on two short generated clips and their references; progress per file, the report returned and
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import make_folders, session, write_clip
from stable_audio_host.runtime import Interrupted

CLAP_FOLDER = Path(__file__).parent / "fixtures" / "clap" / "model"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    folders = make_folders(tmp_path_factory.mktemp("eval_node"))
    for index in range(2):
        write_clip(folders["output"] / "generations" / f"clip{index}.wav", 1.2, rate=44100, channels=2)
        write_clip(folders["input"] / "reference" / f"clip{index}.wav", 1.0 + 0.3 * index, rate=44100, channels=2)
    prompts = {f"clip{i}": {"prompt": "a dog barks", "seconds_total": 1.0} for i in range(2)}
    (folders["input"] / "prompts.json").write_text(json.dumps(prompts))
    from stable_audio_core.evaluation.openl3 import OpenL3
    from stable_audio_core.evaluation.passt import PaSST
    torch.manual_seed(0)
    torch.save(OpenL3().state_dict(), folders["models"] / "checkpoints" / "openl3.pth.tar")
    torch.save(PaSST(depth=1).state_dict(), folders["models"] / "checkpoints" / "passt.pt")
    return session(folders)


def run(host, **overrides):
    inputs = dict(generated="generations", reference="reference", prompts="prompts.json",
                  metrics="fd_openl3,kl_passt,clap,timing", openl3_weights="openl3.pth.tar",
                  passt_weights="passt.pt", clap=str(CLAP_FOLDER), clap_tokenizer="", openl3_hop=0.5,
                  clap_seed=0, name="eval/run", device="cpu")
    inputs.update(overrides)
    cls = host.pack.classes["StableAudio_TrainEvaluate"]
    host.runtime.current_node = "TrainEvaluate"
    return getattr(cls(), cls.FUNCTION)(**inputs)


def test_evaluation_node_returns_and_writes_the_report_with_progress_per_file(host):
    host.runtime.progress_log.clear()

    report_json, markdown = run(host, metrics="kl_passt,clap,timing")

    report = json.loads(report_json)
    assert set(report["metrics"]) == {"kl_passt", "clap", "timing_mae"}
    assert report["counts"] == {"kl_passt": 2, "clap": 2, "timing_mae": 2}
    out = host.runtime.folders.output / "eval" / "run"
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "report.md").read_text() == markdown and "KL_passt" in markdown
    # reference PaSST, generated PaSST, CLAP: two files each
    assert [entry[1:] for entry in host.runtime.progress_log] == [(1, 2), (2, 2)] * 3
    assert host.pack.classes["StableAudio_TrainEvaluate"].OUTPUT_NODE


@pytest.mark.heavy  # the full-size OpenL3 network: about 7 s a file on 2 shared cores
def test_evaluation_node_computes_fd_openl3_against_the_reference_folder(host):
    report = json.loads(run(host, metrics="fd_openl3", name="eval/openl3")[0])

    assert report["counts"] == {"fd_openl3": 2} and report["metrics"]["fd_openl3"] > 0


def test_evaluation_node_checks_its_inputs_before_loading_weights(host):
    with pytest.raises(Exception, match=r"choose a comma-separated list from fd_openl3"):
        run(host, metrics="fad")
    with pytest.raises(Exception, match=r"fd_openl3 needs openl3_weights"):
        run(host, metrics="fd_openl3", openl3_weights="")
    with pytest.raises(Exception, match=r"'missing_folder' was not found in the output folder"):
        run(host, generated="missing_folder")


def test_evaluation_node_stops_when_interrupted(host, monkeypatch):
    def interrupt(done, total):
        raise Interrupted("stop")
    monkeypatch.setattr(host.runtime, "progress", interrupt)
    with pytest.raises(Interrupted):
        run(host, metrics="timing,clap", name="eval/interrupted")
