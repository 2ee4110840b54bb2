"""The score a composition produces: notes in beats, grouped into parts, plus the song's labels."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Note:
    start: float  # beats from the start of the clip
    length: float  # beats
    pitch: int  # MIDI note number (on the drum channel: the GM percussion key)
    velocity: int


@dataclass
class Part:
    """One instrument playing one role (melody, chords, pad, bass or drums) on its own MIDI channel."""

    instrument: str
    role: str
    style: str
    program: int
    channel: int
    pan: int = 64
    volume: int = 100
    notes: list[Note] = field(default_factory=list)


@dataclass
class Song:
    """A composed clip: labels for the caption and the parts that sound."""

    genre: str
    mood: str
    density: str
    bpm: int
    tonic: int | None  # pitch class of the key; None for drums alone
    mode: str | None
    duration: float  # seconds of content
    parts: list[Part]
    reverb: int = 45  # CC91 send on every channel
    chorus: int = 10  # CC93 send

    @property
    def beats(self) -> float:
        """Length of the content in beats."""
        return self.duration * self.bpm / 60.0

    def seconds_to_beats(self, seconds: float) -> float:
        return seconds * self.bpm / 60.0
