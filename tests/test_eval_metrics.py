"""The metric math of stable_audio_core.evaluation.metrics against stable-audio-metrics' formulas
(written out here from its source: scipy's sqrtm for FD, F.kl_div for KL, F.cosine_similarity for
CLAP) and its window, hop and normalisation rules on edge lengths."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stable_audio_core.errors import InputError
from stable_audio_core.evaluation.metrics import (
    clap_round_trip, cosine_scores, embedding_statistics, frechet_distance, kl_divergence,
    openl3_frame_count, openl3_frames, passt_windows, peak_normalize,
)

EDGE_SECONDS = [0.4, 10.0, 14.9, 15.1, 95.0]


def reference_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """stable-audio-metrics' calculate_frechet_distance (scipy.linalg.sqrtm, eps retry)."""
    linalg = pytest.importorskip("scipy.linalg")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("count,dim", [(400, 32), (20, 32), (150, 256)])
def test_frechet_distance_equals_scipy_sqrtm_formula_within_1e_6_relative(count, dim):
    # (20, 32) and (150, 256) have fewer samples than dimensions: singular covariances, as in
    # a small evaluation set of 1024-d stereo OpenL3 embeddings.
    rng = np.random.default_rng(count)
    generated = rng.standard_normal((count, dim)) @ rng.standard_normal((dim, dim)) * 0.2
    reference = rng.standard_normal((count, dim)) + 0.5
    mu1, sigma1 = embedding_statistics(generated)
    mu2, sigma2 = embedding_statistics(reference)
    expected = reference_frechet_distance(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(1)
    mu, sigma = embedding_statistics(rng.standard_normal((100, 16)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_embedding_statistics_are_mean_and_unbiased_covariance():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = embedding_statistics(x)
    assert np.allclose(mu, [2.0, 4.0])
    assert np.allclose(sigma, np.cov(x.numpy().astype(np.float64), rowvar=False))
    assert sigma[0, 0] == pytest.approx(4.0)  # divides by N - 1


def test_frechet_distance_rejects_mismatched_statistics():
    with pytest.raises(InputError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kl_divergence_equals_reference_kl_div_within_1e_6():
    torch.manual_seed(0)
    generated = F.softmax(torch.randn(5, 527) * 3, dim=-1)
    reference = F.softmax(torch.randn(5, 527) * 3, dim=-1)
    reference[0, :10] = 0.0  # zeros in the reference exercise the epsilon
    ours = kl_divergence(generated, reference)
    for i in range(5):
        expected = F.kl_div((reference[i] + 1e-6).log(), generated[i], reduction="sum", log_target=False)
        assert float(ours[i]) == pytest.approx(float(expected), rel=1e-6, abs=1e-7)


def test_kl_divergence_textbook_example():
    # stable-audio-metrics' src/test_kld.py: KL(P||Q) = 0.5899 (the epsilon moves it in the 5th digit)
    p = torch.tensor([.05, .1, .2, .05, .15, .25, .08, .12])
    q = torch.tensor([.3, .1, .2, .1, .1, .02, .08, .1])
    exact = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    assert float(kl_divergence(p, q, eps=0.0)) == pytest.approx(exact, rel=1e-9)
    assert float(kl_divergence(p, q)) == pytest.approx(0.5898663, abs=1e-6)


def test_cosine_scores_match_reference_cosine_similarity():
    torch.manual_seed(1)
    audio, text = torch.randn(4, 512), torch.randn(4, 512)
    expected = torch.stack([F.cosine_similarity(audio[i:i + 1], text[i:i + 1], dim=1, eps=1e-8)[0]
                            for i in range(4)])
    assert torch.allclose(cosine_scores(audio, text), expected, rtol=1e-6, atol=1e-7)


def test_peak_normalize_puts_the_stereo_peak_at_minus_1_dbfs():
    audio = torch.tensor([[0.1, -0.5, 0.2], [0.05, 0.25, -0.1]])
    out = peak_normalize(audio)
    assert float(out.abs().max()) == pytest.approx(10 ** (-1 / 20), rel=1e-6)
    assert torch.allclose(out / out.abs().max(), audio / 0.5)  # one gain for both channels
    assert torch.equal(peak_normalize(torch.zeros(2, 5)), torch.zeros(2, 5))


def test_clap_round_trip_truncates_to_int16_steps():
    audio = torch.tensor([0.5, -0.5, 1.5, -2.0, 1e-5, 0.99999])
    expected = np.clip(audio.numpy(), -1, 1)
    expected = ((expected * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)
    assert torch.equal(clap_round_trip(audio), torch.from_numpy(expected))


@pytest.mark.parametrize("seconds", EDGE_SECONDS)
def test_openl3_frames_follow_openl3_centering_and_end_padding(seconds):
    samples = round(seconds * 48000)
    audio = torch.arange(1, samples + 1, dtype=torch.float64)
    frames = openl3_frames(audio, hop_seconds=0.5)
    # openl3: pad 24000 in front; pad the end to a whole number of hops; one frame per 0.5 s hop
    padded = samples + 24000
    expected = 1 if padded <= 48000 else 1 + math.ceil((padded - 48000) / 24000)
    assert frames.shape == (expected, 48000) == (openl3_frame_count(samples), 48000)
    assert torch.all(frames[0, :24000] == 0) and frames[0, 24000] == 1
    assert frames[-1].max() == samples  # the last sample is in the last frame
    assert {0.4: 1, 10.0: 20, 14.9: 30, 15.1: 31, 95.0: 190}[seconds] == expected


@pytest.mark.parametrize("seconds", EDGE_SECONDS)
def test_passt_windows_follow_the_reference_rule(seconds):
    samples = round(seconds * 32000)
    audio = torch.ones(samples)
    windows = passt_windows(audio)
    starts = list(range(0, max(160000, samples - 160000), 160000))
    assert len(windows) == len(starts) == {0.4: 1, 10.0: 1, 14.9: 2, 15.1: 3, 95.0: 18}[seconds]
    for start, window in zip(starts, windows):
        remaining = samples - start
        if remaining >= 320000 or remaining > 48000:
            assert window.numel() == 320000  # full, or zero-padded to 10 s
            assert float(window.sum()) == min(remaining, 320000)
        else:
            assert window.numel() == remaining  # a short tail (<= 1.5 s) goes in unpadded


def test_windowing_rejects_empty_and_multichannel_input():
    with pytest.raises(InputError, match="empty"):
        passt_windows(torch.zeros(0))
    with pytest.raises(InputError, match="mono"):
        openl3_frames(torch.zeros(2, 100))


def test_cached_embeddings_and_reference_stats_are_written_whole_and_read_back(tmp_path):
    from stable_audio_core.evaluation.suite import EmbeddingCache, save_reference_stats

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"stand-in: only its name, size and time key the cache")
    cache, calls = EmbeddingCache(tmp_path / "cache"), []
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    first = cache.get(audio, "openl3", lambda: calls.append(1) or value)
    again = cache.get(audio, "openl3", lambda: calls.append(1) or value)
    assert calls == [1] and np.array_equal(first, value) and np.array_equal(again, value)
    stats = {"mu_ref": np.ones(3), "sigma_ref": np.eye(3)}
    path = save_reference_stats(stats, tmp_path / "ref" / "stats.npz")
    with np.load(path) as loaded:
        assert all(np.array_equal(loaded[k], v) for k, v in stats.items())
    written = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert not any(name.startswith(".partial-") for name in written)
    assert "stats.npz" in written and len([n for n in written if n.endswith(".npy")]) == 1
