"""Simple sound effects synthesised with numpy: whooshes, noise bursts, beeps, alarms, clock ticks,
sine sweeps, thunder, footsteps and knocking.

`synthesize_sfx(seed, duration)` returns float32 audio [T, 2] of exactly `duration` seconds and an
SfxInfo with its labels. The effect fills the clip to its end: repeating events are anchored so the
last one lands at the end, continuous ones keep sounding until the cut. Randomness comes from
ClipRandom for choices and from NumPy's PCG64 bit stream (uniform draws only, which are stable across
NumPy versions) for noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .rng import ClipRandom

SFX_KINDS = ("whoosh", "noise bursts", "beeps", "alarm", "clock ticks", "sine sweep", "thunder",
             "footsteps", "knocking")
FRAME, HOP = 2048, 512  # spectral noise shaping: ~46 ms frames, 75 % overlap


@dataclass(frozen=True)
class SfxInfo:
    label: str  # one of SFX_KINDS; the clip's "instrument"
    detail: str  # caption phrase, e.g. "fast high-pitched beeps"
    mood: str
    bpm: int | None  # repetition rate (events per minute) when the effect repeats regularly


class _Noise:
    """Uniform noise from PCG64 (its raw stream is stable across NumPy versions)."""

    def __init__(self, seed: int):
        self._generator = np.random.Generator(np.random.PCG64(seed))

    def uniform(self, shape) -> np.ndarray:
        return self._generator.random(shape)

    def white(self, n: int) -> np.ndarray:
        return (2.0 * self._generator.random(n) - 1.0).astype(np.float32)


def shaped_noise(noise: _Noise, n: int, sample_rate: int,
                 gain: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Noise of length n whose spectrum follows gain(times[F, 1], freqs[1, K]) -> [F, K], by overlap-add
    of random-phase frames (a time-varying filter without scipy). Returns float32 [n]."""
    frames = n // HOP + 4
    times = ((np.arange(frames) * HOP - FRAME / 2) / sample_rate)[:, None]
    freqs = np.fft.rfftfreq(FRAME, 1.0 / sample_rate)[None, :]
    phase = np.exp(2j * np.pi * noise.uniform((frames, freqs.shape[1])))
    spectra = gain(np.clip(times, 0.0, None), freqs) * phase
    window = np.hanning(FRAME)
    blocks = np.fft.irfft(spectra, n=FRAME, axis=1) * window[None, :]
    out = np.zeros(frames * HOP + FRAME)
    for i in range(frames):
        out[i * HOP:i * HOP + FRAME] += blocks[i]
    start = FRAME // 2
    result = out[start:start + n]
    return (result / (np.sqrt(np.mean(result ** 2)) + 1e-12)).astype(np.float32)


def _pan(mono: np.ndarray, position: np.ndarray | float) -> np.ndarray:
    """Equal-power pan, position -1 (left) .. 1 (right). [T] -> [T, 2]."""
    angle = (np.asarray(position, dtype=np.float32) + 1.0) * (np.pi / 4)
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)], axis=1).astype(np.float32) * np.sqrt(2.0)


def _ramp(n: int, sample_rate: int, attack: float = 0.005, release: float = 0.005) -> np.ndarray:
    env = np.ones(n, dtype=np.float32)
    a, r = min(n, int(attack * sample_rate)), min(n, int(release * sample_rate))
    if a:
        env[:a] = np.linspace(0.0, 1.0, a, dtype=np.float32)
    if r:
        env[n - r:] *= np.linspace(1.0, 0.0, r, dtype=np.float32)
    return env


def _event_starts(duration: float, period: float, event: float) -> list[float]:
    """Start times of a regular series whose last event ends exactly at `duration`."""
    starts, t = [], duration - event
    while t >= -1e-9:
        starts.append(max(t, 0.0))
        t -= period
    return starts[::-1]


def _place(canvas: np.ndarray, sound: np.ndarray, start: float, sample_rate: int) -> None:
    i = int(round(start * sample_rate))
    j = min(canvas.shape[0], i + sound.shape[0])
    if j > i:
        canvas[i:j] += sound[:j - i]


def _tone(freq: float | np.ndarray, n: int, sample_rate: int, harmonics: int = 1) -> np.ndarray:
    """A sine (harmonics=1) or a square-like tone of odd harmonics; freq may vary per sample."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))) / sample_rate
    wave = np.zeros(n)
    for k in range(1, 2 * harmonics, 2):
        wave += np.sin(k * phase) / k
    return wave.astype(np.float32)


def _whoosh(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    count = max(1, int(round(duration / rng.uniform(1.0, 2.5))))
    length = duration / count
    low, high = rng.uniform(200, 500), rng.uniform(2000, 5000)
    direction = rng.choice((-1.0, 1.0))

    def position(t):  # 0..1 through the current whoosh
        return (t % length) / length

    def gain(t, f):
        x = position(t)
        centre = low * (high / low) ** np.sin(np.pi * np.clip(x, 0, 1) ** 0.7)
        band = np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / centre) / 0.8) ** 2)
        return band * (0.45 + 0.55 * np.sin(np.pi * x ** 0.6))  # floor: the last whoosh sounds to the end

    n = int(round(duration * sr))
    mono = shaped_noise(noise, n, sr, gain)
    t = np.arange(n) / sr
    sweep = direction * (2 * position(t) - 1) * 0.8
    speed = "fast " if length < 1.4 else ("slow " if length > 2.2 else "")
    amount = {1: "a", 2: "two", 3: "three"}.get(count, "several")
    detail = f"{amount} {speed}whoosh" if count == 1 else f"{amount} {speed}whooshes"
    detail += " sweeping " + ("left to right" if direction > 0 else "right to left")
    return _pan(mono, sweep), SfxInfo("whoosh", detail, rng.choice(("dramatic", "energetic")), None)


def _noise_bursts(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    bpm = rng.integer(60, 200)
    period = 60.0 / bpm
    burst = min(period * 0.8, rng.uniform(0.05, 0.2))
    tilt = rng.uniform(-1.0, 0.3)  # spectral slope: darker or brighter static
    n_burst = int(burst * sr)
    canvas = np.zeros((int(round(duration * sr)), 2), dtype=np.float32)
    decay = np.exp(-np.arange(n_burst) / (0.35 * n_burst)).astype(np.float32)
    decay *= _ramp(n_burst, sr, 0.002, 0.004)
    for start in _event_starts(duration, period, burst):
        sound = shaped_noise(noise, n_burst, sr, lambda t, f: (np.maximum(f, 50.0) / 1000.0) ** tilt)
        _place(canvas, _pan(sound * decay, rng.uniform(-0.5, 0.5)), start, sr)
    tone = "dark " if tilt < -0.5 else ("bright " if tilt > 0 else "")
    return canvas, SfxInfo("noise bursts", f"short {tone}noise bursts like static", "tense", bpm)


def _beeps(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    bpm = rng.integer(60, 240)
    period = 60.0 / bpm
    freq = rng.choice((440.0, 660.0, 880.0, 1000.0, 1320.0, 1760.0, 2000.0))
    beep = min(period * 0.6, rng.uniform(0.06, 0.3))
    harmonics = rng.choice((1, 1, 3))
    n_beep = int(beep * sr)
    sound = _tone(freq, n_beep, sr, harmonics) * _ramp(n_beep, sr)
    canvas = np.zeros(int(round(duration * sr)), dtype=np.float32)
    for start in _event_starts(duration, period, beep):
        _place(canvas, sound, start, sr)
    pitch = "high-pitched " if freq >= 1300 else ("low " if freq < 700 else "")
    pace = "fast " if bpm >= 160 else ("slow " if bpm < 100 else "")
    mood = "urgent" if bpm >= 160 else ("calm" if bpm < 100 else "tense")
    return _pan(canvas, 0.0), SfxInfo("beeps", f"{pace}{pitch}beeps", mood, bpm)


def _alarm(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    n = int(round(duration * sr))
    t = np.arange(n) / sr
    low = rng.uniform(500, 900)
    high = low * rng.uniform(1.2, 1.6)
    if rng.chance(0.5):
        bpm = rng.integer(60, 200)  # tone changes per minute
        half = 60.0 / bpm
        freq = np.where((t // half) % 2 == 0, low, high)
        wave = _tone(freq, n, sr, harmonics=3)
        info = SfxInfo("alarm", ("fast " if bpm >= 140 else "") + "two-tone alarm", "urgent", bpm)
    else:
        rate = rng.uniform(0.3, 1.5)
        freq = low + (high - low) * 0.5 * (1 - np.cos(2 * np.pi * rate * t))
        wave = _tone(freq, n, sr, harmonics=2)
        info = SfxInfo("alarm", "wailing siren alarm", "urgent", None)
    return _pan(wave * _ramp(n, sr, 0.01, 0.0), 0.0), info


def _click(freq: float, sr: int, decay: float) -> np.ndarray:
    n = int(0.06 * sr)
    t = np.arange(n) / sr
    body = np.sin(2 * np.pi * freq * t) + 0.5 * np.sin(2 * np.pi * freq * 2.71 * t)
    return (body * np.exp(-t / decay)).astype(np.float32) * _ramp(n, sr, 0.0005, 0.002)


def _clock_ticks(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    bpm = rng.integer(60, 180)
    period = 60.0 / bpm
    freq = rng.uniform(1800, 4000)
    tick, tock = _click(freq, sr, 0.006), _click(freq * 0.75, sr, 0.008)
    canvas = np.zeros(int(round(duration * sr)), dtype=np.float32)
    # the last tick starts 80 ms before the end, ahead of the final fade-out, and has died away by then
    for k, start in enumerate(_event_starts(duration, period, 0.08)):
        _place(canvas, tick if k % 2 == 0 else tock, start, sr)
    pace = "fast " if bpm >= 130 else ("slow " if bpm < 80 else "")
    return _pan(canvas, 0.0), SfxInfo("clock ticks", f"{pace}clock ticks, tick and tock",
                                      "tense" if bpm >= 100 else "calm", bpm)


def _sine_sweep(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    low, high = rng.uniform(80, 300), rng.uniform(2000, 8000)
    rising = rng.chance(0.5)
    count = 1 if rng.chance(0.5) else max(1, int(round(duration / rng.uniform(0.5, 2.0))))
    length = duration / count
    n_sweep = int(round(length * sr))
    x = np.arange(n_sweep) / n_sweep
    freq = low * (high / low) ** (x if rising else 1.0 - x)
    sweep = _tone(freq, n_sweep, sr) * _ramp(n_sweep, sr, 0.005, 0.005)
    canvas = np.zeros(int(round(duration * sr)), dtype=np.float32)
    for k in range(count):
        _place(canvas, sweep, k * length, sr)
    way = "rising" if rising else "falling"
    pace = "fast " if length < 1 else ""
    detail = f"{way} sine sweep" if count == 1 else f"repeated {pace}{way} sine sweeps"
    return _pan(canvas, 0.0), SfxInfo("sine sweep", detail, "eerie", None)


def _thunder(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    n = int(round(duration * sr))
    t = np.arange(n) / sr
    corner = rng.uniform(60, 160)
    swells = [(rng.uniform(0.2, max(0.3, duration * 0.8)), rng.uniform(0.3, 1.5), rng.uniform(0.4, 1.0))
              for _ in range(rng.integer(1, 4))]

    def rumble_gain(times, f):
        return 1.0 / (1.0 + (f / corner) ** 2) * (f > 20)

    envelope = 0.35 + 0.65 * np.exp(-t / max(0.5, duration * 0.6))
    for centre, width, height in swells:
        envelope += height * np.exp(-0.5 * ((t - centre) / width) ** 2)
    left = shaped_noise(noise, n, sr, rumble_gain)
    right = shaped_noise(noise, n, sr, rumble_gain)
    rumble = np.stack([left + 0.6 * right, right + 0.6 * left], axis=1) * envelope[:, None].astype(np.float32)
    crack = rng.chance(0.6)
    if crack:
        m = min(n, int(0.6 * sr))
        burst = shaped_noise(noise, m, sr, lambda tt, f: (np.maximum(f, 100.0) / 1000.0) ** -0.5)
        burst *= np.exp(-np.arange(m) / (0.12 * sr)).astype(np.float32) * 2.5
        rumble[:m] += _pan(burst, rng.uniform(-0.3, 0.3))
    detail = "a thunder crack and a deep rolling rumble" if crack else "deep rolling thunder rumble"
    return rumble.astype(np.float32) * _ramp(n, sr, 0.01, 0.0)[:, None], SfxInfo(
        "thunder", detail, rng.choice(("dark", "dramatic")), None)


def _thud(noise: _Noise, sr: int, pitch: float, brightness: float, length: float) -> np.ndarray:
    """A knock: a decaying low sine (the body) plus a burst of band-passed noise (the contact)."""
    n = int(length * sr)
    t = np.arange(n) / sr
    body = np.sin(2 * np.pi * pitch * t) * np.exp(-t / 0.03)

    def band(times, f):
        return np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / brightness) / 1.2) ** 2)

    grit = shaped_noise(noise, n, sr, band)
    grit = grit * np.exp(-t / 0.015)
    return ((body + 0.6 * grit) * _ramp(n, sr, 0.001, 0.01)).astype(np.float32)


def _footsteps(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    running = rng.chance(0.3)
    bpm = rng.integer(150, 190) if running else rng.integer(80, 130)
    period = 60.0 / bpm
    pitch, brightness = rng.uniform(70, 130), rng.uniform(300, 1500)
    canvas = np.zeros((int(round(duration * sr)), 2), dtype=np.float32)
    for k, start in enumerate(_event_starts(duration, period, 0.15)):
        step = _thud(noise, sr, pitch * rng.uniform(0.95, 1.05), brightness, 0.15)
        step *= rng.uniform(0.8, 1.0)
        _place(canvas, _pan(step, -0.25 if k % 2 == 0 else 0.25), start, sr)
    surface = "hard floor" if brightness > 900 else "wooden floor"
    return canvas, SfxInfo("footsteps", f"{'running' if running else 'walking'} footsteps on a {surface}",
                           "tense" if running else "calm", bpm)


def _knocking(rng: ClipRandom, noise: _Noise, duration: float, sr: int) -> tuple[np.ndarray, SfxInfo]:
    knocks = rng.integer(2, 4)
    gap = rng.uniform(0.12, 0.2)
    group_period = max(knocks * gap + rng.uniform(0.4, 1.2), 0.8)
    pitch, brightness = rng.uniform(120, 250), rng.uniform(800, 2500)
    canvas = np.zeros((int(round(duration * sr)), 2), dtype=np.float32)
    pan = rng.uniform(-0.4, 0.4)
    for group_start in _event_starts(duration, group_period, (knocks - 1) * gap + 0.12):
        for k in range(knocks):
            knock = _thud(noise, sr, pitch, brightness, 0.12)
            _place(canvas, _pan(knock, pan), group_start + k * gap, sr)
    words = {2: "two", 3: "three", 4: "four"}[knocks]
    return canvas, SfxInfo("knocking", f"knocking on a door, {words} knocks at a time",
                           "tense" if gap < 0.15 else "calm", None)


SYNTHESIZERS = {
    "whoosh": _whoosh, "noise bursts": _noise_bursts, "beeps": _beeps, "alarm": _alarm,
    "clock ticks": _clock_ticks, "sine sweep": _sine_sweep, "thunder": _thunder, "footsteps": _footsteps,
    "knocking": _knocking,
}


def synthesize_sfx(seed: int, duration: float, sample_rate: int = 44100) -> tuple[np.ndarray, SfxInfo]:
    """float32 [round(duration * sample_rate), 2] and its labels, fully determined by `seed`."""
    rng = ClipRandom(seed)
    kind = rng.choice(SFX_KINDS)
    audio, info = SYNTHESIZERS[kind](rng.child(kind), _Noise(rng.child("noise").seed), duration, sample_rate)
    n = int(round(duration * sample_rate))
    audio = audio[:n]
    if audio.shape[0] < n:
        audio = np.concatenate([audio, np.zeros((n - audio.shape[0], 2), np.float32)])
    return audio.astype(np.float32), info
