"""Compose a short piece from a seed: genre, mood, key, tempo, density, then the parts.

`compose_song(seed, duration, solo=False)` is a pure function of its arguments. Harmony is a looping
four-chord progression of diatonic triads (sevenths for jazz); the melody is a stepwise walk on
the scale that lands on chord tones on strong beats and repeats a two-bar rhythm; the chords are
played as block chords, comping, arpeggios, strums or power chords; the bass follows the roots in a
style per genre and density; drums come from drums.py. Every part starts on beat 0 and the score is
cut exactly at `duration`, so the audible content fills the clip to its end. A solo piece
(`solo=True`) is one melody and nothing else, its instrument drawn evenly from every instrument
that can carry a melody whatever the genre, so a model hears each timbre alone and in every style.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .drums import drum_notes
from .rng import ClipRandom
from .score import Note, Part, Song
from .vocab import DRUMS, GENRES, INSTRUMENTS, JAZZ_PROGRESSIONS, MODE_STEPS, MOODS, PROGRESSIONS, Genre

DRUMS_ONLY_PROBABILITY = 0.08
DRUM_CHANNEL = 9
SOLO_INSTRUMENTS = tuple(name for name, instrument in INSTRUMENTS.items() if "melody" in instrument.ranges)
PART_COUNT_WEIGHTS = {  # density -> {number of pitched parts: weight}
    "sparse": {1: 0.6, 2: 0.4},
    "moderate": {1: 0.2, 2: 0.5, 3: 0.3},
    "busy": {2: 0.3, 3: 0.5, 4: 0.2},
}
ROLE_SETS = {
    1: (("melody",), ("chords",), ("pad",)),
    2: (("melody", "chords"), ("chords", "bass"), ("melody", "pad"), ("melody", "bass")),
    3: (("melody", "chords", "bass"), ("chords", "pad", "bass"), ("melody", "pad", "bass"),
        ("melody", "chords", "pad")),
    4: (("melody", "chords", "pad", "bass"),),
}
MELODY_RHYTHMS = {  # one bar each, in beats
    "sparse": ((4.0,), (2.0, 2.0), (3.0, 1.0), (2.0, 1.0, 1.0), (1.0, 1.0, 2.0)),
    "moderate": ((1.0, 1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 0.5, 0.5, 2.0), (1.5, 0.5, 1.0, 1.0),
                 (0.5, 0.5, 1.0, 2.0)),
    "busy": ((0.5,) * 8, (0.5, 0.5, 1.0, 0.5, 0.5, 1.0), (0.25, 0.25, 0.5, 1.0, 0.5, 0.5, 1.0),
             (1.0, 0.5, 0.5, 0.5, 0.5, 1.0), (0.75, 0.25) * 4),
}
REST_PROBABILITY = {"sparse": 0.06, "moderate": 0.1, "busy": 0.12}
MELODY_STEPS = ((-3, -2, -1, 0, 1, 2, 3), (0.05, 0.15, 0.3, 0.1, 0.25, 0.1, 0.05))
COMP_PATTERNS = {  # (start, length) in a bar
    "quarters": ((0, 0.9), (1, 0.9), (2, 0.9), (3, 0.9)),
    "offbeats": ((0.5, 0.4), (1.5, 0.4), (2.5, 0.4), (3.5, 0.4)),
    "charleston": ((0, 1.2), (1.5, 2.3)),
    "push": ((0, 1.4), (1.5, 1.4), (3, 0.9)),
    "funk": ((0, 0.2), (0.75, 0.2), (1.5, 0.2), (2.5, 0.2), (3.25, 0.2)),
}
STRUM_PATTERNS = {  # (start, direction) in a bar
    "sparse": ((0, "down"), (2, "down")),
    "moderate": ((0, "down"), (1, "down"), (1.5, "up"), (2.5, "up"), (3, "down"), (3.5, "up")),
    "busy": tuple((i * 0.5, "down" if i % 2 == 0 else "up") for i in range(8)),
}
SYNCOPATED_BASS = (  # (start, length, interval above the root) in a bar: a funk line with octave pops
    (0, 0.4, 0), (0.75, 0.2, 0), (1.5, 0.3, 12), (2.0, 0.4, 0), (2.75, 0.2, 7), (3.5, 0.4, 12))
ARPEGGIO_STEP = {"sparse": 1.0, "moderate": 0.5, "busy": 0.25}
STRUM_SPREAD_SECONDS = 0.014  # between strings, like a pick across six strings
END_GUARD_SECONDS = 0.03  # notes starting this close to the cut would only click


@dataclass(frozen=True)
class Chord:
    root: int  # pitch class
    tones: tuple[int, ...]  # pitch classes, root first
    start: float  # beats
    length: float


class Harmony:
    """A progression looped over the clip, one chord per slot of `slot_beats`."""

    def __init__(self, tonic: int, mode: str, degrees: tuple[int, ...], slot_beats: float, sevenths: bool):
        self.tonic, self.mode, self.degrees, self.slot_beats = tonic, mode, degrees, slot_beats
        self.sevenths = sevenths
        self.scale = tuple((tonic + s) % 12 for s in MODE_STEPS[mode])

    def chord(self, slot: int) -> Chord:
        degree = self.degrees[slot % len(self.degrees)]
        stack = (0, 2, 4, 6) if self.sevenths else (0, 2, 4)
        tones = tuple(self.scale[(degree + s) % 7] for s in stack)
        return Chord(tones[0], tones, slot * self.slot_beats, self.slot_beats)

    def at(self, beat: float) -> Chord:
        return self.chord(int(math.floor(beat / self.slot_beats + 1e-9)))

    def slots(self, beats: float) -> list[Chord]:
        return [self.chord(k) for k in range(int(math.ceil(beats / self.slot_beats)))]


@dataclass(frozen=True)
class Context:
    """What every part generator needs to know about the song."""

    harmony: Harmony
    beats: float
    bars: int
    density: str
    velocity: int
    genre: Genre
    bpm: int


def compose_song(seed: int, duration: float, solo: bool = False) -> Song:
    """A song of `duration` seconds, fully determined by `seed` (and `solo`: a lone melody)."""
    rng = ClipRandom(seed)
    genre = GENRES[rng.choice(tuple(GENRES))]
    mood = MOODS[rng.choice(genre.moods)]
    mode = "major" if rng.chance(mood.major_probability) else "minor"
    tonic = rng.integer(0, 11)
    low, high = genre.bpm_range
    bpm = int(round(low + (high - low) * rng.uniform(*mood.tempo_position)))
    density = rng.weighted(("sparse", "moderate", "busy"), mood.density_weights)
    drums_only = genre.drums_probability > 0 and rng.chance(DRUMS_ONLY_PROBABILITY)
    with_drums = drums_only or rng.chance(genre.drums_probability * (0.5 if density == "sparse" else 1.0))
    if solo:  # the draws above are kept so everything else about the song follows the seed as usual
        drums_only = with_drums = False
        roles = (("melody", rng.child("solo").choice(SOLO_INSTRUMENTS)),)
    else:
        roles = () if drums_only else _choose_roles(rng.child("roles"), genre, density)

    degrees = rng.choice((JAZZ_PROGRESSIONS if genre.sevenths else PROGRESSIONS)[mode])
    slot_beats = {"sparse": rng.choice((4.0, 8.0)), "moderate": 4.0, "busy": rng.choice((2.0, 4.0))}[density]
    harmony = Harmony(tonic, mode, degrees, slot_beats, genre.sevenths)
    beats = duration * bpm / 60.0
    context = Context(harmony, beats, int(math.ceil(beats / 4.0)) + 1, density, mood.velocity, genre, bpm)

    parts = _pitched_parts(rng.child("parts"), context, roles)
    if with_drums:
        parts.append(Part(DRUMS, "drums", genre.name, genre.drum_kit, DRUM_CHANNEL, pan=64, volume=100,
                          notes=drum_notes(rng.child("drums"), genre.name, density, context.bars,
                                           mood.velocity - 85)))
    if genre.swing:
        parts = [_swung(p) for p in parts]
    song = Song(genre.name, mood.name, density, bpm, None if drums_only else tonic,
                None if drums_only else mode, duration, parts, reverb=genre.reverb,
                chorus=rng.integer(0, 20))
    song = _cut_at_end(song)
    for part in song.parts:
        if part.instrument in INSTRUMENTS and INSTRUMENTS[part.instrument].rolled:
            part.notes = _rolled(part.notes)
    return song


def _palette_counts() -> dict[str, int]:
    """In how many (genre, role) palettes each instrument appears."""
    counts: dict[str, int] = {}
    for genre in GENRES.values():
        for names in (genre.melody, genre.chords, genre.pad, genre.bass):
            for name in names:
                counts[name] = counts.get(name, 0) + 1
    return counts


# Drawing instruments with weight 1 / (palettes they appear in) evens out how often each is heard.
PALETTE_COUNTS = _palette_counts()


def _choose_roles(rng: ClipRandom, genre: Genre, density: str) -> tuple[tuple[str, str], ...]:
    """(role, instrument) pairs with distinct instruments, drawn from the genre's palette."""
    weights = PART_COUNT_WEIGHTS[density]
    count = rng.weighted(tuple(weights), tuple(weights.values()))
    palette = {"melody": genre.melody, "chords": genre.chords, "pad": genre.pad, "bass": genre.bass}
    options = [s for s in ROLE_SETS[count] if all(palette[r] for r in s)]
    if not options:
        options = [("melody",)]
    chosen, used = [], set()
    for role in rng.choice(options):
        candidates = [i for i in palette[role] if i not in used]
        if candidates:
            instrument = rng.weighted(candidates, [1.0 / PALETTE_COUNTS[i] for i in candidates])
            used.add(instrument)
            chosen.append((role, instrument))
    return tuple(chosen)


def _pitched_parts(rng: ClipRandom, context: Context, roles) -> list[Part]:
    parts = []
    for channel, (role, name) in enumerate(roles):
        instrument = INSTRUMENTS[name]
        low, high = instrument.ranges[role]
        part_rng = rng.child(f"{role}:{name}")
        if role == "melody":
            style, notes = "melody", _melody(part_rng, context, low, high)
            pan, volume = 64 + part_rng.integer(-12, 12), 105
        elif role == "chords":
            style = _chord_style(part_rng, context, name)
            notes = _chords(part_rng, context, low, high, style)
            pan, volume = 64 + part_rng.choice((-1, 1)) * part_rng.integer(18, 36), 88
        elif role == "pad":
            style, notes = "pad", _pad(part_rng, context, low, high)
            pan, volume = 64 + part_rng.integer(-10, 10), 78
        else:
            style = context.genre.bass_styles.get(context.density, "root")
            notes, pan, volume = _bass(part_rng, context, low, style), 64, 105
        parts.append(Part(name, role, style, instrument.program, channel, pan, volume, notes))
    return parts


def _rolled(notes: list[Note], stroke: float = 0.5) -> list[Note]:
    """Notes longer than a beat become repeated strokes every `stroke` beats (a roll), the strokes after
    the first a little softer; no stroke starts in the last 0.1 beat of a note."""
    out = []
    for n in notes:
        if n.length <= 1.0:
            out.append(n)
            continue
        t = 0.0
        while t < n.length - 0.1:
            velocity = n.velocity if t == 0 else max(25, n.velocity - 12)
            out.append(Note(n.start + t, min(stroke, n.length - t), n.pitch, velocity))
            t += stroke
    return out


def _chord_style(rng: ClipRandom, context: Context, instrument: str) -> str:
    styles = list(context.genre.chord_styles)
    if instrument != "distorted guitar" and "power" in styles:
        styles.remove("power")
    if instrument not in ("acoustic guitar", "electric guitar", "distorted guitar") and "strum" in styles:
        styles.remove("strum")
    if instrument == "distorted guitar" and "power" in styles:
        return "power"
    return rng.choice(styles or ["block"])


def _velocity(rng: ClipRandom, context: Context, beat: float, offset: int = 0) -> int:
    accent = 8 if abs(beat % 4.0) < 1e-9 else (3 if abs(beat % 1.0) < 1e-9 else 0)
    return max(25, min(124, context.velocity + offset + accent + rng.integer(-5, 5)))


def _scale_pitches(harmony: Harmony, low: int, high: int) -> list[int]:
    return [p for p in range(low, high + 1) if p % 12 in harmony.scale]


def _melody(rng: ClipRandom, context: Context, low: int, high: int) -> list[Note]:
    """A stepwise walk on the scale; strong beats snap to the nearest chord tone."""
    pitches = _scale_pitches(context.harmony, low, high)
    rhythms = MELODY_RHYTHMS[context.density]
    phrase = (rng.choice(rhythms), rng.choice(rhythms))
    first_chord = context.harmony.at(0.0)
    index = _nearest_chord_tone(pitches, len(pitches) // 2, first_chord)
    notes: list[Note] = []
    beat = 0.0
    for bar in range(context.bars):
        for length in phrase[bar % 2]:
            if notes and rng.chance(REST_PROBABILITY[context.density]):
                beat += length
                continue
            step = rng.weighted(*MELODY_STEPS)
            index += step
            if index < 0 or index >= len(pitches):  # reflect off the register's edges
                index -= 2 * step
                index = max(0, min(len(pitches) - 1, index))
            if abs(beat % 2.0) < 1e-9:
                index = _nearest_chord_tone(pitches, index, context.harmony.at(beat))
            notes.append(Note(beat, length * 0.92, pitches[index], _velocity(rng, context, beat, 6)))
            beat += length
    return notes


def _nearest_chord_tone(pitches: list[int], index: int, chord: Chord) -> int:
    candidates = [i for i, p in enumerate(pitches) if p % 12 in chord.tones]
    return min(candidates, key=lambda i: (abs(i - index), i)) if candidates else index


def _voicing(tones: tuple[int, ...], low: int, high: int, target: float) -> list[int]:
    """The inversion of `tones` (stacked upward) inside [low, high] whose mean is nearest `target`."""
    best, best_cost = None, None
    for rotation in range(len(tones)):
        order = tones[rotation:] + tones[:rotation]
        for base in range(low, low + 12):
            if base % 12 != order[0]:
                continue
            for octave in range(0, 48, 12):
                stack = [base + octave]
                for pc in order[1:]:
                    stack.append(stack[-1] + ((pc - stack[-1]) % 12 or 12))
                if stack[0] < low or stack[-1] > high:
                    continue
                cost = abs(sum(stack) / len(stack) - target)
                if best_cost is None or cost < best_cost - 1e-9:
                    best, best_cost = stack, cost
    if best is None:  # a range narrower than the chord: fall back to close position from `low`
        best = sorted(low + (pc - low) % 12 for pc in tones)
    return best


class _Voicer:
    """Voice-leads successive chords: each voicing stays near the previous one's centre."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high
        self.target = (low + high) / 2.0

    def __call__(self, chord: Chord) -> list[int]:
        pitches = _voicing(chord.tones, self.low, self.high, self.target)
        self.target = 0.5 * self.target + 0.5 * (sum(pitches) / len(pitches))
        return pitches


def _chords(rng: ClipRandom, context: Context, low: int, high: int, style: str) -> list[Note]:
    voicer = _Voicer(low, high)
    notes: list[Note] = []
    if style == "block":
        for chord in context.harmony.slots(context.beats):
            pitches = voicer(chord)
            for hit in range(0, int(chord.length), 4):
                start = chord.start + hit
                length = min(4.0, chord.length - hit) * 0.96
                velocity = _velocity(rng, context, start, -8)
                notes += [Note(start, length, p, velocity) for p in pitches]
    elif style == "comp":
        if context.genre.name == "funk":
            name = "funk"
        elif context.genre.name == "jazz":
            name = rng.choice(("charleston", "push"))
        else:
            name = rng.choice(("quarters", "offbeats", "push") if context.density != "sparse" else ("push",))
        for bar in range(context.bars):
            for offset, length in COMP_PATTERNS[name]:
                start = bar * 4.0 + offset
                velocity = _velocity(rng, context, start, -6)
                notes += [Note(start, length, p, velocity) for p in voicer(context.harmony.at(start))]
    elif style == "arpeggio":
        step = ARPEGGIO_STEP[context.density]
        shape = rng.choice(((0, 1, 2, 3), (0, 1, 2, 3, 2, 1), (0, 2, 1, 3)))
        position = 0
        for chord in context.harmony.slots(context.beats):
            pitches = voicer(chord)
            pitches = pitches + [pitches[0] + 12]
            beat = chord.start
            while beat < chord.start + chord.length - 1e-9:
                pitch = pitches[shape[position % len(shape)] % len(pitches)]
                notes.append(Note(beat, step * 1.5, pitch, _velocity(rng, context, beat, -4)))
                position += 1
                beat += step
    elif style == "strum":
        spread = STRUM_SPREAD_SECONDS * context.bpm / 60.0
        pattern = STRUM_PATTERNS[context.density]
        for bar in range(context.bars):
            for i, (offset, direction) in enumerate(pattern):
                start = bar * 4.0 + offset
                following = pattern[i + 1][0] if i + 1 < len(pattern) else 4.0
                pitches = voicer(context.harmony.at(start))
                pitches = pitches + [pitches[0] + 12] if pitches[0] + 12 <= high + 5 else pitches
                if direction == "up":
                    pitches = pitches[::-1][:3]
                velocity = _velocity(rng, context, start, -4 if direction == "down" else -16)
                for k, p in enumerate(pitches):
                    notes.append(Note(start + k * spread, following - offset, p, velocity))
    elif style == "power":
        chug = {"sparse": 2.0, "moderate": 1.0, "busy": 0.5}[context.density]
        for bar in range(context.bars):
            beat = bar * 4.0
            while beat < bar * 4.0 + 4.0 - 1e-9:
                chord = context.harmony.at(beat)
                root = low + (chord.root - low) % 12
                velocity = _velocity(rng, context, beat, 0)
                length = chug * (0.95 if chug >= 1 else 0.6)
                notes += [Note(beat, length, p, velocity) for p in (root, root + 7, root + 12)]
                beat += chug
    else:
        raise ValueError(f"unknown chord style {style!r}")
    return notes


def _pad(rng: ClipRandom, context: Context, low: int, high: int) -> list[Note]:
    voicer = _Voicer(low, high)
    notes = []
    for chord in context.harmony.slots(context.beats):
        velocity = _velocity(rng, context, chord.start, -14)
        notes += [Note(chord.start, chord.length, p, velocity) for p in voicer(chord)]
    return notes


def _bass(rng: ClipRandom, context: Context, low: int, style: str) -> list[Note]:
    def root_of(beat: float, interval: int = 0) -> int:
        return low + (context.harmony.at(beat).root + interval - low) % 12

    notes = []
    for bar in range(context.bars):
        b = bar * 4.0
        if style == "root":
            hits = [(b, 1.9, root_of(b)), (b + 2, 1.9, root_of(b + 2))]
            if context.harmony.at(b).root == context.harmony.at(b + 2).root:
                hits = [(b, 3.9, root_of(b))]
        elif style == "root_fifth":
            hits = [(b, 1.9, root_of(b)), (b + 2, 1.9, root_of(b + 2, 7))]
        elif style == "pulse":
            hits = [(b + i * 0.5, 0.45, root_of(b + i * 0.5)) for i in range(8)]
        elif style == "offbeat":
            hits = [(b + i + 0.5, 0.4, root_of(b + i + 0.5)) for i in range(4)]
        elif style == "syncopated":
            hits = [(b + o, n, root_of(b + o) + i) for o, n, i in SYNCOPATED_BASS]
        elif style == "walking":
            hits = []
            for i in range(4):
                beat = b + i
                chord = context.harmony.at(beat)
                if i == 0:
                    pitch = root_of(beat)
                elif i == 3:  # approach the next bar's root from a semitone away
                    target = root_of(beat + 1)
                    pitch = target + rng.choice((-1, 1))
                else:
                    pitch = low + (chord.tones[rng.integer(1, len(chord.tones) - 1)] - low) % 12
                hits.append((beat, 0.92, pitch))
        else:
            raise ValueError(f"unknown bass style {style!r}")
        notes += [Note(s, n, p, _velocity(rng, context, s, 4)) for s, n, p in hits]
    return notes


def _swing_time(beat: float) -> float:
    """Swung eighths: the off-beat eighth moves from 1/2 to 2/3 of the beat."""
    whole = math.floor(beat + 1e-9)
    frac = beat - whole
    warped = frac * 4.0 / 3.0 if frac <= 0.5 else 2.0 / 3.0 + (frac - 0.5) * 2.0 / 3.0
    return whole + warped


def _swung(part: Part) -> Part:
    notes = []
    for n in part.notes:
        start, end = _swing_time(n.start), _swing_time(n.start + n.length)
        notes.append(Note(start, max(end - start, 0.05), n.pitch, n.velocity))
    part.notes = notes
    return part


def _cut_at_end(song: Song) -> Song:
    """Drop notes past the end, shorten the ones crossing it, hold the melody's last note to it."""
    end = song.beats
    guard = song.seconds_to_beats(END_GUARD_SECONDS)
    for part in song.parts:
        kept = [Note(n.start, min(n.length, end - n.start), n.pitch, n.velocity)
                for n in part.notes if n.start < end - guard]
        if part.role == "melody" and kept:
            last_start = max(n.start for n in kept)
            kept = [Note(n.start, end - n.start, n.pitch, n.velocity) if n.start == last_start else n
                    for n in kept]
        part.notes = sorted(kept, key=lambda n: (n.start, n.pitch))
    return song
