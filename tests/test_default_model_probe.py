"""The decoder-domain instrument probe of tools/default_model/evaluate.py: band-energy features
tell timbres apart regardless of loudness, and the nearest-centroid classifier reports honest
leave-one-out accuracy (a class with a single example cannot be recalled)."""

import importlib.util
import math
from pathlib import Path

import torch

SPEC = importlib.util.spec_from_file_location(
    "default_model_evaluate", Path(__file__).resolve().parents[1] / "tools" / "default_model" / "evaluate.py")
evaluate = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(evaluate)

RATE = 44100


def _tone(kind: str, pitch: float, gain: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    phase = 2 * math.pi * pitch * t
    wave = torch.sin(phase) if kind == "sine" else torch.sign(torch.sin(phase)) * 0.5
    return (gain * wave).expand(2, -1).clone()


def test_band_features_separate_timbres_and_ignore_loudness():
    loud, quiet, square = (_tone("sine", 440, 0.5), _tone("sine", 440, 0.05), _tone("square", 440, 0.5))
    features = evaluate.band_features([loud, quiet, square], RATE)
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
    train = evaluate.band_features(train_clips, RATE)
    accuracy, predicted = evaluate.nearest_centroid(train, labels, evaluate.band_features(test_clips, RATE), choices)
    assert accuracy == 8 / 9
    assert predicted == ["square", "sine"]
