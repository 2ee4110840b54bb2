"""The default model's instrument and latent probes (stable_audio_core.evaluation, run by
tools/default_model/evaluate.py): band-energy features tell timbres apart regardless of loudness,
the nearest-centroid classifier reports honest leave-one-out accuracy (a class with a single
example cannot be recalled), and the latent probe tells lossy latents from a lossy decoder."""

import json
import math
from pathlib import Path

import soundfile as sf
import torch

from stable_audio_core.evaluation.classifiers import (band_features, latent_statistics, linear_classifier,
                                                      most_taken_for, nearest_centroid)
from stable_audio_core.evaluation.instruments import MELODY_INSTRUMENTS, instrument_prompt, solo_clips
from stable_audio_core.evaluation.latent_probe import latent_probe

RATE = 44100


def _tone(kind: str, pitch: float, gain: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    phase = 2 * math.pi * pitch * t
    wave = torch.sin(phase) if kind == "sine" else torch.sign(torch.sin(phase)) * 0.5
    return (gain * wave).expand(2, -1).clone()


def test_band_features_separate_timbres_and_ignore_loudness():
    loud, quiet, square = (_tone("sine", 440, 0.5), _tone("sine", 440, 0.05), _tone("square", 440, 0.5))
    features = band_features([loud, quiet, square], RATE)
    assert features.shape == (3, 128)
    same = (features[0] - features[1]).norm()
    different = (features[0] - features[2]).norm()
    assert same < 0.05 * different


def test_nearest_centroid_leave_one_out_and_predictions():
    choices = ("sine", "square", "lonely")
    train_clips = [_tone(kind, pitch, 0.3) for kind in ("sine", "square") for pitch in (220, 330, 440, 550)]
    labels = ["sine"] * 4 + ["square"] * 4
    train_clips.append(_tone("sine", 900, 0.3) + _tone("square", 60, 0.3))
    labels.append("lonely")  # one example: leave-one-out has no centroid left for it
    test_clips = [_tone("square", 275, 0.2), _tone("sine", 500, 0.2)]
    train = band_features(train_clips, RATE)
    accuracy, predicted = nearest_centroid(train, labels, band_features(test_clips, RATE), choices)
    assert accuracy == 8 / 9
    assert predicted == ["square", "sine"]


def _write_dataset(root: Path, rows: list[dict]) -> None:
    (root / "audio").mkdir(parents=True)
    for row in rows:
        row["path"] = f"audio/{row['id']}.wav"
        sf.write(str(root / row["path"]), _tone("sine", 440, 0.2, 0.1).T.numpy(), RATE)
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ids = [r["id"] for r in rows]
    (root / "split.json").write_text(json.dumps({"train": ids[:-1], "held_out": ids[-1:]}))


def test_solo_clips_are_the_lone_melodies_of_every_dataset_and_split(tmp_path):
    def row(i, instruments, description, kind="music"):
        return {"id": f"{i:06d}", "instruments": instruments, "description": description, "kind": kind}
    _write_dataset(tmp_path / "a", [row(0, ["piano"], "jazz music with piano melody"),
                                    row(1, ["piano", "drums"], "piano melody and drums"),
                                    row(2, ["piano"], "arpeggiated piano, calm"),
                                    row(3, ["flute"], "soft flute melody, folk")])      # held out
    _write_dataset(tmp_path / "b", [row(0, ["piano"], "piano melody, pop"),
                                    row(1, ["piano"], "piano melody, rock"),
                                    row(2, [], "thunder", kind="sfx"),
                                    row(3, ["marimba"], "marimba melody")])
    clips, labels = solo_clips([tmp_path / "a", tmp_path / "b"], RATE)
    assert labels == ["piano", "flute", "piano", "piano", "marimba"]
    assert all(c.shape == (2, int(0.1 * RATE)) for c in clips)
    _, capped = solo_clips([tmp_path / "a", tmp_path / "b"], RATE, per_instrument=1)
    assert capped == ["piano", "flute", "marimba"]
    _, held_out = solo_clips([tmp_path / "a", tmp_path / "b"], RATE, splits=("held_out",))
    assert held_out == ["flute", "marimba"]


class _BandEncoder:
    """An 'autoencoder' whose latents are per-frame log energies in 16 bands (they hold the
    spectrum); `perfect` decodes to the clip it last encoded, otherwise to noise."""

    downsampling_ratio = 1024

    def __init__(self, perfect: bool):
        self.perfect, self.last = perfect, None

    def encode(self, audio):
        self.last = audio
        frames = audio.shape[-1] // self.downsampling_ratio
        spectrum = torch.stft(audio[0].mean(0), 2048, 1024, window=torch.hann_window(2048),
                              return_complex=True).abs()[:384, :frames]
        return (spectrum.reshape(16, 24, frames).sum(1) + 1e-4).log()[None]

    def decode(self, latents):
        if self.perfect:
            return self.last
        return torch.randn(1, 2, latents.shape[-1] * self.downsampling_ratio, generator=torch.Generator().manual_seed(0)) * 0.1


def test_latent_probe_tells_a_lossy_decoder_from_lossy_latents(tmp_path):
    clips = [_tone(kind, pitch, 0.3, 0.5) for kind in ("sine", "square") for pitch in (110, 220, 330, 440, 660, 880)]
    train, test = clips[::2] + clips[1::4], clips[3::4]
    # 60 Adam steps already fit the band energies well (R^2 about 0.8); 0.5 leaves a margin.
    noisy = latent_probe(_BandEncoder(perfect=False), train, test, seed=0, steps=60)
    assert noisy["latents_r2"] > 0.5 and noisy["decoder_r2"] < 0.0
    # The decoder's R^2 does not depend on the probe: no fitting needed.
    exact = latent_probe(_BandEncoder(perfect=True), train, test, seed=0, steps=0, plot_to=tmp_path / "probe.png")
    assert (tmp_path / "probe.png").stat().st_size > 1000
    assert exact["decoder_r2"] == 1.0
    assert exact["test_clips"] == len(test) and exact["test_frames"] == len(test) * -(-int(0.5 * RATE) // 1024)   # padded to whole latents


def test_latent_statistics_are_channel_mean_and_spread():
    latents = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    assert torch.allclose(latent_statistics(latents), torch.tensor([3.0, 2.0, 2.0, 0.0]))


def test_linear_classifier_learns_separable_classes_and_generalises():
    choices = ("low", "middle", "high")
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])

    def draw(count: int) -> tuple[torch.Tensor, list[str]]:
        index = torch.arange(count) % 3
        return centres[index] + 0.5 * torch.randn(count, 2, generator=generator), [choices[k] for k in index]

    train, labels = draw(60)
    test, truth = draw(30)
    predict = linear_classifier(train, labels, choices, seed=0, steps=300)
    assert predict(test) == truth
    assert linear_classifier(train, labels, choices, seed=0, steps=300)(test[:5]) == truth[:5]


def test_most_taken_for_reports_the_commonest_prediction_per_label():
    predicted = ["organ", "piano", "organ", "flute", "flute", "piano"]
    labels = ["piano", "piano", "piano", "flute", "flute", "marimba"]
    assert most_taken_for(predicted, labels, "piano") == "organ (2 of 3)"
    assert most_taken_for(predicted, labels, "flute") == "flute (2 of 2)"
    assert most_taken_for(predicted, labels, "marimba") == "piano (1 of 1)"
    assert most_taken_for(predicted, labels, "strings") == "-"
    # a tie goes to the prediction seen first
    assert most_taken_for(["flute", "organ"], ["piano", "piano"], "piano") == "flute (1 of 2)"


def test_instrument_prompts_name_the_instrument_and_cycle_through_the_contexts():
    assert instrument_prompt("piano", 0) == "folk music with piano melody in G major at 90 BPM, calm, sparse"
    assert instrument_prompt("flute", 6) == "pop music with flute melody in A minor at 110 BPM, happy, sparse"
    assert all(f"{name} melody" in instrument_prompt(name, 3) for name in MELODY_INSTRUMENTS)
