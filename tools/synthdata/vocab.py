"""The caption vocabulary: instruments (General MIDI programs), genres, moods, keys, densities.

Small on purpose: every word here names something clearly audible, so a small text encoder can
learn it from about a thousand clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODE_STEPS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
DENSITIES = ("sparse", "moderate", "busy")
ROLES = ("melody", "chords", "pad", "bass")

# Progressions as 0-based scale degrees, one chord per slot (pop, classical and modal staples).
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 0, 4), (0, 2, 3, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)),
}
JAZZ_PROGRESSIONS = {
    "major": ((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4)),
    "minor": ((1, 4, 0, 0), (0, 3, 1, 4), (0, 5, 1, 4)),
}


@dataclass(frozen=True)
class Instrument:
    """A General MIDI program and the registers (MIDI note ranges) it plays each role in."""

    name: str
    program: int
    ranges: dict = field(hash=False)  # role -> (lowest note, highest note)
    # FluidR3's samples for some programs (all its synth leads) are stereo pairs in opposite phase,
    # which cancel in a mono downmix; such parts are rendered on their own and folded to mono.
    antiphase: bool = False
    # Notes that die away within a beat (marimba): long notes are played as rolls, as players do,
    # so the sound lasts as long as the note and the clip does not fall silent before its end.
    rolled: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.ranges)


def _instrument(name: str, program: int, antiphase: bool = False, rolled: bool = False,
                **ranges: tuple[int, int]) -> Instrument:
    return Instrument(name, program, dict(ranges), antiphase, rolled)


INSTRUMENTS = {i.name: i for i in (
    _instrument("piano", 0, melody=(60, 84), chords=(48, 72)),
    _instrument("electric piano", 4, melody=(60, 81), chords=(50, 72)),
    _instrument("marimba", 12, rolled=True, melody=(60, 84), chords=(55, 79)),
    _instrument("organ", 16, melody=(60, 84), chords=(50, 74), pad=(50, 74)),
    _instrument("acoustic guitar", 25, melody=(55, 79), chords=(45, 67)),
    _instrument("electric guitar", 26, melody=(55, 79), chords=(50, 70)),
    _instrument("distorted guitar", 30, melody=(52, 76), chords=(40, 60)),
    _instrument("upright bass", 32, bass=(28, 50)),
    _instrument("electric bass", 33, bass=(28, 52)),
    _instrument("synth bass", 39, bass=(28, 52)),
    _instrument("strings", 48, melody=(60, 84), chords=(48, 72), pad=(48, 72)),
    _instrument("choir", 52, pad=(50, 72)),
    _instrument("trumpet", 56, melody=(58, 79)),
    _instrument("saxophone", 65, melody=(56, 77)),
    _instrument("flute", 73, melody=(67, 91)),
    _instrument("synth lead", 81, antiphase=True, melody=(60, 84)),
    _instrument("synth pad", 89, pad=(48, 72), chords=(48, 72)),
)}
DRUMS = "drums"


@dataclass(frozen=True)
class Mood:
    """How a mood steers composition: mode, tempo, loudness, density and wording."""

    name: str
    major_probability: float
    tempo_position: tuple[float, float]  # where in the genre's BPM range (0 = slowest, 1 = fastest)
    velocity: int
    density_weights: tuple[float, float, float]  # sparse, moderate, busy
    adjectives: tuple[str, ...]


MOODS = {m.name: m for m in (
    Mood("calm", 0.75, (0.0, 0.4), 62, (0.55, 0.4, 0.05), ("gentle", "soft", "warm")),
    Mood("happy", 1.0, (0.4, 0.9), 84, (0.15, 0.5, 0.35), ("bright", "bouncy", "cheerful")),
    Mood("sad", 0.0, (0.0, 0.35), 60, (0.5, 0.45, 0.05), ("soft", "slow", "mournful")),
    Mood("energetic", 0.5, (0.6, 1.0), 100, (0.0, 0.35, 0.65), ("punchy", "driving", "lively")),
    Mood("dark", 0.0, (0.1, 0.6), 80, (0.35, 0.45, 0.2), ("deep", "brooding", "heavy")),
    Mood("dreamy", 0.5, (0.0, 0.45), 58, (0.6, 0.35, 0.05), ("airy", "hazy", "shimmering")),
    Mood("tense", 0.0, (0.5, 1.0), 92, (0.1, 0.45, 0.45), ("nervous", "urgent", "restless")),
)}


@dataclass(frozen=True)
class Genre:
    """A style: tempo range, instrument palette per role, drum groove and playing styles."""

    name: str
    noun: str  # how a caption names a piece of it
    bpm_range: tuple[int, int]
    moods: tuple[str, ...]
    melody: tuple[str, ...]
    chords: tuple[str, ...]
    pad: tuple[str, ...]
    bass: tuple[str, ...]
    drums_probability: float
    drum_kit: int  # program on the GM drum channel (FluidR3 kits: 0 standard, 16 power, ...)
    chord_styles: tuple[str, ...]
    bass_styles: dict = field(hash=False)  # density -> bass style
    swing: bool = False
    sevenths: bool = False
    reverb: int = 45  # CC91 send


GENRES = {g.name: g for g in (
    Genre("classical", "classical piece", (60, 120), ("calm", "sad", "happy", "dark", "dreamy"),
          melody=("flute", "strings", "piano"), chords=("piano", "strings"), pad=("strings", "choir"),
          bass=(), drums_probability=0.0, drum_kit=48, chord_styles=("arpeggio", "block"),
          bass_styles={}, reverb=75),
    Genre("jazz", "jazz tune", (85, 160), ("calm", "happy", "sad", "dreamy", "energetic"),
          melody=("saxophone", "trumpet", "piano", "electric guitar"),
          chords=("piano", "electric piano", "electric guitar"), pad=(), bass=("upright bass",),
          drums_probability=0.7, drum_kit=32, chord_styles=("comp", "block"),
          bass_styles={"sparse": "root_fifth", "moderate": "walking", "busy": "walking"},
          swing=True, sevenths=True, reverb=45),
    Genre("rock", "rock track", (100, 160), ("energetic", "dark", "happy", "tense", "sad"),
          melody=("distorted guitar", "organ", "electric guitar"),
          chords=("distorted guitar", "organ", "piano", "electric guitar"), pad=("organ",),
          bass=("electric bass",), drums_probability=0.9, drum_kit=16,
          chord_styles=("power", "comp", "strum"),
          bass_styles={"sparse": "root", "moderate": "pulse", "busy": "pulse"}, reverb=35),
    Genre("pop", "pop track", (85, 128), ("happy", "calm", "sad", "energetic", "dreamy"),
          melody=("piano", "synth lead", "flute", "electric piano", "marimba"),
          chords=("piano", "acoustic guitar", "electric piano"), pad=("strings", "synth pad"),
          bass=("electric bass", "synth bass"), drums_probability=0.7, drum_kit=0,
          chord_styles=("block", "strum", "comp", "arpeggio"),
          bass_styles={"sparse": "root", "moderate": "root_fifth", "busy": "pulse"}, reverb=50),
    Genre("electronic", "electronic track", (115, 140), ("energetic", "dark", "dreamy", "happy", "tense"),
          melody=("synth lead", "electric piano", "marimba"),
          chords=("synth pad", "electric piano", "marimba"), pad=("synth pad",), bass=("synth bass",),
          drums_probability=0.85, drum_kit=25, chord_styles=("arpeggio", "block", "comp"),
          bass_styles={"sparse": "root", "moderate": "offbeat", "busy": "pulse"}, reverb=50),
    Genre("ambient", "ambient piece", (60, 90), ("calm", "dreamy", "dark", "sad"),
          melody=("flute", "piano", "marimba", "electric piano"),
          chords=("piano", "electric piano", "marimba"), pad=("synth pad", "strings", "choir"),
          bass=("synth bass",), drums_probability=0.0, drum_kit=0, chord_styles=("block", "arpeggio"),
          bass_styles={"sparse": "root", "moderate": "root", "busy": "root"}, reverb=100),
    Genre("folk", "folk tune", (80, 130), ("calm", "happy", "sad"),
          melody=("flute", "acoustic guitar", "marimba"), chords=("acoustic guitar", "piano"),
          pad=("strings",), bass=("upright bass",), drums_probability=0.3, drum_kit=40,
          chord_styles=("strum", "arpeggio"),
          bass_styles={"sparse": "root", "moderate": "root_fifth", "busy": "root_fifth"}, reverb=45),
    Genre("funk", "funk groove", (92, 118), ("energetic", "happy", "tense"),
          melody=("trumpet", "saxophone", "synth lead"),
          chords=("electric guitar", "electric piano", "organ"), pad=(),
          bass=("electric bass", "synth bass"), drums_probability=0.9, drum_kit=0,
          chord_styles=("comp",),
          bass_styles={"sparse": "root_fifth", "moderate": "syncopated", "busy": "syncopated"},
          reverb=30),
)}


def key_name(tonic: int, mode: str) -> str:
    """`key_name(0, "major") == "C major"`."""
    return f"{KEY_NAMES[tonic % 12]} {mode}"
