"""The paper's evaluation metrics (sec. 5.1) as Stability-AI/stable-audio-metrics computes them.

- FD_openl3: ``embedding_statistics`` (mean, unbiased covariance) of per-window OpenL3 embeddings,
  then ``frechet_distance`` with the reference's epsilon retry.
- KL_passt: ``passt_windows`` splits a clip into PaSST's 10 s inputs (5 s overlap); logits are
  averaged over windows, then softmaxed; ``kl_divergence`` is KL(generated || reference + 1e-6).
- CLAP score: ``clap_round_trip`` (int16 quantisation the reference applies) and
  ``cosine_scores``.
- ``peak_normalize`` (-1 dBFS) and ``openl3_frames`` (1 s windows, centred, 0.5 s hop) are the
  input rules shared by the embedders.

Arrays are float64 NumPy for the statistics (the reference works in NumPy float64) and torch
tensors for audio.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

OPENL3_RATE = 48000
PASST_RATE = 32000
CLAP_RATE = 48000
FD_EPSILON = 1e-6
KL_EPSILON = 1e-6


def peak_normalize(audio: Tensor, target_db: float = -1.0) -> Tensor:
    """Scale so the largest |sample| over all channels is ``target_db`` dBFS (pyloudnorm's
    ``normalize.peak``); silence stays silence instead of becoming NaN."""
    peak = audio.abs().max() if audio.numel() else torch.tensor(0.0)
    if peak <= 0:
        return audio.clone()
    return audio * (10.0 ** (target_db / 20.0) / peak)


def embedding_statistics(embeddings: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [N, D] -> (mean [D], unbiased covariance [D, D]) in float64 (``np.cov``)."""
    x = np.asarray(embeddings.detach().cpu() if isinstance(embeddings, Tensor) else embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"need at least 2 embeddings of shape [N, D] for a covariance, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> complex:
    """Tr(sqrtm(sigma1 @ sigma2)): the sum of the principal square roots of the product's eigenvalues,
    which is what the trace of scipy's (Schur-based) sqrtm adds up. The eigenvalues are read from the
    similar symmetric matrix sqrt(sigma1) sigma2 sqrt(sigma1) when sigma1 is PSD (more accurate), from
    the product itself otherwise."""
    w1, v1 = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    if w1.min() >= -1e-10 * max(1.0, abs(w1).max()) and np.allclose(sigma2, sigma2.T):
        root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
        inner = root1 @ sigma2 @ root1
        eig = np.linalg.eigvalsh((inner + inner.T) / 2).astype(np.complex128)
    else:
        eig = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
    return complex(np.sqrt(eig).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FD_EPSILON) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)) (pytorch-fid's formula as
    stable-audio-metrics uses it): a non-finite square root is retried with ``eps`` added to both
    diagonals; an imaginary part above 1e-3 is an error."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise InputError(f"statistics do not match: means {mu1.shape} vs {mu2.shape}, "
                         f"covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2)
    if not np.isfinite(tr_covmean):
        offset = np.eye(sigma1.shape[0]) * eps
        tr_covmean = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    if abs(tr_covmean.imag) > 1e-3:
        raise InputError(f"Frechet distance: imaginary component {tr_covmean.imag:.3g} in the covariance "
                         "square root (the statistics are not covariances)")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean.real)


def kl_divergence(generated_probs: Tensor, reference_probs: Tensor, eps: float = KL_EPSILON) -> Tensor:
    """KL(generated || reference) per clip: sum p log(p / (q + eps)) with 0 log 0 = 0, as the
    reference's ``F.kl_div((q + eps).log(), p, reduction='sum')``. [..., K] -> [...]."""
    p, q = generated_probs.double(), reference_probs.double()
    return (torch.xlogy(p, p) - p * (q + eps).log()).sum(dim=-1)


def passt_windows(audio: Tensor, rate: int = PASST_RATE, window_seconds: float = 10.0,
                  overlap_seconds: float = 5.0) -> list[Tensor]:
    """Mono Tensor[T] -> PaSST inputs: 10 s windows every 5 s starting below max(step, T - step);
    a short last window is zero-padded to 10 s when longer than 15 % of it and passed as it is
    otherwise (stable-audio-metrics' rule, after MusicGen)."""
    if audio.dim() != 1:
        raise InputError(f"passt_windows takes mono Tensor[T], got shape {tuple(audio.shape)}")
    if audio.numel() == 0:
        raise InputError("cannot evaluate an empty clip")
    step = int((window_seconds - overlap_seconds) * rate)
    size = int(window_seconds * rate)
    windows = []
    for start in range(0, max(step, audio.numel() - step), step):
        window = audio[start:start + size]
        if window.numel() < size and window.numel() > int(size * 0.15):
            window = torch.nn.functional.pad(window, (0, size - window.numel()))
        windows.append(window)
    return windows


def openl3_frames(audio: Tensor, hop_seconds: float = 0.5, rate: int = OPENL3_RATE) -> Tensor:
    """Mono Tensor[T] at 48 kHz -> Tensor[N, 48000]: openl3's ``center=True`` framing (half a
    window of zeros in front, the end zero-padded so every sample is in a frame)."""
    if audio.dim() != 1:
        raise InputError(f"openl3_frames takes mono Tensor[T], got shape {tuple(audio.shape)}")
    if audio.numel() == 0:
        raise InputError("cannot evaluate an empty clip")
    frame, hop = rate, int(hop_seconds * rate)
    audio = torch.nn.functional.pad(audio, (frame // 2, 0))
    length = audio.numel()
    pad = frame - length if length < frame else math.ceil((length - frame) / hop) * hop - (length - frame)
    audio = torch.nn.functional.pad(audio, (0, max(pad, 0)))
    count = 1 + (audio.numel() - frame) // hop
    return audio.unfold(0, frame, hop)[:count]


def openl3_frame_count(samples_48k: int, hop_seconds: float = 0.5) -> int:
    """How many windows ``openl3_frames`` makes from a clip of that many 48 kHz samples."""
    frame, hop = OPENL3_RATE, int(hop_seconds * OPENL3_RATE)
    length = samples_48k + frame // 2
    return 1 if length <= frame else 1 + math.ceil((length - frame) / hop)


def clap_round_trip(audio: Tensor) -> Tensor:
    """float -> int16 -> float as the reference (after LAION-CLAP's example): clip to [-1, 1],
    truncate x * 32767 toward zero, divide by 32767."""
    quantised = (audio.float().clamp(-1.0, 1.0) * 32767.0).to(torch.int16)
    return (quantised.double() / 32767.0).float()


def cosine_scores(audio_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """Row-wise cosine similarity, eps 1e-8 as ``F.cosine_similarity`` in the reference. [N, P] -> [N]."""
    return torch.nn.functional.cosine_similarity(audio_embeds.float(), text_embeds.float(), dim=1, eps=1e-8)


def mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
