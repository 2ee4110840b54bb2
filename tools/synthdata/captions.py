"""Captions and metadata: the sidecar fields a clip is stored with, and its natural-language description.

Every description names each instrument of the clip (its "instruments" entries appear verbatim),
the mood and BPM, the key for pitched music and the genre; wording varies between a few templates so
a text encoder sees the same facts in different orders.
"""

from __future__ import annotations

from .rng import ClipRandom, derive_seed
from .score import Part, Song
from .sfx import SfxInfo
from .vocab import DRUMS, GENRES, MOODS, key_name

# The fields the training data loader reads (names fixed), then extras in every sidecar.
FIELDS = ("description", "instruments", "genre", "mood", "bpm", "key", "duration", "kind", "seed")
EXTRA_FIELDS = ("id", "density")
SFX_GENRE = "sound effect"
DRUM_PHRASES = {"rock": "rock drums", "pop": "pop drums", "electronic": "four-on-the-floor drums",
                "jazz": "swing drums", "folk": "brush drums", "funk": "funk drums"}


def part_phrase(part: Part) -> str:
    """How a caption names one part: "piano chords", "walking upright bass", "swing drums"."""
    name = part.instrument
    if part.role == "drums":
        return DRUM_PHRASES.get(part.style, DRUMS)
    if part.role == "melody":
        return f"{name} melody"
    if part.role == "pad":
        return name if name == "synth pad" else f"sustained {name}"
    if part.role == "bass":
        return f"walking {name}" if part.style == "walking" else name
    return {"arpeggio": f"arpeggiated {name}", "strum": f"strummed {name}",
            "power": f"{name} power chords"}.get(part.style, f"{name} chords")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def music_description(song: Song, rng: ClipRandom) -> str:
    genre = GENRES[song.genre]
    phrases = [part_phrase(p) for p in song.parts]
    if rng.chance(0.5):
        phrases[0] = f"{rng.choice(MOODS[song.mood].adjectives)} {phrases[0]}"
    parts = _join(phrases)
    key = key_name(song.tonic, song.mode) if song.mode else None
    in_key = f" in {key}" if key else ""
    tempo = f"{song.bpm} BPM"
    templates = (
        [parts, song.genre, tempo, key, song.mood],
        [f"{song.mood} {genre.noun} with {parts}", tempo, key],
        [f"{song.genre} music with {parts}{in_key} at {tempo}", song.mood],
        [f"{parts} playing {_article(song.mood)} {song.mood} {genre.noun}{in_key}", tempo],
    )
    clauses = [c for c in rng.choice(templates) if c]
    if song.density != "moderate":
        clauses.append(song.density)
    return ", ".join(clauses)


def sfx_description(info: SfxInfo, rng: ClipRandom) -> str:
    rate = f"{info.bpm} BPM" if info.bpm else None
    templates = (
        [info.detail, rate, f"{info.mood} sound effect"],
        [f"sound effect of {info.detail}", rate, info.mood],
        [f"{info.mood} {info.detail}", rate, "sound effect"],
    )
    return ", ".join(c for c in rng.choice(templates) if c)


def music_metadata(clip_id: str, seed: int, song: Song) -> dict:
    """The sidecar of a music clip (FIELDS plus EXTRA_FIELDS)."""
    instruments = list(dict.fromkeys(p.instrument for p in song.parts))
    return {
        "id": clip_id,
        "description": music_description(song, ClipRandom(derive_seed(seed, "caption"))),
        "instruments": instruments,
        "genre": song.genre,
        "mood": song.mood,
        "bpm": song.bpm,
        "key": key_name(song.tonic, song.mode) if song.mode else None,
        "duration": round(song.duration, 2),
        "kind": "music",
        "seed": seed,
        "density": song.density,
    }


def sfx_metadata(clip_id: str, seed: int, duration: float, info: SfxInfo) -> dict:
    """The sidecar of a sound effect: genre "sound effect", key and density null, bpm null unless
    the effect repeats regularly."""
    return {
        "id": clip_id,
        "description": sfx_description(info, ClipRandom(derive_seed(seed, "caption"))),
        "instruments": [info.label],
        "genre": SFX_GENRE,
        "mood": info.mood,
        "bpm": info.bpm,
        "key": None,
        "duration": round(duration, 2),
        "kind": "sfx",
        "seed": seed,
        "density": None,
    }
