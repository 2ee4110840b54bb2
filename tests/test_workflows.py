"""The shipped workflows (workflows/*.json): in sync with their generator, laid out for the
frontend, and each one runs in the host producing audio of the requested duration: the bundled
model's graphs on a tiny stand-in of its kind, the Stable Audio Open graphs (sao_*) on a tiny
T5 checkpoint, both built here. The inpainting workflow changes nothing outside its range but the
seams."""

from __future__ import annotations

import copy
import json
import math
import sys

import pytest
import soundfile as sf
import torch

from helpers import (BUNDLED_RATIO, BUNDLED_SAMPLE_RATE, BUNDLED_WINDOW, RATIO, ROOT, SAMPLE_RATE,
                                TINY_MODEL, bundled_kind_config, make_folders, session)

BUNDLED_WORKFLOWS = ["text_to_audio", "audio_to_audio", "inpaint", "continuation"]
SA3_WORKFLOWS = ["sa3_text_to_audio", "sa3_audio_to_audio", "sa3_inpaint", "sa3_extend", "sa3_lora"]  # run in test_sa3_workflows.py
SAO_WORKFLOWS = ["sao_" + name for name in BUNDLED_WORKFLOWS]
WORKFLOWS = BUNDLED_WORKFLOWS + SAO_WORKFLOWS + SA3_WORKFLOWS
FRAME_SECONDS = RATIO / SAMPLE_RATE  # one latent frame of the tiny T5 model
# Per workflow: overrides that keep it fast and fit the 3 s test clip, and the duration asked
# for (seconds_total). The bundled text_to_audio runs as shipped (8 s of a 10 s window).
SETTINGS = {
    "text_to_audio": ([], 8.0),
    "audio_to_audio": (["StableAudio_TimingCondition.seconds_total=3.0"], 3.0),
    "inpaint": (["StableAudio_TimingCondition.seconds_total=3.0", "StableAudio_LatentNoiseMask.start_seconds=1.0",
                 "StableAudio_LatentNoiseMask.end_seconds=2.0"], 3.0),
    "continuation": ([], 7.0),  # 3 s clip + the shipped 4 s: Latent Pad gives Timing the total
    "sao_text_to_audio": (["StableAudio_EmptyLatentAudio.seconds=2.0", "StableAudio_TimingCondition.seconds_total=1.5"], 1.5),
    "sao_audio_to_audio": (["StableAudio_TimingCondition.seconds_total=3.0", "StableAudio_LoadAudio.audio=clip.wav"], 3.0),
    "sao_inpaint": (["StableAudio_TimingCondition.seconds_total=3.0", "StableAudio_LatentNoiseMask.start_seconds=1.0",
                     "StableAudio_LatentNoiseMask.end_seconds=2.0"], 3.0),
    "sao_continuation": (["StableAudio_LoadAudio.audio=short.wav", "StableAudio_LatentPad.seconds=0.5"], 1.5),
}
FAST_BUNDLED = ["StableAudio_DPMSolverSampler.steps=2"]  # the bundled graphs' model: the stand-in


def load(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("workflows"))


@pytest.fixture(scope="module")
def host(folders):
    return session(folders)


def test_workflow_files_are_what_the_generator_writes():
    sys.path.insert(0, str(ROOT / "workflows"))
    try:
        import make_workflows
    finally:
        sys.path.remove(str(ROOT / "workflows"))
    rendered = make_workflows.render()
    assert sorted(rendered) == sorted(f"{folder}{n}.json" for n in WORKFLOWS for folder in ("", "api/"))
    stale = [name for name, text in rendered.items() if (ROOT / "workflows" / name).read_text() != text]
    assert stale == [], "run python workflows/make_workflows.py"


def test_templates_folder_holds_only_ui_workflows():
    # ComfyUI's Templates browser lists every .json directly in workflows/ and opens it as a graph.
    listed = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    assert listed == sorted(WORKFLOWS)
    for name in listed:
        ui = load(f"{name}.json")
        assert {"nodes", "links", "version"} <= set(ui), name


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_format_converts_to_the_api_file(host, name):
    prompt, workflow = host.prepare(load(f"{name}.json"))
    assert workflow is not None
    assert prompt == load(f"api/{name}.json")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_layout_is_sensible(name):
    ui = load(f"{name}.json")
    boxes = [(n["pos"][0], n["pos"][1], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in ui["nodes"]]
    overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
    assert overlaps == []
    link_ids = {link[0] for link in ui["links"]}
    used = {i["link"] for n in ui["nodes"] for i in n["inputs"] if i["link"] is not None}
    assert used == link_ids and ui["last_link_id"] == max(link_ids)
    assert ui["last_node_id"] == max(n["id"] for n in ui["nodes"])


@pytest.mark.parametrize("name", WORKFLOWS)
def test_saved_view_shows_the_whole_graph_in_a_1366x768_window_with_titles_that_fit(name):
    ui = load(f"{name}.json")
    scale, (dx, dy) = ui["extra"]["ds"]["scale"], ui["extra"]["ds"]["offset"]
    title_bar = 30  # drawn above a node's pos
    nodes = [(n["pos"][0], n["pos"][1] - title_bar, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]]
    groups = [(x, y, x + w, y + h) for x, y, w, h in (g["bounding"] for g in ui["groups"])]
    screen = [((x0 + dx) * scale, (y0 + dy) * scale, (x1 + dx) * scale, (y1 + dy) * scale)
              for x0, y0, x1, y1 in nodes + groups]
    # The canvas area a 1366x768 browser window leaves free of the frontend's side bar (70 px),
    # menu and breadcrumb (100 px), with a margin at the right and bottom.
    left, top, right, bottom = 70, 100, 1346, 745
    assert all(left <= x0 and x1 <= right and top <= y0 and y1 <= bottom for x0, y0, x1, y1 in screen)
    # The minimap covers the bottom-right corner from (1100, 500): no node under it.
    assert not any(x1 > 1100 and y1 > 500 for x0, y0, x1, y1 in screen[:len(nodes)])
    assert scale >= 0.7  # widget text stays readable
    # About 8 px per character of the title font plus the collapse dot: no "..." cut.
    assert all(len(n["title"]) * 8 + 40 <= n["size"][0] for n in ui["nodes"])
    assert all("Stable Audio" not in n["title"] for n in ui["nodes"])


@pytest.mark.parametrize("name", WORKFLOWS)
def test_templates_browser_fit_keeps_group_titles_below_the_graph_toolbar(name):
    # The Templates browser (frontend 1.58) ignores the saved view: it fits the graph's bounds
    # (nodes and groups) at 0.75 of the 1366x768 window, centered. Its floating "Graph" toolbar
    # ends at y=82; measured group tops came 10-12 px above this model, hence 100.
    ui = load(f"{name}.json")
    boxes = [(n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]] + [(x, y, x + w, y + h) for x, y, w, h in (g["bounding"] for g in ui["groups"])]
    width = max(b[2] for b in boxes) - min(b[0] for b in boxes)
    height = max(b[3] for b in boxes) - min(b[1] for b in boxes)
    scale = min(0.75 * 1366 / width, 0.75 * 768 / height)
    assert 768 / 2 - height * scale / 2 >= 100


def test_bundled_workflows_use_the_bundled_model_within_its_window_and_defaults():
    config = bundled_kind_config()  # the bundled config's timing range, window and sampling_defaults
    window_seconds = BUNDLED_WINDOW / BUNDLED_SAMPLE_RATE
    max_seconds = config["model"]["conditioning"]["configs"][2]["config"]["max_val"]
    for name in BUNDLED_WORKFLOWS:
        nodes = {n["class_type"]: n["inputs"] for n in load(f"api/{name}.json").values()}
        assert nodes["StableAudio_LoadCheckpoint"]["ckpt_name"] == "bundled/default-small"
        assert nodes["StableAudio_LoadCheckpoint"]["text_encoder"] == "none"  # its CLAP ships with it
        assert "StableAudio_CLAPEncode" in nodes and "StableAudio_T5Encode" not in nodes
        seconds_total = nodes["StableAudio_TimingCondition"]["seconds_total"]
        if name == "continuation":  # clip + added seconds, clamped by Latent Pad to the window
            pad = next(i for i, n in load(f"api/{name}.json").items() if n["class_type"] == "StableAudio_LatentPad")
            assert seconds_total == [pad, 1]
            continue
        assert seconds_total <= min(window_seconds, max_seconds), name
        assert seconds_total <= nodes.get("StableAudio_EmptyLatentAudio", {}).get("seconds", seconds_total)
        sampler = nodes["StableAudio_DPMSolverSampler"]
        assert (sampler["steps"], sampler["cfg"]) == (config["sampling_defaults"]["steps"],
                                                      config["sampling_defaults"]["cfg_scale"])
        assert sampler["sampler"] == "default"  # the config's sampler


@pytest.mark.parametrize("name", SAO_WORKFLOWS)
def test_sao_workflows_use_stable_audio_open_with_t5(name):
    nodes = {n["class_type"]: n["inputs"] for n in load(f"api/{name}.json").values()}
    assert nodes["StableAudio_LoadCheckpoint"]["config"] == "bundled/stable_audio_open_1.0.json"
    assert "StableAudio_T5Encode" in nodes and nodes["StableAudio_DPMSolverSampler"]["steps"] == 100


@pytest.mark.parametrize("name", SAO_WORKFLOWS)
def test_sao_workflow_runs_in_the_host_and_gives_the_requested_duration(host, name):
    sets, seconds = SETTINGS[name]

    result = host.run(load(f"{name}.json"), TINY_MODEL + sets)

    files = host.saved_files(result)
    assert len(files) == 1 and files[0].suffix == ".flac"
    info = sf.info(str(files[0]))
    assert info.samplerate == SAMPLE_RATE and info.channels == 2
    assert abs(info.frames / info.samplerate - seconds) <= FRAME_SECONDS


@pytest.mark.parametrize("name", BUNDLED_WORKFLOWS)
def test_bundled_workflow_runs_in_the_host_and_gives_the_requested_duration(host, bundled_stand_in, name):
    sets, seconds = SETTINGS[name]

    result = host.run(load(f"{name}.json"), FAST_BUNDLED + sets)

    files = host.saved_files(result)
    assert len(files) == 1 and files[0].suffix == ".flac"
    info = sf.info(str(files[0]))
    assert info.samplerate == BUNDLED_SAMPLE_RATE and info.channels == 2
    assert abs(info.frames / info.samplerate - seconds) <= BUNDLED_RATIO / BUNDLED_SAMPLE_RATE


def test_api_format_runs_too_and_reuses_cached_nodes(host):
    sets, seconds = SETTINGS["sao_text_to_audio"]
    host.run(load("sao_text_to_audio.json"), TINY_MODEL + sets)

    again = host.run(load("api/sao_text_to_audio.json"), TINY_MODEL + sets)
    reseeded = host.run(load("api/sao_text_to_audio.json"), TINY_MODEL + sets + ["5.seed=43"])

    assert again.executed == []  # the same graph: everything cached, nothing written again
    assert sorted(reseeded.executed, key=int) == ["5", "6", "7", "8"]  # sampler and what follows


def test_inpainting_changes_only_the_range_and_one_chunk_overlap_around_it(host):
    sets, _ = SETTINGS["sao_inpaint"]
    ui = load("sao_inpaint.json")
    reconstruction_ui = copy.deepcopy(ui)  # the same graph with the sampler bypassed: decode(encode(clip))
    next(n for n in reconstruction_ui["nodes"] if n["type"] == "StableAudio_DPMSolverSampler")["mode"] = 4
    overlap = next(n for n in ui["nodes"] if n["type"] == "StableAudio_VAEDecode")["widgets_values"][1]

    inpainted = host.run(ui, TINY_MODEL + sets)
    without_sampler = [s for s in TINY_MODEL if "Sampler" not in s]
    reconstructed = host.run(reconstruction_ui, without_sampler + sets)

    source_latents = inpainted.outputs["11"][0]["samples"]
    sampled = inpainted.outputs["5"][0]
    mask = sampled["noise_mask"][0, 0].bool()
    first, last = int(mask.nonzero()[0]), int(mask.nonzero()[-1]) + 1
    assert (first, last) == (round(1.0 / FRAME_SECONDS), round(2.0 / FRAME_SECONDS))
    # Latents outside the mask end exactly on the source's.
    assert torch.equal(sampled["samples"][..., ~mask], source_latents[..., ~mask])

    audio = inpainted.outputs["7"][0]["waveform"]
    reference = reconstructed.outputs["7"][0]["waveform"]
    assert audio.shape == reference.shape == (1, 2, 3 * SAMPLE_RATE)
    changed = ((audio - reference).abs().amax(dim=(0, 1)) > 1e-6).nonzero()
    seam = overlap * RATIO
    first_changed, last_changed = int(changed[0]), int(changed[-1]) + 1
    # Outside [start - overlap, end + overlap) the audio is the untouched reconstruction
    # (bit-identical: same latents, same chunk windows); inside the range it changed.
    assert first * RATIO - seam <= first_changed and last_changed <= last * RATIO + seam
    inside = (audio - reference)[..., first * RATIO:last * RATIO].abs().mean().item()
    assert inside > 1e-3
    print(f"inpaint: changed samples [{first_changed}, {last_changed}) for mask samples "
          f"[{first * RATIO}, {last * RATIO}); seams reach {(first * RATIO - first_changed) / RATIO:.1f} and "
          f"{(last_changed - last * RATIO) / RATIO:.1f} latent frames (allowed {overlap}); mean change inside {inside:.3f}")


def test_continuation_keeps_the_clip_and_adds_the_requested_seconds(host):
    sets, seconds = SETTINGS["sao_continuation"]
    result = host.run(load("sao_continuation.json"), TINY_MODEL + sets)

    source = result.outputs["11"][0]["samples"]
    extended = result.outputs["5"][0]["samples"]
    assert extended.shape[-1] == source.shape[-1] + math.ceil(0.5 / FRAME_SECONDS)
    assert torch.equal(extended[..., :source.shape[-1]], source)
    # Timing, decode and trim all follow Latent Pad's total: the 1 s clip + 0.5 s, to the sample.
    assert result.outputs["13"][1] == seconds
    assert result.outputs["6"][0]["waveform"].shape[-1] == seconds * SAMPLE_RATE
    assert result.outputs["7"][0]["waveform"].shape[-1] == seconds * SAMPLE_RATE
