"""Render MIDI to audio with the fluidsynth program and the FluidR3 General MIDI soundfont.

Nothing is installed from here: `check_requirements` names what is missing and how to install it.
fluidsynth runs with fixed settings (one synthesis thread, reverb and chorus on, fixed gain) and
writes 32-bit float WAV, so rendering is deterministic and nothing clips before normalisation.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from .midi import song_to_midi
from .postprocess import fit_length
from .score import Song
from .vocab import INSTRUMENTS

SAMPLE_RATE = 44100
FLUIDSYNTH_GAIN = 0.6
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian / Ubuntu: fluid-soundfont-gm
    "/usr/share/soundfonts/FluidR3_GM.sf2",  # Fedora / Arch
    "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
)
SOUNDFONT_ENV = "SYNTHDATA_SOUNDFONT"
FLUIDSYNTH_SETTINGS = (
    "synth.cpu-cores=1", "synth.reverb.active=1", "synth.chorus.active=1", "synth.polyphony=256",
)


class MissingToolsError(RuntimeError):
    """fluidsynth, the soundfont or mido is not installed; the message says how to install them."""


@dataclass(frozen=True)
class Requirement:
    what: str  # the thing, in words
    install: str  # the command that provides it


FLUIDSYNTH = Requirement("the `fluidsynth` program (Debian package fluidsynth)",
                         "apt-get install fluidsynth fluid-soundfont-gm")
SOUNDFONT = Requirement("the FluidR3_GM soundfont (Debian package fluid-soundfont-gm; or pass --soundfont "
                        f"PATH or set {SOUNDFONT_ENV})", "apt-get install fluidsynth fluid-soundfont-gm")
MIDO = Requirement("the Python package mido", "pip install mido   (or: pip install -e '.[data]')")


def find_soundfont(explicit: str | os.PathLike | None = None) -> Path | None:
    """The soundfont to use: `explicit`, else $SYNTHDATA_SOUNDFONT, else the first standard path found."""
    candidates = [explicit] if explicit else [os.environ.get(SOUNDFONT_ENV)] + list(SOUNDFONT_CANDIDATES)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def missing_requirements(soundfont: str | os.PathLike | None = None) -> list[Requirement]:
    """What music rendering needs and this machine lacks (empty when all is there)."""
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append(FLUIDSYNTH)
    if find_soundfont(soundfont) is None:
        missing.append(SOUNDFONT)
    if importlib.util.find_spec("mido") is None:
        missing.append(MIDO)
    return missing


def missing_message(missing: list[Requirement]) -> str:
    lines = ["The dataset generator cannot render music: missing " + ", ".join(r.what for r in missing) + "."]
    lines.append("It installs nothing itself. Install them with:")
    for command in dict.fromkeys(r.install for r in missing):
        lines.append(f"    {command}")
    lines.append("(--sfx-fraction 1 makes sound effects only, which need none of these.)")
    return "\n".join(lines)


def check_requirements(soundfont: str | os.PathLike | None = None) -> Path:
    """The soundfont path when everything is installed; MissingToolsError naming what is not."""
    missing = missing_requirements(soundfont)
    if missing:
        raise MissingToolsError(missing_message(missing))
    return find_soundfont(soundfont)


def fluidsynth_version() -> str:
    try:
        out = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    first = out.strip().splitlines()[0] if out.strip() else "unknown"
    return first.replace("FluidSynth runtime version", "").strip() or first


def render_midi(midi: bytes, soundfont: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
                gain: float = FLUIDSYNTH_GAIN) -> np.ndarray:
    """Render MIDI bytes with fluidsynth: float32 array [T, 2], including the reverb tail.

    fluidsynth keeps rendering for a while after the last event, so the result is longer than the
    music; the caller cuts it to the clip's duration.
    """
    with tempfile.TemporaryDirectory(prefix="synthdata-") as tmp:
        midi_path, wav_path = Path(tmp) / "clip.mid", Path(tmp) / "clip.wav"
        midi_path.write_bytes(midi)
        command = ["fluidsynth", "-n", "-i", "-q", "-g", str(gain), "-r", str(sample_rate),
                   "-O", "float", "-T", "wav", "-F", str(wav_path)]
        for setting in FLUIDSYNTH_SETTINGS:
            command += ["-o", setting]
        command += [str(soundfont), str(midi_path)]
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0 or not wav_path.is_file():
            raise RuntimeError(f"fluidsynth failed (exit {result.returncode}): {' '.join(command)}\n"
                               f"{result.stderr.strip()[-2000:]}")
        audio, rate = sf.read(str(wav_path), dtype="float32", always_2d=True)
    if rate != sample_rate or audio.shape[1] != 2:
        raise RuntimeError(f"fluidsynth wrote {audio.shape[1]} channels at {rate} Hz, "
                           f"expected 2 at {sample_rate}")
    return audio


def fold_to_mono(audio: np.ndarray, pan: int) -> np.ndarray:
    """Tensor[T, 2] -> Tensor[T, 2]: the stronger of mid and side as one signal, panned (equal power).

    For a part whose samples are opposite-phase stereo pairs the side carries the sound and the mid
    is nearly silent, so the folded part keeps its level in mono as well as in stereo.
    """
    mid, side = 0.5 * (audio[:, 0] + audio[:, 1]), 0.5 * (audio[:, 0] - audio[:, 1])
    energy = lambda x: float(np.sum(np.square(x, dtype=np.float64)))  # noqa: E731
    mono = side if energy(side) > energy(mid) else mid
    angle = (max(0, min(127, pan)) / 127.0) * (np.pi / 2)
    gains = np.sqrt(2.0) * np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)
    return (mono[:, None] * gains[None, :]).astype(np.float32)


def render_song(song: Song, soundfont: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Song -> float32 [T, 2]: one fluidsynth run for all ordinary parts, plus one per opposite-phase
    part (folded to mono, see fold_to_mono). Synthesis is linear, so summing the runs is the mix."""
    folded = [i for i, p in enumerate(song.parts)
              if p.instrument in INSTRUMENTS and INSTRUMENTS[p.instrument].antiphase]
    plain = [p for i, p in enumerate(song.parts) if i not in folded]
    stems = []
    if plain:
        stems.append(render_midi(song_to_midi(replace(song, parts=plain)), soundfont, sample_rate))
    for i in folded:
        part = song.parts[i]
        stem = render_midi(song_to_midi(replace(song, parts=[part])), soundfont, sample_rate)
        stems.append(fold_to_mono(stem, part.pan))
    length = max(s.shape[0] for s in stems)
    mix = np.zeros((length, 2), dtype=np.float32)
    for stem in stems:
        mix += fit_length(stem, length)
    return mix
