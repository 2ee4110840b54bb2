"""The VAE nodes: audio to latents and back, chunked so memory stays bounded."""

from __future__ import annotations

import torch

from ..stable_audio_core.autoencoding import decode_latents, encode_audio
from .datatypes import (AUDIO, CATEGORY, LATENT, MODEL, audio_length, audio_parts, latent_parts, make_audio,
                        make_latent)


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
        waveform, rate = audio_parts(audio, "VAE Encode's audio input")
        length = round(waveform.shape[-1] * model.sample_rate / rate)  # at the model's rate
        return (make_latent(encode_audio(model, waveform, rate), audio_samples=length),)


class VAEDecode:
    DESCRIPTION = ("Decodes latents to audio with the model's VAE, window by window: memory "
                   "depends on chunk_size, not on the length. Returns exactly the length the "
                   "latent was made for (Empty Latent's seconds, the encoded clip's length).")
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
        samples, _ = latent_parts(latent, model)
        chunked = chunk_size > 0
        audio = decode_latents(model, samples, chunked=chunked, chunk_size=max(chunk_size, 1),
                               overlap=overlap if chunked else 0)
        # Latents come in whole frames; the audio asked for may end inside the last one.
        return (make_audio(audio[..., :audio_length(latent, model)], model.sample_rate),)
