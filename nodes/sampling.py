"""Sampling nodes: the empty latent window and the DPM-Solver++ sampler."""

from __future__ import annotations

import logging

import torch

from ..stable_audio_core.errors import InputError
from ..stable_audio_core.pipeline import (SourceLatents, check_duration, resolve_sampling, sa3_window,
                                          sample_latents, sample_sa3_window, seconds_to_frames,
                                          window_seconds)
from ..stable_audio_core.sampling.loop import SCHEDULE_NAMES, sampler_names
from . import hooks
from .datatypes import CATEGORY, CONDITIONING, LATENT, MODEL, latent_parts, make_latent

SEED_MAX = 0xFFFFFFFFFFFFFFFE  # the sampler's own noise uses seed + 1, which must fit 64 bits
MODEL_DEFAULT_RESCALE = -1.0  # cfg_rescale widget value meaning "the model's own default"
MODEL_DEFAULT = 0             # steps / seconds widget value meaning "the loaded model's own"
MODEL_DEFAULT_CFG = -1.0      # cfg widget value meaning "the model's own"
log = logging.getLogger(__name__)


def model_seconds(model, seconds: float, what: str) -> float:
    """`seconds`, 0 meaning the model's window; a longer request is logged, since the model was
    trained on its window and conditions poorly beyond it."""
    window = window_seconds(model)
    if seconds <= 0:
        return window
    if seconds > window + 1e-6:
        log.warning("Stable Audio: %s of %.2f s is longer than this model's window of %.2f s; "
                    "expect poor results beyond it", what, seconds, window)
    return float(seconds)


class EmptyLatentAudio:
    DESCRIPTION = ("An empty latent window of the given length for text-to-audio: the length in "
                   "latent frames follows from the loaded model's sample rate and VAE "
                   "downsampling ratio. seconds 0 (the default) is the model's own window; a "
                   "longer window is allowed but logs a warning.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("ComfyUI LATENT {'samples': zeros [B, C, L], 'type': 'audio'}.",)
    FUNCTION = "empty"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model whose latent rate sets the length."}),
            "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.1,
                        "tooltip": "Window length in seconds; 0 = the loaded model's window (the "
                                   "bundled model: 10 s, Stable Audio Open 1.0: 47 s). At least "
                                   "Timing Condition's seconds_total. Stable Audio 3 sizes its "
                                   "window from seconds_total itself."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                           "tooltip": "How many clips to generate at once."}),
        }}

    def empty(self, model, seconds, batch_size):
        seconds = model_seconds(model, seconds, "Empty Latent Audio's window")
        if model.is_sa3:  # the window Stable Audio 3 samples for this duration (duration + 6 s)
            frames = sa3_window(model, [seconds]) // model.downsampling_ratio
        else:
            frames = max(1, seconds_to_frames(model, seconds, "ceil"))
        return (make_latent(torch.zeros(batch_size, model.io_channels, frames),
                            audio_samples=round(seconds * model.sample_rate)),)


class DPMSolverSampler:
    DESCRIPTION = ("Generates latents with DPM-Solver++ (2M, 2M SDE, 3M SDE) or Euler under "
                   "classifier-free guidance; Stable Audio 3 models with pingpong (their default), "
                   "euler or dpmpp and CFG or APG. A latent with audio in it and denoise below 1 gives "
                   "audio-to-audio; a latent noise mask (or, for Stable Audio 3, an inpaint "
                   "condition) regenerates only part of it. steps 0, cfg -1 and sampler 'default' "
                   "follow the loaded model's own settings.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The sampled latents, for VAE Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        samplers = ["default", *sampler_names()]
        return {"required": {
            "model": (MODEL, {"tooltip": "The loaded Stable Audio model."}),
            "conditioning": (CONDITIONING, {"tooltip": "From Timing Condition."}),
            "latent": (LATENT, {"tooltip": "Empty Latent Audio for text-to-audio, or VAE Encode "
                                "output (with an optional noise mask) to start from audio."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                     "tooltip": "Seed of the initial noise; the same seed gives the same noise as "
                                "stable-audio-tools on the CPU."}),
            "steps": ("INT", {"default": MODEL_DEFAULT, "min": MODEL_DEFAULT, "max": 10000,
                      "tooltip": "Sampler steps; 0 = the model's default (bundled model: 50, "
                                 "Stable Audio Open 1.0: 100, Small: 8)."}),
            "cfg": ("FLOAT", {"default": MODEL_DEFAULT_CFG, "min": MODEL_DEFAULT_CFG, "max": 100.0,
                    "step": 0.1, "round": 0.01,
                    "tooltip": "Classifier-free guidance scale; 1 disables guidance. -1 = the "
                               "model's default (bundled model: 5, Stable Audio Open 1.0: 7, Small: 1)."}),
            "sampler": (samplers, {"default": "default", "tooltip":
                        "'default' is the model's recommendation (1.0: dpmpp-3m-sde; Small: "
                        "pingpong). dpmpp-* and euler serve v-objective models; euler, dpmpp and "
                        "pingpong rectified-flow ones."}),
            "schedule": (list(SCHEDULE_NAMES), {"default": "polyexponential",
                         "tooltip": "Noise schedule of v-objective models."}),
            "sigma_min": ("FLOAT", {"default": 0.3, "min": 0.0001, "max": 1000.0, "step": 0.01,
                          "tooltip": "Lowest noise level (v objective)."}),
            "sigma_max": ("FLOAT", {"default": 500.0, "min": 0.001, "max": 10000.0, "step": 0.1,
                          "tooltip": "Highest noise level (v objective; rectified flow clamps to 1)."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                        "tooltip": "How much of the input latent to replace: 1 = all (text-to-audio, "
                                   "inpainting), lower keeps more of the source (audio-to-audio)."}),
            "cfg_rescale": ("FLOAT", {"default": MODEL_DEFAULT_RESCALE, "min": MODEL_DEFAULT_RESCALE,
                            "max": 1.0, "step": 0.01,
                            "tooltip": "Rescale the guided prediction toward the conditional one's "
                                       "std (0 = off); tames high cfg. -1 (any negative value) = "
                                       "the model's default, as stable-audio-tools applies it: "
                                       "0.4 for the paper's U-Net, 0 for the DiTs."}),
        }, "optional": {
            "apg_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                          "Stable Audio 3 only, with cfg above 1: how much of the guidance's part "
                          "parallel to the conditional estimate is dropped (APG); 1 = APG as the "
                          "reference, 0 = plain CFG."}),
        }}

    def sample(self, model, conditioning, latent, seed, steps, cfg, sampler, schedule, sigma_min,
               sigma_max, denoise, cfg_rescale, apg_scale=1.0):
        samples, mask = latent_parts(latent, model)
        settings = resolve_sampling(
            model, steps=steps or None, cfg_scale=None if cfg < 0 else cfg, cfg_rescale=None if cfg_rescale < 0 else cfg_rescale,
            sampler=None if sampler == "default" else sampler, schedule=schedule,
            sigma_min=sigma_min, sigma_max=sigma_max)
        batch_size, _, frames = samples.shape
        progress = hooks.Progress(settings.steps)
        if model.is_sa3:  # the window follows seconds_total; an inpaint condition rides on the conditioning
            if mask is not None:
                raise InputError("Stable Audio 3 inpaints through its conditioning: use Inpaint / Extend "
                                 "Condition (SA3) instead of a latent noise mask")
            latents = sample_sa3_window(
                model, conditioning["positive"], conditioning["negative"], settings, seed=seed,
                seconds_total=conditioning["seconds_total"], batch_size=batch_size, latents=samples,
                denoise=denoise, inpaint=conditioning.get("inpaint"), apg_scale=apg_scale,
                callback=lambda info: progress.update(info["i"] + 1, info["steps"]))
            return (make_latent(latents, like=latent),)
        check_duration(model, frames, conditioning["seconds_start"], conditioning["seconds_total"],
                       remedy="the window is the latent's length (Empty Latent Audio's seconds, or "
                              "the encoded clip's length): lower Timing Condition's seconds_total "
                              "or give a longer latent")
        # Zeros as the source add nothing to the start: text-to-audio is the same call.
        latents, _ = sample_latents(
            model, conditioning["positive"], conditioning["negative"], settings, seed=seed,
            batch_size=batch_size, frames=frames, source=SourceLatents(samples, mask, denoise=denoise),
            callback=lambda info: progress.update(info["i"] + 1, info["steps"]))
        return (make_latent(latents, mask, like=latent),)
