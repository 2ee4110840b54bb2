"""Audio output nodes: trimming to the requested length and saving files."""

from __future__ import annotations

import json

import torch

from ..stable_audio_core.audio import tags as audio_tags
from ..stable_audio_core.audio.io import WRITE_FORMATS, writable_formats, write_audio
from ..stable_audio_core.audio.postprocess import trim_silence
from . import files
from .datatypes import AUDIO, CATEGORY, audio_parts, make_audio


def available_formats() -> list[str]:
    """The formats this soundfile build can write (MP3 needs libsndfile 1.1 or newer). Without
    soundfile the node still lists its formats; saving then says what to install."""
    try:
        return writable_formats()
    except ImportError:
        return list(WRITE_FORMATS)


class TrimSilence:
    DESCRIPTION = ("Cuts the silence after the content: at seconds_total when it is given (connect "
                   "Timing Condition's output), else where the energy detector finds the last "
                   "frame above threshold_db.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (AUDIO,)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The trimmed audio.",)
    FUNCTION = "trim"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": (AUDIO, {"tooltip": "Decoded audio."}),
            "seconds_total": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000.0, "step": 0.01,
                              "tooltip": "Keep this many seconds; 0 detects the end by energy."}),
            "threshold_db": ("FLOAT", {"default": -60.0, "min": -160.0, "max": 0.0, "step": 1.0,
                             "tooltip": "Frames quieter than this (dBFS) count as silence."}),
        }}

    def trim(self, audio, seconds_total, threshold_db):
        waveform, rate = audio_parts(audio, "Trim Silence's audio input")
        trimmed = trim_silence(waveform, rate, seconds_total or None, threshold_db)
        return (make_audio(trimmed, rate),)


class SaveAudio:
    DESCRIPTION = ("Saves audio under the output folder as FLAC, WAV, Ogg Vorbis, Opus or MP3 "
                   "(those this soundfile build can write), one file per batch item, all shown in "
                   "the node's player list. FLAC, Ogg, Opus and MP3 files carry the workflow and "
                   "prompt as tags, as ComfyUI's own Save Audio writes them, so dropping one on "
                   "ComfyUI reopens the workflow; WAV files get a .json sidecar holding the prompt "
                   "that reproduces the file. Opus is stored at 48 kHz (Opus has no 44.1 kHz).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": (AUDIO, {"tooltip": "The audio to save (every item of the batch)."}),
            "filename_prefix": ("STRING", {"default": "audio/StableAudio", "tooltip":
                                "Sub-folder and file name stem inside the output folder."}),
            "format": (available_formats(), {"default": "flac", "tooltip":
                       "FLAC (lossless), WAV (16-bit, sidecar .json), Ogg Vorbis, Opus (48 kHz), "
                       "MP3; all but WAV embed the workflow."}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    def save(self, audio, filename_prefix, format, prompt=None, extra_pnginfo=None, unique_id=None):
        waveform, rate = audio_parts(audio, "Save Audio's audio input")
        tags = {}
        if prompt is not None:
            tags["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            tags[key] = json.dumps(value)
        # A sidecar keeps what reproduces this file: the part of the prompt this node depends on.
        sidecar = {"prompt": json.dumps(prompt_for(prompt, unique_id))} if prompt is not None else {}
        results = []
        for item in waveform:
            path, filename, subfolder = files.output_path(filename_prefix, format)
            embed = format in audio_tags.TAGGED_FORMATS
            write_audio(path, item.to(torch.float32), rate, format,
                        tags=tags if embed else None, reserved=True)
            if sidecar and not embed:
                audio_tags.write_sidecar(path, sidecar)
            results.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        return {"ui": {"audio": results}}


def prompt_for(prompt: dict, node_id: str | None) -> dict:
    """The nodes of an API prompt that `node_id` depends on (all of it when the id is unknown)."""
    if node_id is None or str(node_id) not in prompt:
        return prompt
    kept, stack = {}, [str(node_id)]
    while stack:
        current = stack.pop()
        if current in kept or not isinstance(prompt.get(current), dict):
            continue
        kept[current] = prompt[current]
        for value in (prompt[current].get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                stack.append(str(value[0]))
    return kept
