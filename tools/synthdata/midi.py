"""Write a Song as a Standard MIDI File (type 1: a tempo track plus one track per part) with mido.

mido is imported when a file is written, so the rest of the package (and the check that reports
missing packages) works without it.
"""

from __future__ import annotations

import io

from .score import Song

TICKS_PER_BEAT = 480
CC_VOLUME, CC_PAN, CC_REVERB, CC_CHORUS = 7, 10, 91, 93


def _ticks(beats: float) -> int:
    return int(round(beats * TICKS_PER_BEAT))


def _note_spans(notes) -> list[tuple[int, int, int, int]]:
    """(on tick, off tick, pitch, velocity), shortened so notes of one pitch never overlap.

    Two overlapping notes of the same pitch on one channel would let the first note-off silence the
    second note, so each note ends no later than the next one of its pitch begins.
    """
    spans = sorted((_ticks(n.start), max(_ticks(n.start + n.length), _ticks(n.start) + 1), n.pitch,
                    n.velocity) for n in notes)
    next_on: dict[int, int] = {}
    fixed = []
    for on, off, pitch, velocity in reversed(spans):
        if pitch in next_on:
            off = min(off, next_on[pitch])
        if off > on:
            fixed.append((on, off, pitch, velocity))
        next_on[pitch] = on
    return sorted(fixed)


def song_to_midi(song: Song) -> bytes:
    """The bytes of a .mid file that plays `song` and ends exactly at its duration."""
    import mido

    end_tick = _ticks(song.beats)
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("track_name", name="tempo", time=0))
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(song.bpm), time=0))
    conductor.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    conductor.append(mido.MetaMessage("end_of_track", time=end_tick))
    midi.tracks.append(conductor)
    for part in song.parts:
        track = mido.MidiTrack()
        ch = part.channel
        track.append(mido.MetaMessage("track_name", name=f"{part.instrument} {part.role}", time=0))
        track.append(mido.Message("program_change", channel=ch, program=part.program, time=0))
        for control, value in ((CC_VOLUME, part.volume), (CC_PAN, part.pan), (CC_REVERB, song.reverb),
                               (CC_CHORUS, song.chorus)):
            track.append(mido.Message("control_change", channel=ch, control=control,
                                      value=max(0, min(127, value)), time=0))
        # (tick, 0 = off before 1 = on at the same tick, pitch, message)
        events = []
        for on, off, pitch, velocity in _note_spans(part.notes):
            events.append((on, 1, pitch, mido.Message("note_on", channel=ch, note=pitch, velocity=velocity)))
            events.append((min(off, end_tick), 0, pitch,
                           mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
        events.sort(key=lambda e: e[:3])
        tick = 0
        for at, _, _, message in events:
            track.append(message.copy(time=at - tick))
            tick = at
        track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - tick)))
        midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()
