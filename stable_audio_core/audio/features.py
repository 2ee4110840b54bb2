"""CLAP's audio front end: 48 kHz mono waveforms -> log-mel features for the HTSAT audio tower.

Reproduces transformers' `ClapFeatureExtractor` (itself laion-clap's `get_audio_features`) with
torch only. A clip is brought to `max_length` samples (10 s):
- shorter clips are padded: "repeatpad" tiles whole copies then zero-pads, "repeat" tiles and
  cuts, "pad" zero-pads;
- longer clips with truncation "rand_trunc" are cut at a random offset (one channel);
- with truncation "fusion" the whole clip's mel is shrunk to 10 s (bilinear) and stacked with
  three 10 s crops drawn from its front, middle and back thirds (four channels, is_longer=True);
  shorter clips repeat their one mel four times. If no clip of a batch is longer, one chosen at
  random is marked is_longer all the same, as the reference does.
The spectrogram: Hann-windowed STFT (n_fft 1024, hop 480, centred with reflection), power,
mel filterbank (HTK scale, unnormalised for "fusion"; Slaney scale and area-normalised for
"rand_trunc", librosa's default), floor 1e-10, then 10 log10 (dB). Computed in float64 with the
FFT rounded to complex64, as the reference stores it; returned in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError
from ..models.hf_folder import check_keys, check_positive_int, read_json

PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json"
TRUNCATIONS = ("fusion", "rand_trunc")
PADDINGS = ("repeatpad", "repeat", "pad")
MEL_SCALES = ("htk", "slaney")
POWER_FLOOR = 1e-10  # both the mel floor and the dB clip: -100 dB
FUSION_CROPS = 3

# Written by transformers into preprocessor_config.json; derived from the settings or unused.
_IGNORED_KEYS = {
    "feature_extractor_type", "processor_class", "padding_side", "padding_value",
    "return_attention_mask", "nb_frequency_bins", "nb_max_samples", "nb_max_frames",
    "chunk_length_s", "n_fft",
}


# --- mel filterbank --------------------------------------------------------------------------

def hertz_to_mel(freq: Tensor, mel_scale: str) -> Tensor:
    """HTK: 2595 log10(1 + f / 700). Slaney: linear (3 / 200 per Hz) below 1 kHz, logarithmic above."""
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    linear = 3.0 * freq / 200.0
    logarithmic = 15.0 + torch.log(freq / 1000.0) * (27.0 / math.log(6.4))
    return torch.where(freq >= 1000.0, logarithmic, linear)


def mel_to_hertz(mels: Tensor, mel_scale: str) -> Tensor:
    if mel_scale == "htk":
        return 700.0 * (torch.pow(10.0, mels / 2595.0) - 1.0)
    linear = 200.0 * mels / 3.0
    logarithmic = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mels - 15.0))
    return torch.where(mels >= 15.0, logarithmic, linear)


def mel_filterbank(num_frequency_bins: int, num_mel_filters: int, min_frequency: float,
                   max_frequency: float, sampling_rate: int, mel_scale: str = "htk",
                   slaney_norm: bool = False) -> Tensor:
    """Triangular filters, Tensor[num_frequency_bins, num_mel_filters] in float64.

    Filter m rises from edge m to peak m + 1 and falls to edge m + 2 (linear in Hz), the
    num_mel_filters + 2 edges evenly spaced in mels. `slaney_norm` divides each filter by half
    its width in Hz, so every filter has the same area.
    """
    if mel_scale not in MEL_SCALES:
        raise ConfigError(f"mel_scale must be one of {list(MEL_SCALES)}, got {mel_scale!r}")
    if not 0 <= min_frequency < max_frequency <= sampling_rate / 2:
        raise ConfigError(
            f"mel filterbank needs 0 <= frequency_min < frequency_max <= sampling_rate / 2, got "
            f"{min_frequency}, {max_frequency}, {sampling_rate}"
        )
    edge_mels = torch.linspace(
        float(hertz_to_mel(torch.tensor(float(min_frequency), dtype=torch.float64), mel_scale)),
        float(hertz_to_mel(torch.tensor(float(max_frequency), dtype=torch.float64), mel_scale)),
        num_mel_filters + 2, dtype=torch.float64,
    )
    edges = mel_to_hertz(edge_mels, mel_scale)
    bin_freqs = torch.linspace(0, sampling_rate // 2, num_frequency_bins, dtype=torch.float64)
    offsets = edges[None, :] - bin_freqs[:, None]  # [bins, filters + 2]
    widths = edges[1:] - edges[:-1]
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if slaney_norm:
        filters = filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return filters


# --- spectrogram -----------------------------------------------------------------------------

def log_mel_spectrogram(waveform: Tensor, filters: Tensor, fft_window_size: int, hop_length: int,
                        top_db: float | None = None) -> Tensor:
    """Tensor[T] -> Tensor[1 + T // hop_length, num_mel_filters] in float32 (dB)."""
    signal = waveform.to(torch.float64)
    window = torch.hann_window(fft_window_size, periodic=True, dtype=torch.float64, device=signal.device)
    spectrum = torch.stft(signal, fft_window_size, hop_length, window=window, center=True,
                          pad_mode="reflect", return_complex=True)
    spectrum = spectrum.to(torch.complex64).to(torch.complex128)  # the reference keeps complex64
    power = spectrum.abs() ** 2  # [bins, frames]
    mel = torch.clamp(filters.to(signal.device).t() @ power, min=POWER_FLOOR)
    decibels = 10.0 * torch.log10(mel)
    if top_db is not None:
        decibels = torch.clamp(decibels, min=float(decibels.max()) - top_db)
    return decibels.t().to(torch.float32)


# --- fitting a clip to max_length --------------------------------------------------------------

def pad_to_length(waveform: Tensor, length: int, padding: str) -> Tensor:
    """A clip no longer than `length` -> exactly `length` samples (see the module docstring)."""
    count = waveform.shape[0]
    if count == 0:
        raise InputError("cannot compute CLAP features of an empty waveform")
    if count < length:
        copies = length // count
        if padding == "repeat":
            waveform = waveform.repeat(copies + 1)[:length]
        elif padding == "repeatpad":
            waveform = waveform.repeat(copies)
    return F.pad(waveform, (0, length - waveform.shape[0]))


def fusion_crop_ranges(total_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[(first, count)] of allowed crop starts for the front, middle and back crops: the starts
    0 .. total - chunk split into three near-equal runs (longer runs first); an empty run
    becomes the single start 0."""
    starts = total_frames - chunk_frames + 1
    base, extra = divmod(starts, FUSION_CROPS)
    ranges, first = [], 0
    for part in range(FUSION_CROPS):
        count = base + (1 if part < extra else 0)
        ranges.append((first, count) if count else (0, 1))
        first += count
    return ranges


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator).item())


def fusion_stack(mel: Tensor, chunk_frames: int, crop_starts: tuple[int, int, int]) -> Tensor:
    """Tensor[total, M] -> Tensor[4, chunk, M]: the whole mel shrunk (bilinear) to chunk_frames,
    then the crops starting at `crop_starts`."""
    shrunk = F.interpolate(mel[None, None], size=(chunk_frames, mel.shape[1]), mode="bilinear",
                           align_corners=False)[0, 0]
    crops = [mel[start:start + chunk_frames] for start in crop_starts]
    return torch.stack([shrunk, *crops])


@dataclass
class ClapFeatures:
    """input_features: Tensor[B, C, frames, mel bins] float32 (C = 4 for "fusion", else 1);
    is_longer: BoolTensor[B]."""

    input_features: Tensor
    is_longer: Tensor


class ClapFeatureExtractor:
    """Waveforms -> ClapFeatures. Settings and defaults are those of transformers' extractor;
    `from_folder` reads a Hugging Face CLAP folder's preprocessor_config.json."""

    def __init__(self, feature_size: int = 64, sampling_rate: int = 48_000, hop_length: int = 480,
                 max_length_s: float = 10, fft_window_size: int = 1024, frequency_min: float = 0.0,
                 frequency_max: float = 14_000.0, top_db: float | None = None,
                 truncation: str = "fusion", padding: str = "repeatpad"):
        for name, value in (("feature_size", feature_size), ("sampling_rate", sampling_rate),
                            ("hop_length", hop_length), ("fft_window_size", fft_window_size)):
            check_positive_int(value, name, "CLAP feature extractor")
        self._check_modes(truncation, padding)
        if top_db is not None and not top_db > 0:
            raise ConfigError(f"CLAP feature extractor top_db must be > 0 or null, got {top_db!r}")
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.fft_window_size = fft_window_size
        self.max_length = int(max_length_s * sampling_rate)
        self.top_db = top_db
        self.truncation = truncation
        self.padding = padding
        bins = fft_window_size // 2 + 1
        # "fusion" was trained on torchaudio's (HTK) filters, "rand_trunc" on librosa's (Slaney).
        self.filters = {
            "fusion": mel_filterbank(bins, feature_size, frequency_min, frequency_max, sampling_rate, "htk"),
            "rand_trunc": mel_filterbank(bins, feature_size, frequency_min, frequency_max, sampling_rate,
                                         "slaney", slaney_norm=True),
        }

    @staticmethod
    def _check_modes(truncation: str, padding: str) -> None:
        if truncation not in TRUNCATIONS:
            raise InputError(f"truncation must be one of {list(TRUNCATIONS)}, got {truncation!r}")
        if padding not in PADDINGS:
            raise InputError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ClapFeatureExtractor":
        """A preprocessor_config.json dict -> extractor; unknown keys raise ConfigError."""
        own = {"feature_size", "sampling_rate", "hop_length", "max_length_s", "fft_window_size",
               "frequency_min", "frequency_max", "top_db", "truncation", "padding"}
        values = check_keys(raw, own, "CLAP preprocessor config", _IGNORED_KEYS,
                            kind=("feature_extractor_type", "ClapFeatureExtractor"))
        try:
            return cls(**values)
        except InputError as exc:
            raise ConfigError(f"CLAP preprocessor config: {exc}") from exc

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ClapFeatureExtractor":
        path = Path(folder) / PREPROCESSOR_CONFIG_FILE
        return cls.from_dict(read_json(path, "CLAP preprocessor config",
                                       f"a Hugging Face CLAP folder has {PREPROCESSOR_CONFIG_FILE}"))

    def log_mel(self, waveform: Tensor, truncation: str) -> Tensor:
        """Tensor[T] -> Tensor[1 + T // hop, feature_size] with the filters of `truncation`."""
        return log_mel_spectrogram(waveform, self.filters[truncation], self.fft_window_size,
                                   self.hop_length, self.top_db)

    def clip_features(self, waveform: Tensor, truncation: str | None = None, padding: str | None = None,
                      max_length: int | None = None, generator: torch.Generator | None = None,
                      crops: tuple[int, ...] | None = None) -> tuple[Tensor, bool]:
        """One mono clip Tensor[T] -> (Tensor[C, frames, feature_size], is_longer).

        `crops` fixes the random choices: the sample offset of a "rand_trunc" cut, or the three
        frame starts of the "fusion" crops; left None they are drawn with `generator`.
        """
        truncation = truncation or self.truncation
        padding = padding or self.padding
        self._check_modes(truncation, padding)
        length = max_length or self.max_length
        waveform = torch.as_tensor(waveform)
        if waveform.dim() != 1:
            raise InputError(f"a clip must be a mono waveform Tensor[T], got shape {tuple(waveform.shape)}")
        waveform = waveform.to(torch.float64)
        if waveform.shape[0] <= length:
            mel = self.log_mel(pad_to_length(waveform, length, padding), truncation)
            return (mel.expand(4, -1, -1).clone() if truncation == "fusion" else mel[None]), False
        if truncation == "rand_trunc":
            offset = crops[0] if crops else _randint(waveform.shape[0] - length + 1, generator)
            return self.log_mel(waveform[offset:offset + length], truncation)[None], True
        mel = self.log_mel(waveform, truncation)
        chunk_frames = length // self.hop_length + 1
        if mel.shape[0] == chunk_frames:  # longer by less than a hop: the whole clip, as is
            return mel.expand(4, -1, -1).clone(), False
        if crops is None:
            crops = tuple(first + _randint(count, generator)
                          for first, count in fusion_crop_ranges(mel.shape[0], chunk_frames))
        return fusion_stack(mel, chunk_frames, crops), True

    def __call__(self, audio: Tensor | list[Tensor], sampling_rate: int | None = None,
                 truncation: str | None = None, padding: str | None = None,
                 max_length: int | None = None, generator: torch.Generator | None = None) -> ClapFeatures:
        """Mono clips (Tensor[T], Tensor[B, T] or a list of Tensor[T] of any lengths) at
        `sampling_rate` (must equal the extractor's, 48 kHz) -> ClapFeatures."""
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise InputError(
                f"CLAP features need audio at {self.sampling_rate} Hz, got {sampling_rate} Hz; resample "
                "it first (stable_audio_core.audio.io.resample)"
            )
        if isinstance(audio, (list, tuple)):
            clips = list(audio)
        else:
            audio = torch.as_tensor(audio)
            clips = [audio] if audio.dim() == 1 else list(audio)
        if not clips:
            raise InputError("no audio clips given")
        results = [self.clip_features(clip, truncation, padding, max_length, generator) for clip in clips]
        features = torch.stack([mel for mel, _ in results])
        is_longer = torch.tensor([longer for _, longer in results], dtype=torch.bool)
        if (truncation or self.truncation) == "fusion" and not is_longer.any():
            is_longer[_randint(len(clips), generator)] = True
        return ClapFeatures(features, is_longer)
