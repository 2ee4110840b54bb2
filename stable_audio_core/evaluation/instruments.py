"""The instrument check: is the melody instrument a prompt names the one heard?

The default model's dataset (tools/make_dataset.py) names one of `MELODY_INSTRUMENTS` in each
music prompt. The check reads the dataset's single-instrument melody clips (`solo_clips`) to
calibrate and fit the classifiers of `classifiers.py`, and labels audio by CLAP zero-shot
(`zero_shot`: the text "<instrument> melody" nearest to each clip's audio embedding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from torch import Tensor

from ..audio.io import prepare_audio, read_audio
from .classifiers import label_accuracy
from .clap_score import ClapScorer, similarity_matrix

MELODY_INSTRUMENTS = ("piano", "electric piano", "marimba", "organ", "acoustic guitar", "electric guitar",
                      "distorted guitar", "strings", "trumpet", "saxophone", "flute", "synth lead")
# (genre, key, tempo in BPM, mood) of the instrument prompts, taken in turn per seed.
INSTRUMENT_CONTEXTS = (("folk", "G major", 90, "calm"), ("pop", "A minor", 110, "happy"),
                       ("ambient", "D minor", 80, "dreamy"), ("jazz", "F major", 120, "relaxed"),
                       ("rock", "E minor", 100, "energetic"))


def instrument_prompt(name: str, index: int) -> str:
    """The prompt of the `index`-th generation for instrument `name`."""
    genre, key, bpm, mood = INSTRUMENT_CONTEXTS[index % len(INSTRUMENT_CONTEXTS)]
    return f"{genre} music with {name} melody in {key} at {bpm} BPM, {mood}, sparse"


def dataset_rows(data: Path, split: str) -> list[dict]:
    """The manifest rows of a dataset folder (manifest.jsonl + split.json) in `split`, in manifest order."""
    ids = set(json.loads((data / "split.json").read_text())[split])
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [row for row in rows if row["id"] in ids]


def solo_clips(datasets: Sequence[Path], sample_rate: int, per_instrument: int | None = None,
               splits: tuple[str, ...] = ("train", "held_out")) -> tuple[list[Tensor], list[str]]:
    """The single-instrument melody clips of the datasets (`splits`, every one by default), at most
    `per_instrument` of each instrument, in dataset then manifest order: (audio Tensor[2, T] list, labels)."""
    clips, labels = [], []
    for data in datasets:
        for row in [row for split in splits for row in dataset_rows(data, split)]:
            name = row["instruments"][0] if len(row["instruments"]) == 1 else None
            if row["kind"] != "music" or name not in MELODY_INSTRUMENTS or f"{name} melody" not in row["description"]:
                continue
            if per_instrument is not None and labels.count(name) >= per_instrument:
                continue
            audio, rate = read_audio(data / row["path"])
            clips.append(prepare_audio(audio, rate, sample_rate, 2)[0])
            labels.append(name)
    return clips, labels


def zero_shot(scorer: ClapScorer, audio_embeddings: Tensor, labels: Sequence[str],
              choices: Sequence[str] = MELODY_INSTRUMENTS) -> dict:
    """The CLAP zero-shot label ("<instrument> melody") of each clip, from its audio embedding
    Tensor[N, E], scored against `labels`."""
    text = scorer.text_embeddings([f"{name} melody" for name in choices])
    predicted = [choices[p] for p in similarity_matrix(text, audio_embeddings).argmax(dim=0).tolist()]
    return {"count": len(labels), **label_accuracy(predicted, labels, choices), "chance": 1 / len(choices),
            "predicted": predicted, "labels": list(labels)}
