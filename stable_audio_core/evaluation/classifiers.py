"""Small classifiers for the instrument check: does a clip sound like the instrument it names?

- ``band_features``: loudness-free timbre features (log band energies) independent of CLAP.
- ``nearest_centroid``: a standardised nearest-centroid classifier with leave-one-out accuracy.
- ``latent_statistics`` + ``linear_classifier``: the same question asked of VAE latents.
- ``label_accuracy`` / ``most_taken_for``: scoring predicted labels against the true ones.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


def label_accuracy(predicted: Sequence[str], labels: Sequence[str], choices: Sequence[str]) -> dict:
    """Overall and per-label accuracy of predicted labels (None for a label with no examples)."""
    hits = [p == label for p, label in zip(predicted, labels)]
    per = {name: [h for h, label in zip(hits, labels) if label == name] for name in choices}
    return {"accuracy": sum(hits) / len(hits),
            "per_instrument": {k: (sum(v) / len(v) if v else None) for k, v in per.items()}}


def most_taken_for(predicted: Sequence[str], labels: Sequence[str], name: str) -> str:
    """What the clips labelled `name` were most often predicted as, with the count ("organ (6 of
    10)"; the first in prediction order on a tie), or "-" when there are none."""
    said = [p for p, label in zip(predicted, labels) if label == name]
    if not said:
        return "-"
    top = max(dict.fromkeys(said), key=said.count)
    return f"{top} ({said.count(top)} of {len(said)})"


def band_features(clips: Sequence[Tensor], sample_rate: int) -> Tensor:
    """Timbre features Tensor[N, 128] of clips Tensor[C, T]: mean and spread over time of 64
    log-spaced band energies (40 Hz - 16 kHz, 2048-point STFT), each frame normalised to its own
    mean level so loudness drops out; frames more than 20 dB (natural log) under the median level
    are skipped."""
    edges = torch.logspace(torch.log10(torch.tensor(40.0)), torch.log10(torch.tensor(16000.0)), 65)
    bins = (edges / (sample_rate / 2) * 1024).long().clamp(max=1024)
    features = []
    for clip in clips:
        power = torch.stft(clip.float().mean(0), 2048, 512, window=torch.hann_window(2048),
                           return_complex=True).abs() ** 2
        bands = torch.stack([power[bins[i]:max(int(bins[i + 1]), int(bins[i]) + 1)].sum(0) for i in range(64)])
        level = (bands + 1e-8).log()
        loud = level.sum(0) > level.sum(0).median() - 20
        level = level[:, loud] if loud.any() else level
        level = level - level.mean(0, keepdim=True)
        features.append(torch.cat([level.mean(1), level.std(1)]))
    return torch.stack(features)


def nearest_centroid(train: Tensor, labels: Sequence[str], test: Tensor,
                     choices: Sequence[str]) -> tuple[float, list[str]]:
    """Standardise on `train` Tensor[N, F]; leave-one-out accuracy on train, predicted labels for
    `test` Tensor[M, F]. A class whose only example is left out has no centroid, so it cannot be
    recalled."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    index = torch.tensor([choices.index(label) for label in labels])

    def centroids(keep: Tensor) -> Tensor:
        rows = []
        for k in range(len(choices)):
            members = keep & (index == k)
            rows.append(train[members].mean(0) if members.any() else torch.full_like(train[0], float("inf")))
        return torch.stack(rows)

    everyone = torch.ones(len(train), dtype=torch.bool)
    hits = 0
    for i in range(len(train)):
        others = everyone.clone()
        others[i] = False
        hits += int(torch.cdist(train[i:i + 1], centroids(others)).argmin()) == int(index[i])
    predicted = torch.cdist(test, centroids(everyone)).argmin(1).tolist()
    return hits / len(train), [choices[p] for p in predicted]


def latent_statistics(latents: Tensor) -> Tensor:
    """A clip's timbre summary in the VAE's latent space: per-channel mean and spread over time
    of its latents Tensor[D, L], Tensor[2 D]."""
    latents = latents.float()
    return torch.cat([latents.mean(-1), latents.std(-1)])


def linear_classifier(train: Tensor, labels: Sequence[str], choices: Sequence[str], seed: int,
                      steps: int = 2000, weight_decay: float = 1e-3) -> Callable[[Tensor], list[str]]:
    """Multinomial logistic regression on standardised features Tensor[N, F] (full-batch Adam);
    returns predict(features Tensor[M, F]) -> M labels."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    target = torch.tensor([choices.index(label) for label in labels])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(train.shape[1], len(choices))
    optimizer = torch.optim.Adam(layer.parameters(), 1e-2, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(layer((train - mean) / std), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def predict(features: Tensor) -> list[str]:
        with torch.no_grad():
            return [choices[k] for k in layer((features - mean) / std).argmax(1).tolist()]
    return predict
