"""Conditioning nodes: text through the model's text encoder, timing, and their combination."""

from __future__ import annotations

from ..stable_audio_core.errors import InputError
from ..stable_audio_core.pipeline import (assemble_conditioning, conditioner_ids, encode_conditioners,
                                          sa3_inpaint_condition, sa3_window, text_conditioner_ids)
from .datatypes import AUDIO, CATEGORY, CONDITIONING, MODEL, TEXT, audio_parts
from .sampling import model_seconds

INPAINT_MODES = ("regenerate range", "keep range", "extend source")


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


class T5GemmaEncode(_TextEncode):
    DESCRIPTION = ("Encodes the positive and negative prompt with the model's T5Gemma encoder "
                   "(Stable Audio 3). An empty negative is the reference's zero unconditional side.")
    KIND = "T5Gemma"
    CONDITIONER_TYPES = ("t5gemma",)


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
                                         "Pad's seconds_total. Stable Audio 3: it sets the latent "
                                         "length (up to the model's maximum)."}),
        }, "optional": {
            "text": (TEXT, {"tooltip": "Encoded text from T5 Encode, T5Gemma Encode or CLAP Encode."}),
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


def inpaint_regions(mode: str, start: float, end: float, source_seconds: float,
                    seconds_total: float) -> list[tuple[float, float]]:
    """The (start, end) ranges to regenerate, in seconds, for one of INPAINT_MODES."""
    if mode == "extend source":
        if source_seconds >= seconds_total:
            raise InputError(f"'extend source' generates from the source's end ({source_seconds:.2f} s) to "
                             f"seconds_total ({seconds_total:.2f} s): raise seconds_total above the source's length")
        return [(source_seconds, seconds_total)]
    if not 0 <= start < end:
        raise InputError(f"need 0 <= start_seconds < end_seconds, got {start} and {end}")
    if start >= seconds_total:
        raise InputError(f"start_seconds={start} is past seconds_total={seconds_total}")
    if mode == "keep range":
        return [(0.0, start), (end, max(end, seconds_total))]
    return [(start, end)]


class SA3InpaintCondition:
    DESCRIPTION = ("Stable Audio 3 inpainting and outpainting: adds the source audio (encoded over "
                   "the generation window of the conditioning's seconds_total) and what to keep of it "
                   "to the conditioning; the model regenerates the rest. For a longer clip (extend), "
                   "set seconds_total above the source's length and choose 'extend source'.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The conditioning with the inpainting condition, for the sampler.",)
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The loaded Stable Audio 3 model (its SAME encoder is used)."}),
            "conditioning": (CONDITIONING, {"tooltip": "From Timing Condition: its seconds_total sets "
                             "the window and the output length."}),
            "audio": (AUDIO, {"tooltip": "The source audio (one clip); resampled to the model's rate."}),
            "start_seconds": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 10000.0, "step": 0.1,
                              "tooltip": "Start of the range (seconds into the source)."}),
            "end_seconds": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 10000.0, "step": 0.1,
                            "tooltip": "End of the range (seconds)."}),
            "mode": (list(INPAINT_MODES), {"default": INPAINT_MODES[0], "tooltip":
                     "'regenerate range': new audio in start..end, the rest kept; 'keep range': only "
                     "start..end kept; 'extend source': the whole source kept and continued up to "
                     "seconds_total (start/end unused)."}),
            "keep_source": ("BOOLEAN", {"default": True, "tooltip":
                            "Put the source's latents back on the kept frames after sampling, so the "
                            "kept audio stays as encoded. Off: as the reference, the model regenerates "
                            "them too, guided by the source."}),
        }}

    def condition(self, model, conditioning, audio, start_seconds, end_seconds, mode, keep_source):
        if not model.is_sa3:
            raise InputError("this node serves Stable Audio 3 models; for other models use Noise Mask "
                             "from Time Range on the VAE Encode latent")
        if conditioning.get("inpaint") is not None:
            raise InputError("this conditioning already has an inpaint condition; use one per conditioning "
                             "('keep range' keeps one range and regenerates both sides)")
        waveform, rate = audio_parts(audio)
        if waveform.shape[0] != 1:
            raise InputError(f"the source must be one clip, got a batch of {waveform.shape[0]}")
        seconds_total = conditioning["seconds_total"]
        regions = inpaint_regions(mode, start_seconds, end_seconds, waveform.shape[-1] / rate, seconds_total)
        length = sa3_window(model, [seconds_total])
        local = sa3_inpaint_condition(model, (rate, waveform[0]), regions, length, seconds_total)
        return ({**conditioning, "inpaint": {"local_add_cond": local, "paste_kept": bool(keep_source)}},)
