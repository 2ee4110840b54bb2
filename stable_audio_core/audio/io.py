"""Audio I/O and shaping: read/write files with soundfile, resample, match channel counts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..atomic_files import atomic_write, describe_failure
from ..errors import AudioFileError, InputError, NonFiniteError
from .postprocess import check_finite
from .tags import TAGGED_FORMATS, with_tags

# format -> (soundfile container, codec); Opus goes in an Ogg container named .opus
WRITE_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
                 "opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}
# the only rates these codecs can store; other audio is resampled to the next one up
CODEC_RATES = {"opus": (8000, 12000, 16000, 24000, 48000),
               "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)}


def read_audio(path: str | Path, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, int]:
    """Read an audio file, or its frames [start, stop) -> (Tensor[C, T] float32 in [-1, 1], rate)."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(str(path)) as handle:
            frames = handle.frames
            start = max(0, min(int(start), frames))
            stop = None if stop is None else max(start, min(int(stop), frames))
            if handle.format in ("MP3", "OGG"):
                # libsndfile's MP3 and Vorbis seeks are not always sample-accurate (Vorbis near
                # the end of a file): decode these from the start instead.
                data = handle.read(-1 if stop is None else stop, dtype="float32", always_2d=True)[start:]
            else:
                handle.seek(start)
                data = handle.read(-1 if stop is None else stop - start, dtype="float32", always_2d=True)
            sample_rate = handle.samplerate
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioFileError(
            f"{path} could not be decoded as audio ({exc}); supported: WAV, FLAC, Ogg Vorbis/Opus, MP3"
        ) from exc
    if frames == 0:
        raise AudioFileError(f"{path} holds no audio samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    try:
        check_finite(audio, f"the audio file {path}", is_input=True)
    except NonFiniteError as exc:   # a broken file, like an undecodable one (datasets skip both)
        raise AudioFileError(str(exc)) from None
    return audio, int(sample_rate)


def audio_info(path: str | Path) -> tuple[int, int]:
    """(number of frames, sample rate) of an audio file, from its header."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioFileError(
            f"{path} could not be decoded as audio ({exc}); supported: WAV, FLAC, Ogg Vorbis/Opus, MP3"
        ) from exc
    if info.frames <= 0:
        raise AudioFileError(f"{path} holds no audio samples")
    return int(info.frames), int(info.samplerate)


def resampled_length(length: int, orig_rate: int, new_rate: int) -> int:
    """Samples that `resample` returns for `length` input samples."""
    g = math.gcd(orig_rate, new_rate)
    return math.ceil((new_rate // g) * length / (orig_rate // g))


def read_audio_window(path: str | Path, start: int, length: int, target_rate: int) -> torch.Tensor:
    """Samples [start, start + length) of the file resampled to `target_rate` -> Tensor[C, <= length]
    (shorter where the file ends), decoding only the source frames the resampling filter needs:
    the result equals slicing `resample(read_audio(path)[0], rate, target_rate)`."""
    frames, rate = audio_info(path)
    if rate == target_rate:
        return read_audio(path, start, start + length)[0]
    g = math.gcd(rate, target_rate)
    down, up = rate // g, target_rate // g
    width = _kernel_width(up, down)
    total = resampled_length(frames, rate, target_rate)
    stop = min(start + length, total)
    if stop <= start:
        return read_audio(path, 0, 1)[0][:, :0]
    # Output sample o is computed from input [o // up * down - width, o // up * down + width + down);
    # a segment starting at a multiple of `down` keeps the filter phases aligned with the full file.
    first = max(0, (start // up - math.ceil(width / down)) * down)
    last = min(frames, (stop - 1) // up * down + width + down)
    segment, _ = read_audio(path, first, last)
    offset = first // down * up
    return resample(segment, rate, target_rate)[:, start - offset : stop - offset]


def writable_formats() -> list[str]:
    """The WRITE_FORMATS this soundfile/libsndfile build can write (MP3 needs libsndfile 1.1,
    Opus 1.0.29 or newer)."""
    import soundfile as sf
    return [fmt for fmt, (container, codec) in WRITE_FORMATS.items()
            if container in sf.available_formats() and codec in sf.available_subtypes(container)]


def stored_rate(fmt: str, sample_rate: int) -> int:
    """The rate a `fmt` file stores `sample_rate` audio at: the rate itself, else the codec's
    nearest rate not below it (Opus: 48 kHz for 44.1 kHz audio), else its highest."""
    rates = CODEC_RATES.get(fmt)
    if rates is None or sample_rate in rates:
        return sample_rate
    return next((rate for rate in rates if rate > sample_rate), rates[-1])


def write_audio(path: str | Path, audio: torch.Tensor, sample_rate: int, fmt: str | None = None,
                subtype: str | None = None, *, tags: dict[str, str] | None = None,
                overwrite: bool = True, reserved: bool = False) -> Path:
    """Write Tensor[C, T] atomically (see atomic_files): no partial file is ever left behind.

    Opus and MP3 are resampled to `stored_rate` where the codec lacks `sample_rate` (Opus always
    for 44.1 kHz audio: to 48 kHz), keeping the duration. `tags` (FLAC, Ogg, Opus, MP3; see
    tags.py) are embedded before the file appears; `overwrite` / `reserved` as in
    `atomic_files.atomic_write`.
    """
    import soundfile as sf
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()

    def write(temp: str) -> None:
        # Checked in here so that a refused write also gives back a reserved name.
        if fmt not in WRITE_FORMATS:
            raise InputError(f"unknown audio format '{fmt}'; choose one of {sorted(WRITE_FORMATS)}")
        if audio.dim() != 2:
            raise InputError(f"write_audio expects Tensor[C, T], got shape {tuple(audio.shape)}")
        if tags and fmt not in TAGGED_FORMATS:
            raise InputError(f"tags are embedded in {', '.join(TAGGED_FORMATS)} files, not {fmt}; "
                             "write a sidecar instead")
        if not torch.isfinite(audio).all():
            raise NonFiniteError(f"refusing to write {path}: the audio holds NaN/Inf samples")
        rate = stored_rate(fmt, sample_rate)
        samples = resample(audio.detach().float().cpu(), sample_rate, rate)
        container, codec = WRITE_FORMATS[fmt]
        sf.write(temp, samples.clamp(-1, 1).numpy().T, rate, format=container,
                 subtype=subtype or codec)
        if tags:
            Path(temp).write_bytes(with_tags(Path(temp).read_bytes(), tags, str(path)))

    try:
        return atomic_write(path, write, overwrite=overwrite, reserved=reserved)
    except RuntimeError as exc:  # soundfile's own errors (LibsndfileError)
        raise AudioFileError(f"{describe_failure(path, exc)} (as {fmt})") from exc


def _kernel_width(up: int, down: int, zeros: int = 24, rolloff: float = 0.945) -> int:
    """Half-width, in input samples, of the resampling filter for up/down."""
    return math.ceil(zeros * down / (min(up, down) * rolloff))


def _sinc_kernels(up: int, down: int, zeros: int = 24, rolloff: float = 0.945) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc kernels, one per output phase, for resampling by up/down.

    Output sample k*up + p sits at input time k*down + p*down/up; its kernel samples a low-pass
    sinc (cutoff `rolloff` x the lower Nyquist) at the input offsets around that time.
    """
    cutoff = min(up, down) * rolloff
    width = _kernel_width(up, down, zeros, rolloff)
    idx = torch.arange(-width, width + down, dtype=torch.float64)[None] / down
    phases = -torch.arange(up, dtype=torch.float64)[:, None] / up
    t = (phases + idx) * cutoff
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    kernels = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t)) * window
    kernels = kernels * cutoff / down
    return kernels.float(), width


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of Tensor[..., T] (windowed-sinc polyphase filter)."""
    if orig_rate == new_rate:
        return audio
    if orig_rate <= 0 or new_rate <= 0:
        raise InputError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    g = math.gcd(orig_rate, new_rate)
    down, up = orig_rate // g, new_rate // g
    kernels, width = _sinc_kernels(up, down)
    shape = audio.shape
    x = audio.reshape(-1, 1, shape[-1]).float()
    x = torch.nn.functional.pad(x, (width, width + down))
    y = torch.nn.functional.conv1d(x, kernels.to(x.device)[:, None, :], stride=down)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    out_len = math.ceil(up * shape[-1] / down)
    return y[..., :out_len].reshape(*shape[:-1], out_len).to(audio.dtype)


# 5.1 (WAV order L, R, C, LFE, Ls, Rs) to stereo: ITU-R BS.775 downmix without the LFE, scaled
# so that full-scale inputs cannot clip.
_SURROUND_51_TO_STEREO = torch.tensor([[1.0, 0.0, 0.7071, 0.0, 0.7071, 0.0],
                                       [0.0, 1.0, 0.7071, 0.0, 0.0, 0.7071]]) / 2.4142


def set_channels(audio: torch.Tensor, channels: int) -> torch.Tensor:
    """Tensor[..., C, T] -> [..., channels, T]: mono is duplicated, surplus channels mixed down
    (5.1 to stereo by the ITU downmix; otherwise input channel i goes to output i % channels,
    averaged), so no channel is lost."""
    have = audio.shape[-2]
    if have == channels:
        return audio
    if have == 1:
        return audio.expand(*audio.shape[:-2], channels, audio.shape[-1]).contiguous()
    if channels == 1:
        return audio.mean(dim=-2, keepdim=True)
    if have > channels:
        if have == 6 and channels == 2:
            matrix = _SURROUND_51_TO_STEREO
        else:
            matrix = torch.zeros(channels, have)
            matrix[torch.arange(have) % channels, torch.arange(have)] = 1.0
            matrix = matrix / matrix.sum(dim=1, keepdim=True)
        return torch.einsum("oc,...ct->...ot", matrix.to(audio), audio)
    raise InputError(f"cannot map {have} audio channels onto {channels}")


def fit_length(audio: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to `length` samples."""
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))


def prepare_audio(audio: torch.Tensor, sample_rate: int, target_rate: int, channels: int,
                  length: int | None = None) -> torch.Tensor:
    """Any Tensor[T], [C, T] or [B, C, T] -> Tensor[B, channels, length] at `target_rate`."""
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() == 2:
        audio = audio[None]
    if audio.dim() != 3:
        raise InputError(f"audio must be [T], [C, T] or [B, C, T], got shape {tuple(audio.shape)}")
    audio = set_channels(resample(audio.float(), sample_rate, target_rate), channels)
    return audio if length is None else fit_length(audio, length)
