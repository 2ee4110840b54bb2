"""Drum grooves on the General MIDI percussion channel, one bar of sixteenth steps per pattern.

A pattern line is 16 characters, one per sixteenth note: 'X' accent, 'x' normal, 'o' soft,
'.' ghost, '-' silent. Jazz is written in straight eighths and swung afterwards with the rest of
the score (compose.swing).
"""

from __future__ import annotations

from .rng import ClipRandom
from .score import Note

KICK, SIDE_STICK, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
CRASH, RIDE, TAMBOURINE, LOW_TOM, MID_TOM, HIGH_TOM = 49, 51, 54, 45, 47, 50
HATS = (CLOSED_HAT, OPEN_HAT, RIDE, TAMBOURINE)
STEP_VELOCITY = {"X": 112, "x": 92, "o": 70, ".": 42}

GROOVES = {
    "rock": (
        {KICK: "X-------X-------", SNARE: "----X-------X---", CLOSED_HAT: "x-o-x-o-x-o-x-o-"},
        {KICK: "X-----x-X-x-----", SNARE: "----X-------X---", CLOSED_HAT: "x-o-x-o-x-o-x-o-"},
        {KICK: "X-x-----X-x-----", SNARE: "----X-------X---", RIDE: "x-o-x-o-x-o-x-o-"},
    ),
    "pop": (
        {KICK: "X-------X-x-----", SNARE: "----X-------X---", CLOSED_HAT: "x-o-x-o-x-o-x-o-"},
        {KICK: "X-----x---X-----", CLAP: "----X-------X---", CLOSED_HAT: "x-o-x-o-x-o-x-o-"},
        {KICK: "X-------X-------", SNARE: "----X-------X--o", CLOSED_HAT: "x-x-x-x-x-x-x-x-"},
    ),
    "electronic": (
        {KICK: "X---X---X---X---", CLAP: "----X-------X---", OPEN_HAT: "--x---x---x---x-"},
        {KICK: "X---X---X---X---", SNARE: "----X-------X---", CLOSED_HAT: "o-x-o-x-o-x-o-x-"},
        {KICK: "X---X---X---X-x-", CLAP: "----X-------X---", CLOSED_HAT: "--x---x---x---x-"},
    ),
    "jazz": (
        {RIDE: "x---x-o-x---x-o-", PEDAL_HAT: "----x-------x---", KICK: "o-------o-------"},
        {RIDE: "x---x-o-x---x-o-", PEDAL_HAT: "----x-------x---", SNARE: "------.-------.-"},
    ),
    "folk": (
        {KICK: "x-------x-------", SIDE_STICK: "----x-------x---", TAMBOURINE: "o-o-o-o-o-o-o-o-"},
        {KICK: "x-----o-x-------", SNARE: "----o-------o---", TAMBOURINE: "o---o---o---o---"},
    ),
    "funk": (
        {KICK: "X-x----xX-x-----", SNARE: "----X--.-.--X--.", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
        {KICK: "X--x--x---X-----", SNARE: "----X-.-----X-.-", CLOSED_HAT: "x-x-x-x-x-x-x-x-"},
    ),
}
FILL = {HIGH_TOM: "--------x-x-----", MID_TOM: "------------x-x-", LOW_TOM: "--------------x-"}


def _thin(line: str, every: int) -> str:
    """Keep only the hits on multiples of `every` sixteenths (sparser hats)."""
    return "".join(c if i % every == 0 else "-" for i, c in enumerate(line))


def _busier(line: str) -> str:
    """Fill the gaps of an eighth-note hat line with soft sixteenths."""
    return "".join(c if c != "-" or i % 2 == 0 else "." for i, c in enumerate(line))


def drum_notes(rng: ClipRandom, groove: str, density: str, bars: int, velocity_offset: int) -> list[Note]:
    """`bars` bars of the named groove, hats thinned (sparse) or doubled (busy), fills when busy."""
    pattern = dict(rng.choice(GROOVES[groove]))
    if density == "sparse":
        pattern = {k: (_thin(v, 4) if k in HATS else v) for k, v in pattern.items()}
    elif density == "busy" and groove in ("rock", "pop", "electronic"):
        pattern = {k: (_busier(v) if k == CLOSED_HAT else v) for k, v in pattern.items()}
    crash_first = groove != "jazz" and density != "sparse" and rng.chance(0.5)
    notes: list[Note] = []
    for bar in range(bars):
        lines = dict(pattern)
        if density == "busy" and bar % 4 == 3 and groove != "jazz":
            for key in (SNARE, CLAP, SIDE_STICK):
                if key in lines:
                    lines[key] = lines[key][:8] + "--------"
            lines.update(FILL)
        if bar == 0 and crash_first:
            notes.append(Note(0.0, 1.0, CRASH, 100))
        for key in sorted(lines):
            for step, mark in enumerate(lines[key]):
                if mark == "-":
                    continue
                velocity = STEP_VELOCITY[mark] + velocity_offset + rng.integer(-6, 6)
                notes.append(Note(bar * 4 + step * 0.25, 0.25, key, max(20, min(127, velocity))))
    return notes
