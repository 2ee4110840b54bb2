"""The host: UI -> API conversion like the frontend's, validation like ComfyUI's (errors per
node, nothing run), --set overrides and the `stable-audio-toolkit run` command."""

from __future__ import annotations

import copy
import json

import pytest
import soundfile as sf

from stable_audio_host.cli import main as cli_main
from stable_audio_host.executor import WorkflowInvalid
from stable_audio_host.session import OverrideError
from stable_audio_host.workflow import WorkflowFileError, parse_workflow, widget_slots
from helpers import BUNDLED_SAMPLE_RATE, ROOT, SAMPLE_RATE, TINY_MODEL, make_folders, session

SAMPLER = "StableAudio_DPMSolverSampler"
# The Stable Audio Open graph, which runs on the tiny T5 checkpoint in the models folder.
SAO = "sao_text_to_audio"


def load(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("host"))


@pytest.fixture(scope="module")
def host(folders):
    return session(folders)


def ui_node(ui: dict, kind: str) -> dict:
    return next(n for n in ui["nodes"] if n["type"] == kind)


def insert_between(ui: dict, link_id: int, node: dict, in_type: str) -> dict:
    """Re-route link `link_id` through `node` (one input, one output of in_type)."""
    link = next(link for link in ui["links"] if link[0] == link_id)
    new_id = ui["last_link_id"] + 1
    ui["last_link_id"] = new_id
    node.update({"inputs": [{"name": "latent", "type": in_type, "link": link_id}],
                 "outputs": [{"name": "latent", "type": in_type, "links": [new_id]}]})
    ui["links"].append([new_id, node["id"], 0, link[3], link[4], in_type])
    target = next(n for n in ui["nodes"] if n["id"] == link[3])
    target["inputs"][link[4]]["link"] = new_id
    link[3], link[4] = node["id"], 0
    ui["nodes"].append(node)
    return ui


# --- UI -> API conversion -------------------------------------------------------------------

def test_widget_values_follow_input_order_with_the_seed_control_value(host):
    slots = widget_slots(host.pack.classes[SAMPLER])
    assert slots[:3] == ["seed", None, "steps"]  # None: control_after_generate's "randomize"
    prompt, _ = host.prepare(load(f"{SAO}.json"))
    assert prompt["5"]["inputs"]["seed"] == 42 and prompt["5"]["inputs"]["steps"] == 100
    assert "control_after_generate" not in prompt["5"]["inputs"]


def test_converted_widget_takes_its_value_from_the_link(host):
    prompt, _ = host.prepare(load(f"{SAO}.json"))
    assert prompt["7"]["inputs"]["seconds_total"] == ["3", 1]  # TrimSilence <- TimingCondition


def test_bypassed_node_passes_its_input_of_the_same_type_through(host):
    ui = load(f"{SAO}.json")
    empty_to_sampler = ui_node(ui, SAMPLER)["inputs"][2]["link"]
    mask = {"id": 50, "type": "StableAudio_LatentNoiseMask", "mode": 4, "pos": [0, 0], "size": [10, 10],
            "widgets_values": [0.0, 1.0, "regenerate range"]}
    prompt, _ = host.prepare(insert_between(ui, empty_to_sampler, mask, "LATENT"))
    assert "50" not in prompt and prompt["5"]["inputs"]["latent"] == ["4", 0]


def test_reroute_is_followed_and_notes_and_groups_are_ignored(host):
    ui = load(f"{SAO}.json")
    reroute = {"id": 51, "type": "Reroute", "mode": 0, "pos": [0, 0], "size": [75, 26]}
    prompt, _ = host.prepare(insert_between(ui, ui_node(ui, SAMPLER)["inputs"][2]["link"], reroute, "*"))
    assert prompt["5"]["inputs"]["latent"] == ["4", 0]
    assert {n["class_type"] for n in prompt.values()} == {n["type"] for n in ui["nodes"]} - {"Note", "Reroute"}
    assert ui["groups"]


def test_muted_node_is_dropped_with_its_links(host):
    ui = load(f"{SAO}.json")
    ui_node(ui, "StableAudio_T5Encode")["mode"] = 2
    prompt, _ = host.prepare(ui)
    assert "2" not in prompt and "text" not in prompt["3"]["inputs"]


def test_primitive_node_leaves_the_targets_widget_value(host):
    ui = load(f"{SAO}.json")
    sampler = ui_node(ui, SAMPLER)
    sampler["widgets_values"][0] = 777
    ui["links"].append([90, 60, 0, sampler["id"], len(sampler["inputs"]), "INT"])
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 90})
    ui["nodes"].append({"id": 60, "type": "PrimitiveNode", "mode": 0, "pos": [0, 0], "size": [10, 10],
                        "outputs": [{"name": "INT", "type": "INT", "links": [90]}], "widgets_values": [777, "fixed"]})
    prompt, _ = host.prepare(ui)
    assert prompt["5"]["inputs"]["seed"] == 777 and "60" not in prompt


def test_newer_frontend_forms_are_read_link_objects_and_widget_dicts(host):
    ui = load(f"{SAO}.json")
    ui["links"] = [dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], link))
                   for link in ui["links"]]
    ui_node(ui, "StableAudio_EmptyLatentAudio")["widgets_values"] = {"seconds": 3.5, "batch_size": 2}
    for entry in ui_node(ui, SAMPLER)["inputs"]:
        entry.pop("slot_index", None)
    ui_node(ui, SAMPLER)["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": None})
    prompt, _ = host.prepare(ui)
    assert prompt == {**load(f"api/{SAO}.json"),
                      "4": {"class_type": "StableAudio_EmptyLatentAudio",
                            "inputs": {"seconds": 3.5, "batch_size": 2, "model": ["1", 0]},
                            "_meta": {"title": "Empty Latent Audio"}}}


# --- validation: per-node errors, nothing runs ----------------------------------------------

def _invalid_cases() -> dict:
    base = load(f"api/{SAO}.json")
    cases = {}
    cycle = copy.deepcopy(base)
    cycle["12"] = {"class_type": "StableAudio_LatentCrop",
                   "inputs": {"model": ["1", 0], "latent": ["5", 0], "start_seconds": 0.0, "end_seconds": 0.0}}
    cycle["5"]["inputs"]["latent"] = ["12", 0]
    cases["cycle"] = (cycle, {"5": "dependency_cycle", "12": "dependency_cycle"})
    unknown = copy.deepcopy(base)
    unknown["7"]["class_type"] = "StableAudio_TrimSilenceX"
    cases["unknown node"] = (unknown, {"7": "missing_node_type"})
    wrong_type = copy.deepcopy(base)
    wrong_type["7"]["inputs"]["audio"] = ["5", 0]  # LATENT into AUDIO
    cases["wrong link type"] = (wrong_type, {"7": "return_type_mismatch"})
    out_of_range = copy.deepcopy(base)
    out_of_range["5"]["inputs"]["steps"] = -1
    out_of_range["5"]["inputs"]["cfg"] = 1000.0
    cases["out of range"] = (out_of_range, {"5": "value_smaller_than_min"})
    missing = copy.deepcopy(base)
    del missing["5"]["inputs"]["conditioning"]
    cases["missing input"] = (missing, {"5": "required_input_missing"})
    not_listed = copy.deepcopy(base)
    not_listed["5"]["inputs"]["sampler"] = "dpmpp-9m"
    cases["value not in list"] = (not_listed, {"5": "value_not_in_list"})
    return cases


@pytest.mark.parametrize("case", list(_invalid_cases()))
def test_invalid_workflow_reports_the_node_and_runs_nothing(host, folders, case):
    prompt, expected = _invalid_cases()[case]
    cache_before = dict(host.executor._cache)
    with pytest.raises(WorkflowInvalid) as caught:
        host.run(prompt, [s for s in TINY_MODEL if "Sampler" not in s])
    errors = caught.value.report.node_errors
    assert {node: [e["type"] for e in entry["errors"]][0] for node, entry in errors.items() if node in expected} == expected
    assert set(errors) == set(expected)
    assert all(entry["class_type"] and entry["dependent_outputs"] == ["8"] for entry in errors.values())
    assert host.executor._cache == cache_before and not list(folders["output"].rglob("*.flac"))
    message = str(caught.value)
    assert all(f"node {node} (" in message for node in expected) and "nothing was run" in message


def test_out_of_range_values_name_the_bounds(host):
    prompt, _ = _invalid_cases()["out of range"]
    report = host.executor.validate(prompt)
    messages = [e["message"] + " " + e["details"] for e in report.node_errors["5"]["errors"]]
    assert messages == ["Value -1 smaller than min of 0 steps", "Value 1000.0 bigger than max of 100.0 cfg"]


def test_malformed_json_is_reported_with_its_position(tmp_path, folders, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(load_text := (ROOT / "workflows" / "api" / "text_to_audio.json").read_text()[:200])
    with pytest.raises(WorkflowFileError, match=r"not valid JSON: .* line \d+, column \d+"):
        parse_workflow(load_text, str(bad))
    code = cli_main(["run", str(bad), "--models", str(folders["models"]), "--output", str(folders["output"])])
    assert code == 2 and "bad.json is not valid JSON" in capsys.readouterr().err


def test_a_workflow_without_an_output_node_is_refused(host):
    prompt = {k: v for k, v in load(f"api/{SAO}.json").items() if k != "8"}
    with pytest.raises(WorkflowInvalid, match="Prompt has no outputs"):
        host.run(prompt)


def test_a_comfyui_builtin_is_named_with_our_equivalent(host):
    prompt = load(f"api/{SAO}.json")
    prompt["8"]["class_type"] = "SaveAudio"
    report = host.executor.validate(prompt)
    assert "use StableAudio_SaveAudio" in report.node_errors["8"]["errors"][0]["details"]


# --- overrides and the command ----------------------------------------------------------------

def test_set_finds_nodes_by_id_title_or_class_and_parses_values(host):
    ui = load(f"{SAO}.json")
    ui_node(ui, "StableAudio_T5Encode")["title"] = "Prompt"
    prompt, _ = host.prepare(ui, ["5.steps=8", "Prompt.positive=rain on a tin roof",
                                  "StableAudio_VAEDecode.chunk_size=64", "Stable Audio · Trim Silence.threshold_db=-50"])
    assert prompt["5"]["inputs"]["steps"] == 8
    assert prompt["2"]["inputs"]["positive"] == "rain on a tin roof"
    assert prompt["6"]["inputs"]["chunk_size"] == 64 and prompt["7"]["inputs"]["threshold_db"] == -50


@pytest.mark.parametrize("bad, message", [("Nope.steps=3", "no node 'Nope'"), ("5.stepz=3", "has no input 'stepz'"),
                                          ("steps=3", "NODE.INPUT=VALUE")])
def test_set_errors_say_what_exists(host, bad, message):
    with pytest.raises(OverrideError, match=message):
        host.prepare(load(f"{SAO}.json"), [bad])


def test_run_command_writes_the_audio_and_prints_its_path(folders, capsys):
    code = cli_main(["run", str(ROOT / "workflows" / f"{SAO}.json"), "--models", str(folders["models"]),
                     "--input", str(folders["input"]), "--output", str(folders["output"]), "--device", "cpu",
                     *[arg for s in TINY_MODEL + ["StableAudio_EmptyLatentAudio.seconds=1.0",
                                                   "StableAudio_TimingCondition.seconds_total=0.5"] for arg in ("--set", s)]])
    out, err = capsys.readouterr()
    assert code == 0, err
    path = out.strip().splitlines()[-1]
    assert sf.info(path).frames == SAMPLE_RATE // 2
    assert "[5/8] node 5: Stable Audio · DPM-Solver++ Sampler" in err


def test_run_command_runs_the_bundled_text_to_audio_workflow_trimmed_to_seconds_total(
        bundled_stand_in, folders, capsys):
    workflow = ROOT / "workflows" / "text_to_audio.json"  # as shipped: bundled model, 8 s of a 10 s window
    seconds_total = next(n for n in json.loads(workflow.read_text())["nodes"]
                         if n["type"] == "StableAudio_TimingCondition")["widgets_values"][1]

    code = cli_main(["run", str(workflow), "--models", str(folders["models"]), "--input", str(folders["input"]),
                     "--output", str(folders["output"]), "--device", "cpu", "--set", f"{SAMPLER}.steps=2"])

    out, err = capsys.readouterr()
    assert code == 0, err
    info = sf.info(out.strip().splitlines()[-1])
    assert (info.samplerate, info.channels) == (BUNDLED_SAMPLE_RATE, 2)
    assert info.frames == round(seconds_total * BUNDLED_SAMPLE_RATE)
    assert "Stable Audio · CLAP Text Encode" in err


def test_run_command_reports_invalid_workflows_per_node(tmp_path, folders, capsys):
    prompt, _ = _invalid_cases()["wrong link type"]
    path = tmp_path / "wrong.api.json"
    path.write_text(json.dumps(prompt))
    code = cli_main(["run", str(path), "--models", str(folders["models"]), "--output", str(folders["output"])])
    err = capsys.readouterr().err
    assert code == 2
    assert "node 7 (StableAudio_TrimSilence \"Trim Silence\"): Return type mismatch between linked nodes: audio, " \
           "received_type(LATENT) mismatch input_type(AUDIO)" in err
