"""Latent tools for inpainting-style edits and continuation: a noise mask from a time range,
and crop / concatenate / pad along time. Masks follow ComfyUI: 1 = regenerate, 0 = keep."""

from __future__ import annotations

import logging

import torch

from ..stable_audio_core.errors import InputError
from ..stable_audio_core.pipeline import seconds_to_frames, window_seconds
from .datatypes import CATEGORY, LATENT, MODEL, audio_length, latent_parts, make_latent

log = logging.getLogger(__name__)

LATENT_CATEGORY = CATEGORY + "/latent"


def _seconds(tooltip: str, default: float = 0.0) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 10000.0, "step": 0.01, "tooltip": tooltip})


def _full_mask(samples: torch.Tensor, mask: torch.Tensor | None, fill: float) -> torch.Tensor:
    if mask is not None:
        return mask.expand(samples.shape[0], 1, samples.shape[-1])
    return torch.full((samples.shape[0], 1, samples.shape[-1]), fill)


def _frame_range(model, length: int, start: float, end: float) -> tuple[int, int]:
    """Seconds [start, end) (end 0 = to the end) -> latent frames [first, last) within length."""
    first = seconds_to_frames(model, start)
    last = length if end <= 0 else min(length, seconds_to_frames(model, end))
    if first >= last:
        seconds = length * model.downsampling_ratio / model.sample_rate
        raise InputError(f"time range {start}-{end} s covers no frame of this {seconds:.2f} s latent; "
                         "give start < end within the clip")
    return first, last


class LatentNoiseMask:
    DESCRIPTION = ("Marks a time range of the latent to regenerate (inpainting): the sampler then "
                   "keeps everything outside it. Chain several to regenerate several ranges; "
                   "'keep range' inverts the choice.")
    CATEGORY = LATENT_CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent with its noise_mask set.",)
    FUNCTION = "mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model whose latent rate maps seconds to frames."}),
            "latent": (LATENT, {"tooltip": "Usually VAE Encode of the clip to edit."}),
            "start_seconds": _seconds("Start of the range."),
            "end_seconds": _seconds("End of the range; 0 = the end of the clip.", 1.0),
            "mode": (["regenerate range", "keep range"], {"default": "regenerate range", "tooltip":
                     "Regenerate inside the range (keep the rest), or keep inside and regenerate the rest."}),
        }}

    def mask(self, model, latent, start_seconds, end_seconds, mode):
        samples, mask = latent_parts(latent, model)
        first, last = _frame_range(model, samples.shape[-1], start_seconds, end_seconds)
        inside = torch.zeros(1, 1, samples.shape[-1])
        inside[..., first:last] = 1
        if mode == "regenerate range":
            new = inside if mask is None else torch.maximum(mask, inside)
        else:
            new = (1 - inside) if mask is None else mask * (1 - inside)
        return (make_latent(samples, new, like=latent),)


class LatentCrop:
    DESCRIPTION = "Keeps a time range of the latent (and of its noise mask)."
    CATEGORY = LATENT_CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The cropped latent.",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model whose latent rate maps seconds to frames."}),
            "latent": (LATENT, {"tooltip": "The latent to crop."}),
            "start_seconds": _seconds("Start of the part to keep."),
            "end_seconds": _seconds("End of the part to keep; 0 = the end."),
        }}

    def crop(self, model, latent, start_seconds, end_seconds):
        samples, mask = latent_parts(latent, model)
        first, last = _frame_range(model, samples.shape[-1], start_seconds, end_seconds)
        cropped_mask = None if mask is None else mask[..., first:last]
        ratio = model.downsampling_ratio
        kept = min(audio_length(latent, model), last * ratio) - first * ratio
        return (make_latent(samples[..., first:last], cropped_mask, like=latent, audio_samples=kept),)


class LatentConcat:
    DESCRIPTION = ("Joins two latents in time (first, then second). Noise masks are joined too; "
                   "a side without a mask counts as all 1 (regenerate), ComfyUI's default.")
    CATEGORY = LATENT_CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The joined latent.",)
    FUNCTION = "concat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "first": (LATENT, {"tooltip": "Comes first in time."}),
            "second": (LATENT, {"tooltip": "Follows the first."}),
        }}

    def concat(self, first, second):
        a, mask_a = latent_parts(first)
        b, mask_b = latent_parts(second)
        if a.shape[:2] != b.shape[:2]:
            raise InputError(f"cannot join latents of shapes {tuple(a.shape)} and {tuple(b.shape)}: "
                             "batch and channels must match")
        mask = None
        if mask_a is not None or mask_b is not None:
            mask = torch.cat([_full_mask(a, mask_a, 1.0), _full_mask(b, mask_b, 1.0)], dim=-1)
        return (make_latent(torch.cat([a, b], dim=-1), mask, like=first),)


class LatentPad:
    DESCRIPTION = ("Adds seconds of empty latent at the end (continuation) or the start, and sets "
                   "the noise mask so the sampler generates only the padding and keeps the clip. "
                   "Clip + added seconds are clamped to the model's window (a warning says so); "
                   "connect seconds_total to Timing Condition's seconds_total.")
    CATEGORY = LATENT_CATEGORY
    RETURN_TYPES = (LATENT, "FLOAT")
    RETURN_NAMES = ("latent", "seconds_total")
    OUTPUT_TOOLTIPS = ("The padded latent with its noise mask.",
                       "Clip length + the seconds added: Timing Condition's seconds_total.")
    FUNCTION = "pad"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model whose latent rate maps seconds to frames."}),
            "latent": (LATENT, {"tooltip": "Usually VAE Encode of the clip to extend."}),
            "seconds": ("FLOAT", {"default": 10.0, "min": 0.01, "max": 3600.0, "step": 0.1,
                        "tooltip": "How much to add; clip + this is clamped to the model's window."}),
            "side": (["end", "start"], {"default": "end", "tooltip": "Extend after or before the clip."}),
        }}

    def pad(self, model, latent, seconds, side):
        samples, mask = latent_parts(latent, model)
        ratio, rate = model.downsampling_ratio, model.sample_rate
        clip = audio_length(latent, model)
        room = seconds_to_frames(model, window_seconds(model), "floor") - samples.shape[-1]
        frames = max(1, seconds_to_frames(model, seconds, "ceil"))
        added = round(seconds * rate)
        if room < 1:
            raise InputError(f"the clip ({clip / rate:.2f} s) already fills this model's "
                             f"{window_seconds(model):.2f} s window; crop it (Latent Crop) to leave "
                             "room for the continuation")
        if frames > room:
            frames, added = room, room * ratio
            log.warning("Stable Audio: Latent Pad adds %.2f s instead of %.2f s: clip + continuation "
                        "is clamped to the model's %.2f s window", added / rate, seconds,
                        window_seconds(model))
        padding = torch.zeros(samples.shape[0], samples.shape[1], frames)
        kept = _full_mask(samples, mask, 0.0)  # the clip keeps its mask, else is kept whole
        new = torch.ones(samples.shape[0], 1, frames)
        if side == "end":   # the clip's last frame may end in silence: the continuation covers it
            parts, total = [(samples, kept), (padding, new)], clip + added
        else:
            parts, total = [(padding, new), (samples, kept)], frames * ratio + clip
        padded = make_latent(torch.cat([p[0] for p in parts], -1), torch.cat([p[1] for p in parts], -1),
                             like=latent, audio_samples=total)
        return (padded, total / rate)
