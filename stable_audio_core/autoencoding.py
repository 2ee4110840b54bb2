"""Audio <-> latents through an autoencoder: the one place that fits audio to the autoencoder
(sample rate, channels, whole latent frames), casts to the dtype it computes in, and checks
that what comes out is finite. Generation, the VAE nodes and pre-encoding all go through here."""

from __future__ import annotations

import math

import torch
from torch import nn

from .acceleration import activation_dtype
from .audio.io import fit_length, prepare_audio
from .errors import InputError
from .models.stable_audio import StableAudioModel
from .audio.postprocess import check_finite


def _autoencoder_and_format(source: StableAudioModel | nn.Module) -> tuple[nn.Module, int, int]:
    """(autoencoder, sample rate, audio channels) of a StableAudioModel or of an autoencoder."""
    if not isinstance(source, StableAudioModel):
        return source, int(source.sample_rate), int(source.in_channels)
    if source.autoencoder is None:
        raise InputError("this model has no VAE (pretransform) to encode or decode with")
    return source.autoencoder, source.sample_rate, source.audio_channels


def encode_audio(source: StableAudioModel | nn.Module, waveform: torch.Tensor, sample_rate: int, *,
                 length: int | None = None, sample: bool = False,
                 generator: torch.Generator | None = None, chunked: bool | None = None) -> torch.Tensor:
    """Audio Tensor[T], [C, T] or [B, C, T] at `sample_rate` -> latents Tensor[B, D, L].

    `source` is a StableAudioModel (its VAE) or an autoencoder. The audio is resampled and its
    channels matched to the autoencoder's, then cropped or zero-padded to `length` samples
    (default: up to whole latent frames). Returns the posterior mean, or one draw from it when
    `sample` (noise from `generator`), in the autoencoder's activation dtype; `chunked` as in
    AudioAutoencoder.encode.
    """
    autoencoder, rate, channels = _autoencoder_and_format(source)
    audio = prepare_audio(waveform, sample_rate, rate, channels)
    if length is None:
        ratio = int(autoencoder.downsampling_ratio)
        length = math.ceil(audio.shape[-1] / ratio) * ratio
    audio = fit_length(audio, length)
    device = next(autoencoder.parameters()).device
    audio = audio.to(device=device, dtype=activation_dtype(autoencoder))
    if sample:
        latents = autoencoder.encode(audio, sample=sample, generator=generator, chunked=chunked)
    else:  # SAME (Stable Audio 3) has no posterior to sample: its encode takes no such arguments
        latents = autoencoder.encode(audio, chunked=chunked)
    return check_finite(latents, "VAE encoder")


def decode_latents(source: StableAudioModel | nn.Module, latents: torch.Tensor, *,
                   chunked: bool | None = None, chunk_size: int | None = None,
                   overlap: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents Tensor[B, D, L] -> audio Tensor[B, C, L * ratio], float32, on the autoencoder's
    device. `chunked`, `chunk_size` (latent frames; None: the autoencoder's default) and
    `overlap` as in AudioAutoencoder.decode; `generator` draws a SAME decoder's noise."""
    autoencoder, _, _ = _autoencoder_and_format(source)
    device = next(autoencoder.parameters()).device
    options = {"chunked": chunked, "overlap": overlap}
    if chunk_size is not None:
        options["chunk_size"] = chunk_size
    if generator is not None:
        options["generator"] = generator
    audio = autoencoder.decode(latents.to(device=device, dtype=activation_dtype(autoencoder)), **options)
    return check_finite(audio.float(), "VAE decoder")
