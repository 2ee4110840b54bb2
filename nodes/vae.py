"""The VAE nodes: audio to latents and back, chunked so memory stays bounded."""

from __future__ import annotations

import math

import torch

from ..stable_audio_core.audio import fit_length, prepare_audio
from ..stable_audio_core.postprocess import check_finite
from .datatypes import AUDIO, CATEGORY, LATENT, MODEL, audio_parts, latent_parts, make_audio, make_latent


def _autoencoder(model):
    if model.autoencoder is None:
        from ..stable_audio_core.errors import InputError
        raise InputError("this model has no VAE (pretransform) to encode or decode with")
    return model.autoencoder


class VAEEncode:
    DESCRIPTION = ("Encodes audio into the model's latents (posterior mean). The audio is "
                   "resampled to the model's rate, its channels matched, and padded to whole "
                   "latent frames.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("ComfyUI LATENT of the audio, for the sampler or the latent tools.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model whose VAE encodes."}),
            "audio": (AUDIO, {"tooltip": "Any AUDIO (ComfyUI's Load Audio works too)."}),
        }}

    @torch.inference_mode()
    def encode(self, model, audio):
        vae = _autoencoder(model)
        waveform, rate = audio_parts(audio)
        waveform = prepare_audio(waveform, rate, model.sample_rate, model.audio_channels)
        ratio = model.downsampling_ratio
        waveform = fit_length(waveform, math.ceil(waveform.shape[-1] / ratio) * ratio)
        parameter = next(vae.parameters())
        latents = vae.encode(waveform.to(parameter.device, parameter.dtype))
        return (make_latent(check_finite(latents.float(), "VAE encoder")),)


class VAEDecode:
    DESCRIPTION = ("Decodes latents to audio with the model's VAE, window by window: memory "
                   "depends on chunk_size, not on the length.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (AUDIO,)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("ComfyUI AUDIO at the model's sample rate (before trimming).",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model whose VAE decodes."}),
            "latent": (LATENT, {"tooltip": "Latents from the sampler (or any audio LATENT)."}),
            "chunk_size": ("INT", {"default": 128, "min": 0, "max": 65536, "tooltip":
                           "Latent frames decoded at a time; 0 decodes everything at once."}),
            "overlap": ("INT", {"default": 32, "min": 0, "max": 65535, "tooltip":
                        "Latent frames shared by neighbouring chunks (half discarded at each "
                        "edge) so chunk seams are inaudible; must be below chunk_size."}),
        }}

    @torch.inference_mode()
    def decode(self, model, latent, chunk_size, overlap):
        vae = _autoencoder(model)
        samples, _ = latent_parts(latent, model)
        parameter = next(vae.parameters())
        audio = vae.decode(samples.to(parameter.device, parameter.dtype), chunked=chunk_size > 0,
                           chunk_size=max(chunk_size, 1), overlap=overlap if chunk_size > 0 else 0)
        return (make_audio(check_finite(audio.float(), "VAE decoder"), model.sample_rate),)
