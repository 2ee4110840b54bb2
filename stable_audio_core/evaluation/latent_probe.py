"""Where timbre is lost, the encoder or the decoder: a spectrum probe on VAE latents.

A small MLP fitted on training clips predicts each frame's log spectrum (2048-point STFT, one
frame per latent, up to 8 kHz) from five latent frames. Its R^2 on held-out clips says what the
latents hold; the R^2 of the decoder's reconstruction on the same frames says what the decoder
gives back (1 = exact, 0 = the mean spectrum).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..atomic_files import atomic_write
from ..errors import InputError

LATENT_PROBE_BINS = 372   # 2048-point STFT bins below 8 kHz at 44.1 kHz


def encode_clip(autoencoder, audio: Tensor) -> Tensor:
    """The latents Tensor[D, L] (posterior mean) of a whole clip Tensor[C, T], padded to whole latents."""
    padded = torch.nn.functional.pad(audio, (0, -audio.shape[-1] % autoencoder.downsampling_ratio))[None]
    with torch.inference_mode():
        return autoencoder.encode(padded)[0]


def reconstruct(autoencoder, audio: Tensor) -> Tensor:
    """A whole clip Tensor[C, T] through encode (mean) -> decode, cut back to its length."""
    with torch.inference_mode():
        return autoencoder.decode(encode_clip(autoencoder, audio)[None])[0, :, : audio.shape[-1]]


def frame_log_spectrum(audio: Tensor, hop: int, frames: int | None = None, floor: float = 1e-4) -> Tensor:
    """Log magnitude (plus `floor`) Tensor[frames, LATENT_PROBE_BINS] of the channel mean of audio
    Tensor[C, T], 2048-point STFT every `hop` samples (one frame per latent in the latent probe);
    the first `frames` frames, or all."""
    spectrum = torch.stft(audio.float().mean(0), 2048, hop, window=torch.hann_window(2048), return_complex=True)
    return (spectrum.abs()[:LATENT_PROBE_BINS, :frames] + floor).log().T


def latent_frames(autoencoder, audio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(five-frame latent context Tensor[L, 5 D], the clip's log spectrum, its reconstruction's)."""
    length = audio.shape[-1]
    padded = torch.nn.functional.pad(audio, (0, -length % autoencoder.downsampling_ratio))[None]
    with torch.inference_mode():
        latents = autoencoder.encode(padded)[0]
        decoded = autoencoder.decode(latents[None])[0]
    frames = latents.shape[-1]
    edged = torch.nn.functional.pad(latents, (2, 2))
    context = torch.cat([edged[:, i:i + frames] for i in range(5)]).T.float()
    hop = autoencoder.downsampling_ratio
    return context, frame_log_spectrum(padded[0], hop, frames), frame_log_spectrum(decoded, hop, frames)


def r_squared(predicted: Tensor, target: Tensor) -> float:
    """Coefficient of determination of predicted Tensor[N, F] against target (per-feature means)."""
    return float(1 - (predicted - target).square().mean() / (target - target.mean(0)).square().mean())


def plot_spectra(panels: dict[str, Tensor], path: str | Path, frame_label: str = "latent frame") -> None:
    """Log spectra Tensor[frames, bins below 8 kHz] side by side, one colour scale, as a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise InputError("plotting needs matplotlib: pip install matplotlib") from error
    low, high = min(float(p.min()) for p in panels.values()), max(float(p.max()) for p in panels.values())
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), dpi=100, sharey=True)
    for axis, (title, spectrum) in zip(axes, panels.items()):
        axis.imshow(spectrum.T.numpy(), origin="lower", aspect="auto", vmin=low, vmax=high,
                    extent=(0, spectrum.shape[0], 0, 8.0))
        axis.set_title(title)
        axis.set_xlabel(frame_label)
    axes[0].set_ylabel("kHz")
    figure.tight_layout()
    try:
        atomic_write(path, lambda temp: figure.savefig(temp, format="png"))
    finally:
        plt.close(figure)


def latent_probe(autoencoder, train: Sequence[Tensor], test: Sequence[Tensor], seed: int,
                 steps: int = 3000, plot_to: str | Path | None = None) -> dict:
    """How much of the spectrum the latents hold (an MLP probe's held-out R^2) against how much the
    decoder gives back (its reconstruction's R^2 on the same frames); `plot_to`: a PNG of the
    first 400 held-out frames, real / probe / decoder."""
    fitted = [latent_frames(autoencoder, clip) for clip in train]
    tested = [latent_frames(autoencoder, clip) for clip in test]
    x, y = torch.cat([f[0] for f in fitted]), torch.cat([f[1] for f in fitted])
    x_test, y_test, decoded = (torch.cat([f[i] for f in tested]) for i in range(3))
    x_mean, x_std, y_mean = x.mean(0), x.std(0) + 1e-6, y.mean(0)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
                                    torch.nn.GELU(), torch.nn.Linear(512, y.shape[1]))
    optimizer = torch.optim.Adam(probe.parameters(), 1e-3)
    with torch.enable_grad():
        for _ in range(steps):
            rows = torch.randint(0, len(x), (256,), generator=generator)
            loss = (probe((x[rows] - x_mean) / x_std) - (y[rows] - y_mean)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = probe((x_test - x_mean) / x_std) + y_mean
    if plot_to is not None:
        shown = slice(0, 400)
        plot_spectra({"real": y_test[shown], "MLP probe on the latents": predicted[shown],
                      "decoder": decoded[shown]}, plot_to)
    return {"train_clips": len(train), "test_clips": len(test), "test_frames": len(y_test),
            "latents_r2": r_squared(predicted, y_test), "decoder_r2": r_squared(decoded, y_test)}
