"""Conditioning nodes: text through the model's text encoder, timing, and their combination."""

from __future__ import annotations

from ..stable_audio_core.errors import InputError
from ..stable_audio_core.pipeline import (assemble_conditioning, conditioner_ids, encode_conditioners,
                                          text_conditioner_ids)
from .datatypes import CATEGORY, CONDITIONING, MODEL, TEXT
from .sampling import model_seconds


class _TextEncode:
    """Shared by the text encoders: the conditioner types they serve differ, nothing else."""

    KIND = ""
    CONDITIONER_TYPES: tuple[str, ...] = ()
    CATEGORY = CATEGORY
    RETURN_TYPES = (TEXT,)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("Encoded positive and negative text; connect to Timing Condition.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The loaded Stable Audio model (its text encoder is used)."}),
            "positive": ("STRING", {"multiline": True, "default": "", "tooltip":
                         "What to generate, e.g. '128 BPM tech house drum loop, punchy kick'."}),
            "negative": ("STRING", {"multiline": True, "default": "", "tooltip":
                         "What to steer away from (classifier-free guidance's other side). Empty: "
                         "the unconditional side, as stable-audio-tools does without a negative prompt."}),
        }}

    def encode(self, model, positive, negative):
        ids = conditioner_ids(model, self.CONDITIONER_TYPES)
        if not ids:
            kinds = {spec.id: spec.type for spec in model.config.conditioners}
            raise InputError(f"this model has no {self.KIND} text conditioner (its conditioners: "
                             f"{kinds}); use the text encode node that matches it")
        encode = lambda text: encode_conditioners(model, [{i: text for i in ids}], ids)  # noqa: E731
        negative_parts = encode(negative) if negative.strip() else None
        return ({"kind": self.KIND, "positive": encode(positive), "negative": negative_parts},)


class T5Encode(_TextEncode):
    DESCRIPTION = ("Encodes the positive and negative prompt with the model's T5 encoder (Stable "
                   "Audio Open 1.0 and Small). Encoded once, reused while the text is unchanged.")
    KIND = "T5"
    CONDITIONER_TYPES = ("t5",)


class CLAPEncode(_TextEncode):
    DESCRIPTION = ("Encodes the positive and negative prompt with the model's CLAP text encoder "
                   "(Stable Audio 1.0-style models with a clap_text conditioner).")
    KIND = "CLAP"
    CONDITIONER_TYPES = ("clap_text",)


class TimingCondition:
    DESCRIPTION = ("Adds the timing conditioning (seconds_start, seconds_total) to the encoded "
                   "text, giving the sampler's conditioning for both sides of guidance. "
                   "seconds_total is the length you want (0: the model's window; longer than the "
                   "window logs a warning); it is also output for Trim Silence.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONDITIONING, "FLOAT")
    RETURN_NAMES = ("conditioning", "seconds_total")
    OUTPUT_TOOLTIPS = ("Positive and negative conditioning for the sampler.",
                       "The requested duration, for Trim Silence.")
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The loaded Stable Audio model."}),
            "seconds_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000.0, "step": 0.1,
                              "tooltip": "Where the clip starts within a longer piece (seconds)."}),
            "seconds_total": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000.0, "step": 0.1,
                              "tooltip": "Duration to generate (seconds); 0 = the loaded model's "
                                         "window. At most the latent's length; the rest of the "
                                         "window becomes silence. Continuation: connect Latent "
                                         "Pad's seconds_total."}),
        }, "optional": {
            "text": (TEXT, {"tooltip": "Encoded text from T5 Encode or CLAP Encode."}),
        }}

    def condition(self, model, seconds_start, seconds_total, text=None):
        seconds_total = model_seconds(model, seconds_total, "Timing Condition's seconds_total")
        text_ids = text_conditioner_ids(model)
        ids = [i for i in conditioner_ids(model) if i not in text_ids]
        timing = {"seconds_start": seconds_start, "seconds_total": seconds_total}
        parts = encode_conditioners(model, [timing], ids)
        if text is None and text_ids:
            raise InputError("this model needs text: connect a T5 Encode (or CLAP Encode) node to "
                             "'text'")
        text = text or {"positive": {}, "negative": None}
        positive = assemble_conditioning(model, {**text["positive"], **parts})
        negative = None
        if text["negative"] is not None:
            negative = assemble_conditioning(model, {**text["negative"], **parts})
        conditioning = {"positive": positive, "negative": negative,
                        "seconds_start": float(seconds_start), "seconds_total": float(seconds_total)}
        return (conditioning, float(seconds_total))
