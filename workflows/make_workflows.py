"""Write the shipped workflows from the short descriptions below, in both ComfyUI formats:
<name>.json (UI format: opens in the frontend, laid out in columns) and api/<name>.json (API
format, converted from the UI file by the host exactly as it converts any saved workflow).
ComfyUI's Templates browser lists every .json directly in workflows/, so only UI files live
there, each with its thumbnail <name>.jpg (tools/make_thumbnails.py).

    python workflows/make_workflows.py        # after changing a node's inputs or these graphs

tests/test_workflows.py checks that the committed files equal what this script writes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from stable_audio_core.default_model import DEFAULT_MODEL_NAME  # noqa: E402

P = "StableAudio_"

# Each node: id -> (class key without prefix, column, place in the column, widget values, links
# {input: (id, slot)}). Columns: model and prompt | timing and the latent source | sampler | output.
# Widget values follow INPUT_TYPES order; "seed" is followed by its control_after_generate value.
# Two model kinds, the same graphs: the small model bundled with the pack (CLAP prompt, int timing,
# a 10 s window; its config, CLAP folder and sampling defaults ship with it) and Stable Audio
# Open 1.0 (T5 prompt, 47 s window; the user downloads it), whose workflows are named sao_*.
BUNDLED = {
    "model": {1: ("LoadCheckpoint", 0, 0, [DEFAULT_MODEL_NAME, "auto", "none", "auto", "auto"], {})},
    # Empty negative: the unconditional side, what the model learned from its condition dropout.
    "text": {2: ("CLAPEncode", 0, 1, ["warm piano chords, 90 BPM", ""], {"model": (1, 0)})},
    "steps": 50, "cfg": 5.0,   # the bundled config's sampling_defaults
}
SAO = {
    "model": {1: ("LoadCheckpoint", 0, 0, ["stable-audio-open-1.0.safetensors", "bundled/stable_audio_open_1.0.json",
                                            "t5-base", "auto", "auto"], {})},
    "text": {2: ("T5Encode", 0, 1, ["128 BPM tech house drum loop, punchy kick, crisp hats", "low quality, distorted"],
                 {"model": (1, 0)})},
    "steps": 100, "cfg": 7.0,
}


# Stable Audio 3 Small (music): the released files in models/ (see README "Stable Audio 3");
# 8 pingpong steps and cfg 1 are its defaults ("default" sampler = pingpong).
SA3 = {
    "model": {1: ("LoadCheckpoint", 0, 0, ["stable-audio-3-small-music.safetensors",
                                            "bundled/stable-audio-3-small-music.json", "t5gemma-b-b-ul2",
                                            "auto", "auto"], {})},
    "text": {2: ("T5GemmaEncode", 0, 1, ["lo-fi hip hop beat, warm Rhodes chords, vinyl crackle, 85 BPM", ""],
                 {"model": (1, 0)})},
    "steps": 8, "cfg": 1.0,
}


def timing(seconds_total: float, linked: dict | None = None, model_from: int = 1) -> dict:
    return {3: ("TimingCondition", 1, 0, [0.0, seconds_total],
                {"model": (model_from, 0), "text": (2, 0), **(linked or {})})}


def sampler(kind: dict, latent_from: int, denoise: float, conditioning_from: int = 3, model_from: int = 1) -> dict:
    return {5: ("DPMSolverSampler", 2, 0, [42, "randomize", kind["steps"], kind["cfg"], "default",
                                               "polyexponential", 0.3, 500.0, denoise, -1.0, 1.0],
                {"model": (model_from, 0), "conditioning": (conditioning_from, 0), "latent": (latent_from, 0)})}


def output(model_from: int = 1) -> dict:
    return {6: ("VAEDecode", 3, 0, [128, 32], {"model": (model_from, 0), "latent": (5, 0)}),
            7: ("TrimSilence", 2, 1, [0.0, -60.0], {"audio": (6, 0), "seconds_total": (3, 1)}),
            8: ("SaveAudio", 3, 1, ["audio/stable_audio", "flac"], {"audio": (7, 0)})}


def load_clip() -> dict:
    return {10: ("LoadAudio", 1, 1, ["clip.wav"], {"model": (1, 0)}),
            11: ("VAEEncode", 1, 2, [], {"model": (1, 0), "audio": (10, 0)})}


def graphs(kind: dict, window: float, generated: float, clip: float, added: float) -> dict:
    """The four graphs for one model kind. Text to audio: a `window`-second empty latent of which
    `generated` seconds are kept; audio to audio and inpaint: a `clip`-second clip; continuation:
    `added` seconds appended to the clip, the total (Latent Pad's) conditions the timing."""
    head = {**kind["model"], **kind["text"]}
    return {
        "text_to_audio": {**head, **timing(generated),
                          4: ("EmptyLatentAudio", 1, 1, [window, 1], {"model": (1, 0)}),
                          **sampler(kind, 4, 1.0), **output()},
        "audio_to_audio": {**head, **timing(clip), **load_clip(), **sampler(kind, 11, 0.6), **output()},
        "inpaint": {**head, **timing(clip), **load_clip(),
                    12: ("LatentNoiseMask", 1, 3, [4.0, 6.0, "regenerate range"], {"model": (1, 0), "latent": (11, 0)}),
                    **sampler(kind, 12, 1.0), **output()},
        "continuation": {**head, **timing(0.0, {"seconds_total": (13, 1)}), **load_clip(),
                         13: ("LatentPad", 1, 3, [added, "end"], {"model": (1, 0), "latent": (11, 0)}),
                         **sampler(kind, 13, 1.0), **output()},
    }


def sa3_graphs() -> dict:
    """The Stable Audio 3 graphs: text to audio (30 s), audio to audio and inpaint on a 10 s clip,
    extend (a 10 s clip outpainted to 20 s), and text to audio through a LoRA."""
    head = {**SA3["model"], **SA3["text"]}
    empty = lambda seconds, column=1, place=1, model=1: {  # noqa: E731
        4: ("EmptyLatentAudio", column, place, [seconds, 1], {"model": (model, 0)})}
    clip = {10: ("LoadAudio", 1, 1, ["clip.wav"], {"model": (1, 0)})}

    def condition(mode: str, start: float, end: float) -> dict:
        return {12: ("SA3InpaintCondition", 1, 2, [start, end, mode, True],
                     {"model": (1, 0), "conditioning": (3, 0), "audio": (10, 0)})}

    lora_head = {**SA3["model"], 14: ("LoadLoRA", 1, 2, ["example_lora.safetensors", 1.0], {"model": (1, 0)}),
                 2: ("T5GemmaEncode", 0, 1, SA3["text"][2][3], {"model": (14, 0)})}
    return {
        "sa3_text_to_audio": {**head, **timing(30.0), **empty(30.0), **sampler(SA3, 4, 1.0), **output()},
        "sa3_audio_to_audio": {**head, **timing(10.0), **clip,
                               11: ("VAEEncode", 1, 2, [], {"model": (1, 0), "audio": (10, 0)}),
                               **sampler(SA3, 11, 0.6), **output()},
        "sa3_inpaint": {**head, **timing(10.0), **clip, **empty(10.0, column=2, place=2),
                        **condition("regenerate range", 4.0, 6.0),
                        **sampler(SA3, 4, 1.0, conditioning_from=12), **output()},
        "sa3_extend": {**head, **timing(20.0), **clip, **empty(20.0, column=2, place=2),
                       **condition("extend source", 0.0, 20.0),
                       **sampler(SA3, 4, 1.0, conditioning_from=12), **output()},
        "sa3_lora": {**lora_head, **timing(30.0, model_from=14), **empty(30.0, model=14),
                     **sampler(SA3, 4, 1.0, model_from=14), **output(model_from=14)},
    }


# The bundled model's window is 432 latent frames (about 10.03 s): every graph stays within 10 s.
_BUNDLED = graphs(BUNDLED, window=10.0, generated=8.0, clip=10.0, added=4.0)
_SAO = graphs(SAO, window=47.0, generated=30.0, clip=10.0, added=10.0)
_SAO_FILES = ("Stable Audio Open 1.0: put its model.safetensors in models/checkpoints as "
              "stable-audio-open-1.0.safetensors and the t5-base folder in models/text_encoders.")
WORKFLOWS = {
    "text_to_audio": (_BUNDLED["text_to_audio"],
                      "Text to audio with the small model that ships with the pack (nothing to "
                      "download): describe the sound, set seconds_total (at most 10 s, the model's "
                      "window), queue. For Stable Audio Open 1.0 open sao_text_to_audio."),
    "audio_to_audio": (_BUNDLED["audio_to_audio"],
                       "Audio to audio (bundled model): put a clip of up to 10 s in input/ and choose "
                       "it in Load Audio. denoise sets how much changes (1 = everything). "
                       "seconds_total = the clip's length."),
    "inpaint": (_BUNDLED["inpaint"],
                "Inpaint (bundled model, clips up to 10 s): regenerates start..end seconds of the "
                "clip and keeps the rest (the VAE smooths the seams). Chain more noise masks for "
                "more ranges."),
    "continuation": (_BUNDLED["continuation"],
                     "Continuation (bundled model): Latent Pad extends the clip by 'seconds' and "
                     "keeps the original; its seconds_total (clip + added) feeds Timing Condition. "
                     "Clip + added is clamped to the model's 10 s window (a warning says so): "
                     "a 6 s clip gets the full 4 s."),
    "sao_text_to_audio": (_SAO["text_to_audio"],
                          "Text to audio: describe the sound, set seconds_total (at most the empty "
                          "latent's seconds), queue. " + _SAO_FILES),
    "sao_audio_to_audio": (_SAO["audio_to_audio"],
                           "Audio to audio: put a clip in input/ and choose it in Load Audio. denoise sets "
                           "how much changes (1 = everything). seconds_total = the clip's length. " + _SAO_FILES),
    "sao_inpaint": (_SAO["inpaint"],
                    "Inpaint: regenerates start..end seconds of the clip and keeps the rest (the VAE "
                    "smooths the seams). Chain more noise masks for more ranges. " + _SAO_FILES),
    "sao_continuation": (_SAO["continuation"],
                         "Continuation: Latent Pad extends the clip by 'seconds' and keeps the "
                         "original; its seconds_total (clip + added, clamped to the model's 47 s "
                         "window) feeds Timing Condition. " + _SAO_FILES),
}
_SA3 = sa3_graphs()
_SA3_FILES = ("Stable Audio 3 Small: its model.safetensors in models/checkpoints as "
              "stable-audio-3-small-music.safetensors, the t5gemma-b-b-ul2 folder in models/text_encoders. "
              "Defaults: 8 pingpong steps, cfg 1; seconds_total sets the length.")
WORKFLOWS.update({
    "sa3_text_to_audio": (_SA3["sa3_text_to_audio"], "Stable Audio 3 text to audio: describe the sound, set "
                          "seconds_total, queue. " + _SA3_FILES),
    "sa3_audio_to_audio": (_SA3["sa3_audio_to_audio"], "Stable Audio 3 audio to audio: put a clip in input/ and "
                           "choose it in Load Audio; denoise sets how much changes. seconds_total = the clip's "
                           "length. " + _SA3_FILES),
    "sa3_inpaint": (_SA3["sa3_inpaint"], "Stable Audio 3 inpaint: regenerates start..end seconds of the clip, "
                    "keeps the rest (keep_source puts the kept latents back exactly). seconds_total = the "
                    "clip's length. " + _SA3_FILES),
    "sa3_extend": (_SA3["sa3_extend"], "Stable Audio 3 extend (outpainting): keeps the clip and continues it up "
                   "to seconds_total (20 s here for a 10 s clip). " + _SA3_FILES),
    "sa3_lora": (_SA3["sa3_lora"], "Stable Audio 3 with a LoRA: put the LoRA file in models/loras, choose it "
                 "and its strength; chain more Load LoRA nodes to stack them. " + _SA3_FILES),
})
COLUMN_WIDTH, WIDTH, GAP, LEFT, TOP, NOTE_HEIGHT = 370, 330, 30, 30, 80, 140
TITLE_HEIGHT = 30  # the frontend draws a node's title bar above its pos
# The saved view must show the whole graph in a 1366x768 window: the screen area left free by
# the frontend's side bar (left), menu and breadcrumb (top), as (left, top, right, bottom).
SCREEN = (70, 100, 1346, 745)
# The frontend's minimap covers this corner of the window (left, top): the graph stays out of it.
MINIMAP = (1100, 500)
# Heights of the widgets the frontend draws itself: the audio player on both, and Load Audio's
# upload button (measured in frontend 1.58 at the sizes these nodes had before).
FRONTEND_WIDGETS_HEIGHT = {"LoadAudio": 124, "SaveAudio": 96}
API_FOLDER = "api"  # a sub-folder: the Templates browser would list API files as broken templates


def _height(cls) -> int:
    """A node's body height as the frontend (1.58) lays it out: 20 a row of sockets, 24 a widget
    (a seed's control_after_generate too), a 14 margin; plus room for multiline text, the
    frontend's own widgets and 10 to spare, so the frontend never grows a node into the next."""
    from stable_audio_host.workflow import is_widget, widget_slots
    spec = cls.INPUT_TYPES()
    sockets, extra = 0, FRONTEND_WIDGETS_HEIGHT.get(cls.__name__, 0)
    for category in ("required", "optional"):
        for entry in (spec.get(category) or {}).values():
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            sockets += not is_widget(entry[0], options)
            extra += 70 if options.get("multiline") else 0
    return 20 * max(sockets, len(cls.RETURN_TYPES)) + 24 * len(widget_slots(cls)) + 14 + 10 + extra


def _positions(nodes: dict, classes: dict) -> dict[int, list[int]]:
    """Node id -> [x, y]: columns side by side, each column's nodes stacked in their order."""
    positions, bottoms = {}, {}
    for node_id, (kind, column, place, _, _) in sorted(nodes.items(), key=lambda item: item[1][1:3]):
        y = bottoms.get(column, TOP)
        positions[node_id] = [LEFT + column * COLUMN_WIDTH, y]
        bottoms[column] = y + _height(classes[P + kind]) + GAP + TITLE_HEIGHT
    return positions


def _view(boxes: list[tuple[int, int, int, int]], node_boxes: list[tuple[int, int, int, int]]) -> dict:
    """The saved zoom and offset that show every box (title bars included) inside SCREEN, and no
    node under the minimap (a group's empty corner may be)."""
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    # one graph unit of slack on each axis for the offset's rounding up below
    scale = int(100 * min((SCREEN[2] - SCREEN[0]) / (x1 - x0 + 1), (SCREEN[3] - SCREEN[1]) / (y1 - y0 + 1))) / 100
    # screen = (graph + offset) * scale
    offset = [math.ceil(SCREEN[0] / scale - x0), math.ceil(SCREEN[1] / scale - y0)]
    under_minimap = [b for b in node_boxes if (b[2] + offset[0]) * scale > MINIMAP[0] and (b[3] + offset[1]) * scale > MINIMAP[1]]
    assert not under_minimap, f"lay the graph out so that nothing reaches the minimap's corner: {under_minimap}"
    return {"scale": scale, "offset": offset}


def build_ui(nodes: dict, note: str, classes: dict, titles: dict[str, str]) -> dict:
    from stable_audio_host.workflow import is_widget, widget_slots

    links, ui_nodes, link_id = [], {}, 0
    positions = _positions(nodes, classes)
    for node_id, (kind, column, row, values, _) in nodes.items():
        cls = classes[P + kind]
        ui_nodes[node_id] = {
            "id": node_id, "type": P + kind, "title": titles[P + kind], "pos": positions[node_id],
            "size": [WIDTH, _height(cls)], "flags": {}, "order": 0, "mode": 0, "inputs": [],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))],
            "properties": {"Node name for S&R": P + kind}, "widgets_values": list(values)}
        assert len(values) == len(widget_slots(cls)), (kind, values, widget_slots(cls))
    for node_id, (kind, _, _, _, inputs) in nodes.items():
        spec = classes[P + kind].INPUT_TYPES()
        for category in ("required", "optional"):
            for name, entry in (spec.get(category) or {}).items():
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                widget = is_widget(entry[0], options)
                if widget and name not in inputs:
                    continue
                slot_in = {"name": name, "type": entry[0], "link": None}
                if widget:
                    slot_in["widget"] = {"name": name}
                if name in inputs:
                    link_id += 1
                    source, slot = inputs[name]
                    out = ui_nodes[source]["outputs"][slot]
                    links.append([link_id, source, slot, node_id, len(ui_nodes[node_id]["inputs"]), out["type"]])
                    out["links"].append(link_id)
                    slot_in["link"] = link_id
                ui_nodes[node_id]["inputs"].append(slot_in)
    order = _order(nodes)
    for index, node_id in enumerate(order):
        ui_nodes[node_id]["order"] = index
    note_id = max(nodes) + 1
    text_node = ui_nodes[2]
    note_pos = [text_node["pos"][0], text_node["pos"][1] + text_node["size"][1] + GAP + TITLE_HEIGHT]
    ui_nodes[note_id] = {"id": note_id, "type": "Note", "title": "How to use", "pos": note_pos,
                         "size": [WIDTH, NOTE_HEIGHT], "flags": {}, "order": len(order), "mode": 0,
                         "inputs": [], "outputs": [], "properties": {}, "widgets_values": [note],
                         "color": "#432", "bgcolor": "#653"}
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui_nodes.values()]
    groups = [_group(1, "Model and prompt", "#3f789e", [b for b in boxes if b[0] < LEFT + COLUMN_WIDTH]),
              _group(2, "Generate and save", "#8A8", [b for b in boxes if b[0] >= LEFT + COLUMN_WIDTH])]
    group_boxes = [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                    g["bounding"][1] + g["bounding"][3]) for g in groups]
    return {"last_node_id": note_id, "last_link_id": link_id,
            "nodes": [ui_nodes[i] for i in sorted(ui_nodes)], "links": links, "groups": groups,
            "config": {}, "extra": {"ds": _view(boxes + group_boxes, boxes)}, "version": 0.4}


def _group(group_id: int, title: str, color: str, boxes: list) -> dict:
    """A group around `boxes`, its own title bar above them."""
    x0, y0 = min(b[0] for b in boxes) - 15, min(b[1] for b in boxes) - 45
    x1, y1 = max(b[2] for b in boxes) + 15, max(b[3] for b in boxes) + 15
    return {"id": group_id, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color,
            "font_size": 24, "flags": {}}


def _order(nodes: dict) -> list[int]:
    done: list[int] = []
    while len(done) < len(nodes):
        for node_id, (_, _, _, _, inputs) in sorted(nodes.items()):
            if node_id not in done and all(src in done for src, _ in inputs.values()):
                done.append(node_id)
    return done


def render() -> dict[str, str]:
    """Path relative to workflows/ -> text, for every workflow in both formats."""
    from stable_audio_host.pack import load_pack
    from stable_audio_host.workflow import ui_to_api

    pack = load_pack(ROOT)
    # Short titles: the display name without the pack's "Stable Audio · " (a node badge says whose).
    titles = {key: name.split(" · ", 1)[-1] for key, name in pack.display_names.items()}
    files = {}
    for name, (nodes, note) in WORKFLOWS.items():
        ui = build_ui(nodes, note, pack.classes, titles)
        files[f"{name}.json"] = json.dumps(ui, indent=1) + "\n"
        files[f"{API_FOLDER}/{name}.json"] = json.dumps(ui_to_api(ui, pack.classes), indent=1) + "\n"
    return files


if __name__ == "__main__":
    for filename, text in render().items():
        (HERE / filename).parent.mkdir(exist_ok=True)
        (HERE / filename).write_text(text)
        print(HERE / filename)
