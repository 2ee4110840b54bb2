"""Synthetic captioned audio for training the bundled default model (issue 6).

Music is composed as MIDI (compose.py: genre, mood, key, BPM, density; melody, chords, pad, bass,
drums) and rendered with fluidsynth and the FluidR3_GM soundfont (render.py); sound effects are
synthesised with numpy (sfx.py). Everything is deterministic from the dataset seed. This package is
a tool, not part of stable_audio_core; it needs fluidsynth, fluid-soundfont-gm and mido (the `data`
extra) for music, and only numpy/soundfile for sound effects.

The contract the training data loader reads (DIR is --out):

    DIR/audio/<id>.wav    44.1 kHz, stereo, 16-bit PCM; exactly `duration` seconds long (content
                          fills it to the end: the fluidsynth reverb tail is cut, a 40 ms fade ends it)
    DIR/audio/<id>.json   sidecar: {"description", "instruments", "genre", "mood", "bpm", "key",
                          "duration", "kind", "seed"} plus "id" and "density".
                          kind "music": bpm int, key like "C major" (null for drums alone),
                          density sparse|moderate|busy.
                          kind "sfx": genre "sound effect", instruments [effect name], key null,
                          density null, bpm = repetition rate (int) or null.
    DIR/midi/<id>.mid     the composed MIDI (music only)
    DIR/manifest.jsonl    one sidecar per line, in id order, plus "path" ("audio/<id>.wav", relative to DIR)
    DIR/split.json        {"seed", "held_out_fraction", "train": [ids], "held_out": [ids]} (about 5 % held out)
    DIR/dataset.json      the parameters, soundfont, its licence, fluidsynth version and the command
"""

from .captions import EXTRA_FIELDS, FIELDS
from .compose import compose_song
from .dataset import ClipPlan, compose_metadata, generate_dataset, make_clip, plan_dataset
from .midi import song_to_midi
from .render import MissingToolsError, check_requirements, missing_requirements
from .sfx import SFX_KINDS, synthesize_sfx

__all__ = [
    "FIELDS", "EXTRA_FIELDS", "ClipPlan", "compose_song", "compose_metadata", "generate_dataset",
    "make_clip", "plan_dataset", "song_to_midi", "MissingToolsError", "check_requirements",
    "missing_requirements", "SFX_KINDS", "synthesize_sfx",
]
