"""Losses of VAE training (paper section 4.2) and two reconstruction metrics.

- `MultiResolutionSTFTLoss`: per STFT resolution, spectral convergence plus the mean absolute
  difference of log magnitudes (Yamamoto et al. 2019, Arik et al. 2018), averaged over
  resolutions, optionally after an A-weighting FIR pre-filter (Wright & Valimaki 2019). The
  semantics are those of the auraloss version stable-audio-tools 0.0.19 trains with: centred
  reflect-padded STFT with a periodic Hann window, magnitudes clamped at ``sqrt(1e-8)``, spectral
  convergence ``||Y - X|| / ||Y||`` normalised by the *second* argument.
- `StereoSTFTLoss`: the paper's stereo arrangement, the mean of the sum (L + R) and difference
  (L - R) losses plus the left/right loss (both channels at half weight each).
- Hinge adversarial losses and feature matching over a multi-scale discriminator's outputs.
- `multiresolution_stft_distance` and `si_sdr`: evaluation metrics on reconstructions.

The KL term lives with the VAE bottleneck (`models.autoencoder.VAEBottleneck.encode_with_kl`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError, InputError

# The paper's reconstruction resolutions (section 4.2); hops are a quarter window (75% overlap).
DEFAULT_FFT_SIZES = (2048, 1024, 512, 256, 128, 64, 32)
# Floor on the squared STFT magnitude before the square root (keeps log() finite on silence).
MAGNITUDE_EPS = 1e-8

# Analog A-weighting (IEC/CD 1672): pole frequencies in Hz and the gain in dB that puts 1 kHz at 0 dB.
A_WEIGHTING_POLES_HZ = (20.598997, 107.65265, 737.86223, 12194.217)
A_WEIGHTING_GAIN_1KHZ_DB = 1.9997
# The least-squares FIR that approximates it: taps, and the frequency grid it is fitted on.
A_WEIGHTING_TAPS = 101
A_WEIGHTING_GRID = 512


# --------------------------------------------------------------------------------------------
# A-weighting
# --------------------------------------------------------------------------------------------


def a_weighting_gain(frequencies_hz: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """|H(j 2 pi f)| of the analog A-weighting filter (linear gain; 1.0 at 1 kHz)."""
    f = np.asarray(frequencies_hz, dtype=np.float64)
    f1, f2, f3, f4 = A_WEIGHTING_POLES_HZ
    f_sq = f * f
    # H(s) = K s^4 / ((s + w4)^2 (s + w1)^2 (s + w3) (s + w2)), K = w4^2 * 10^(A1000 / 20); the
    # 2 pi factors cancel between numerator and denominator, so frequencies stay in Hz.
    numerator = (f4 * f4) * 10 ** (A_WEIGHTING_GAIN_1KHZ_DB / 20) * f_sq * f_sq
    denominator = (f_sq + f4 * f4) * (f_sq + f1 * f1) * np.sqrt((f_sq + f3 * f3) * (f_sq + f2 * f2))
    return numerator / denominator


def a_weighting_db(frequencies_hz: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The A-weighting curve in dB (0 dB at 1 kHz, about -19.1 dB at 100 Hz)."""
    return 20 * np.log10(a_weighting_gain(frequencies_hz))


def _least_squares_linear_phase_fir(num_taps: int, band_edges: np.ndarray,
                                    desired: np.ndarray) -> np.ndarray:
    """Type-I FIR minimising the integrated squared error to a piecewise-linear response.

    band_edges: normalised frequencies (1 = Nyquist) as consecutive (start, stop) pairs; desired:
    the gains at those edges (linear inside a band, gaps between bands ignored). Solves the normal
    equations of A(f) = sum_n c_n cos(pi n f), n = 0..M, with unit weight on every band.
    """
    order = (num_taps - 1) // 2
    lo, hi = band_edges[0::2], band_edges[1::2]
    d_lo, d_hi = desired[0::2], desired[1::2]

    def integral_of_cos(m: np.ndarray) -> np.ndarray:
        # sum over bands of int cos(pi m f) df; f * sinc(m f) = sin(pi m f) / (pi m), and f at m = 0.
        m = m[..., None]
        return (hi * np.sinc(m * hi) - lo * np.sinc(m * lo)).sum(-1)

    n = np.arange(order + 1)
    gram = 0.5 * (integral_of_cos(np.abs(n[:, None] - n[None, :])) + integral_of_cos(n[:, None] + n[None, :]))

    slope = (d_hi - d_lo) / (hi - lo)
    offset = d_lo - slope * lo
    k = n[1:, None]
    # int (slope f + offset) cos(pi k f) df, by parts for k > 0.
    def antiderivative(f: np.ndarray) -> np.ndarray:
        return ((slope * f + offset) * np.sin(np.pi * k * f) / (np.pi * k)
                + slope * np.cos(np.pi * k * f) / (np.pi * k) ** 2)
    rhs = np.empty(order + 1)
    rhs[0] = (slope * (hi**2 - lo**2) / 2 + offset * (hi - lo)).sum()
    rhs[1:] = (antiderivative(hi) - antiderivative(lo)).sum(-1)

    coefficients = np.linalg.solve(gram, rhs)
    half = coefficients[1:] / 2
    return np.concatenate([half[::-1], coefficients[:1], half])


def a_weighting_fir(sample_rate: int, num_taps: int = A_WEIGHTING_TAPS) -> Tensor:
    """Tensor[num_taps] float32: the linear-phase FIR the reference's perceptual weighting uses.

    The analog A-weighting filter is taken to discrete time with the bilinear transform (no
    pre-warping), its magnitude sampled at 512 frequencies k * fs / 1024 (the digital response
    at w equals the analog one at 2 fs tan(w / 2)), and a `num_taps` FIR is fitted to those
    samples by least squares, the grid read as consecutive band-edge pairs.
    """
    if num_taps % 2 == 0:
        raise InputError(f"the A-weighting FIR needs an odd number of taps, got {num_taps}")
    normalised = np.arange(A_WEIGHTING_GRID) / A_WEIGHTING_GRID          # 1 = Nyquist
    analog_hz = 2 * sample_rate * np.tan(np.pi * normalised / 2) / (2 * np.pi)
    taps = _least_squares_linear_phase_fir(num_taps, normalised, a_weighting_gain(analog_hz))
    return torch.from_numpy(taps.astype(np.float32))


# --------------------------------------------------------------------------------------------
# STFT losses
# --------------------------------------------------------------------------------------------


def _float32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float32 else x.float()


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + L1 log-magnitude distance, averaged over STFT resolutions.

    forward(x: Tensor[B, C, T], y: Tensor[B, C, T]) -> scalar. Channels are independent items.
    Per resolution: mean over items of ||Y - X||_F / ||Y||_F (weight `w_sc`) plus the mean of
    |log|X| - log|Y|| over items, bins and frames (weight `w_log_mag`). Computed in float32
    outside autocast.

    Args:
        fft_sizes: FFT size per resolution.
        hop_sizes: hop per resolution (default a quarter of the FFT size).
        win_lengths: Hann window length per resolution (default the FFT size).
        sample_rate: needed for `perceptual_weighting`.
        perceptual_weighting: A-weight both signals with `a_weighting_fir` first.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
        hop_sizes: Sequence[int] | None = None,
        win_lengths: Sequence[int] | None = None,
        *,
        sample_rate: int | None = None,
        perceptual_weighting: bool = False,
        w_sc: float = 1.0,
        w_log_mag: float = 1.0,
    ):
        super().__init__()
        self.fft_sizes = [int(n) for n in fft_sizes]
        self.hop_sizes = [n // 4 for n in self.fft_sizes] if hop_sizes is None else [int(h) for h in hop_sizes]
        self.win_lengths = list(self.fft_sizes) if win_lengths is None else [int(w) for w in win_lengths]
        if not self.fft_sizes or not len(self.fft_sizes) == len(self.hop_sizes) == len(self.win_lengths):
            raise ConfigError(
                f"STFT loss: fft_sizes {self.fft_sizes}, hop_sizes {self.hop_sizes} and win_lengths "
                f"{self.win_lengths} must be non-empty lists of the same length"
            )
        if any(w > n or h < 1 for n, h, w in zip(self.fft_sizes, self.hop_sizes, self.win_lengths)):
            raise ConfigError("STFT loss: every hop must be >= 1 and every window <= its FFT size")
        if perceptual_weighting and not sample_rate:
            raise ConfigError("STFT loss: perceptual_weighting needs the sample_rate")
        self.sample_rate = sample_rate
        self.perceptual_weighting = perceptual_weighting
        self.w_sc = float(w_sc)
        self.w_log_mag = float(w_log_mag)
        for i, length in enumerate(self.win_lengths):
            self.register_buffer(f"window_{i}", torch.hann_window(length), persistent=False)
        fir = a_weighting_fir(sample_rate) if perceptual_weighting else torch.zeros(0)
        self.register_buffer("a_weighting", fir, persistent=False)

    @property
    def min_length(self) -> int:
        """Shortest input the centred, reflect-padded STFTs accept."""
        return max(self.fft_sizes) // 2 + 1

    def _weight(self, signals: Tensor) -> Tensor:
        """Tensor[N, T] -> A-weighted Tensor[N, T] (same length; zero padding at the ends)."""
        taps = self.a_weighting.view(1, 1, -1)
        return F.conv1d(signals.unsqueeze(1), taps, padding=taps.shape[-1] // 2).squeeze(1)

    def _magnitude(self, signals: Tensor, i: int) -> Tensor:
        spectrum = torch.stft(signals, self.fft_sizes[i], self.hop_sizes[i], self.win_lengths[i],
                              getattr(self, f"window_{i}"), center=True, pad_mode="reflect",
                              return_complex=True)  # fmt: skip
        power = spectrum.real.square() + spectrum.imag.square()
        return power.clamp(min=MAGNITUDE_EPS).sqrt()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.dim() != 3:
            raise InputError(f"STFT loss needs two Tensor[B, C, T] of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")  # fmt: skip
        if x.shape[-1] < self.min_length:
            raise InputError(f"STFT loss needs at least {self.min_length} samples for FFT size "
                             f"{max(self.fft_sizes)}, got {x.shape[-1]}")  # fmt: skip
        with torch.autocast(x.device.type, enabled=False):
            x = _float32(x).reshape(-1, x.shape[-1])
            y = _float32(y).reshape(-1, y.shape[-1])
            if self.perceptual_weighting:
                x, y = self._weight(x), self._weight(y)
            total = x.new_zeros(())
            for i in range(len(self.fft_sizes)):
                x_mag, y_mag = self._magnitude(x, i), self._magnitude(y, i)
                if self.w_sc:
                    convergence = (torch.linalg.vector_norm(y_mag - x_mag, dim=(-2, -1))
                                   / torch.linalg.vector_norm(y_mag, dim=(-2, -1)))  # fmt: skip
                    total = total + self.w_sc * convergence.mean()
                if self.w_log_mag:
                    total = total + self.w_log_mag * (x_mag.log() - y_mag.log()).abs().mean()
            return total / len(self.fft_sizes)


def sum_and_difference(audio: Tensor) -> tuple[Tensor, Tensor]:
    """Stereo Tensor[B, 2, T] -> (L + R, L - R), each Tensor[B, 1, T]."""
    if audio.dim() != 3 or audio.shape[1] != 2:
        raise InputError(f"sum and difference needs stereo Tensor[B, 2, T], got {tuple(audio.shape)}")
    left, right = audio[:, :1], audio[:, 1:]
    return left + right, left - right


class StereoSTFTLoss(nn.Module):
    """The paper's reconstruction loss: multi-resolution STFT on sum and difference plus left/right.

    forward(x, y: Tensor[B, C, T]) -> (loss, parts). For stereo: loss = mean of the sum and the
    difference losses + mean of the left and right losses (stable-audio-tools weighs the first 1.0
    and left, right 0.5 each); parts has "stft_sum_diff" and "stft_left_right". For mono the loss
    is the plain multi-resolution loss ("stft_mono"). Argument order matters only through the
    spectral convergence's normaliser, which is ``y``.
    """

    def __init__(self, resolution_loss: MultiResolutionSTFTLoss):
        super().__init__()
        self.resolution_loss = resolution_loss

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if x.shape[1] != 2:
            loss = self.resolution_loss(x, y)
            return loss, {"stft_mono": loss}
        x_sum, x_diff = sum_and_difference(x)
        y_sum, y_diff = sum_and_difference(y)
        sum_diff = (self.resolution_loss(x_sum, y_sum) + self.resolution_loss(x_diff, y_diff)) / 2
        # Folding both channels into the batch averages the left and right losses exactly.
        left_right = self.resolution_loss(x, y)
        return sum_diff + left_right, {"stft_sum_diff": sum_diff, "stft_left_right": left_right}


# --------------------------------------------------------------------------------------------
# Adversarial losses
# --------------------------------------------------------------------------------------------


def _check_scales(real: Sequence, fake: Sequence) -> None:
    if len(real) != len(fake) or not real:
        raise InputError(f"discriminator outputs disagree: {len(real)} real vs {len(fake)} fake scales")


def hinge_discriminator_loss(real_logits: Sequence[Tensor], fake_logits: Sequence[Tensor]) -> Tensor:
    """Mean over scales of mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    _check_scales(real_logits, fake_logits)
    terms = [F.relu(1 - _float32(r)).mean() + F.relu(1 + _float32(f)).mean()
             for r, f in zip(real_logits, fake_logits)]  # fmt: skip
    return torch.stack(terms).mean()


def hinge_generator_loss(fake_logits: Sequence[Tensor]) -> Tensor:
    """Mean over scales of -mean(D(fake))."""
    if not fake_logits:
        raise InputError("hinge generator loss needs at least one discriminator scale")
    return torch.stack([-_float32(f).mean() for f in fake_logits]).mean()


def feature_matching_loss(real_features: Sequence[Sequence[Tensor]],
                          fake_features: Sequence[Sequence[Tensor]],
                          normalize: bool = False) -> Tensor:
    """Mean over scales of the mean over layers of mean |real - fake| (L1 per feature map).

    normalize: divide each layer's distance by mean |real| + 1e-3 (the reference's
    `normalize_losses` option; off in the paper's configuration).
    """
    _check_scales(real_features, fake_features)
    per_scale = []
    for real_maps, fake_maps in zip(real_features, fake_features):
        _check_scales(real_maps, fake_maps)
        distances = []
        for real, fake in zip(real_maps, fake_maps):
            real, fake = _float32(real), _float32(fake)
            distance = (real - fake).abs().mean()
            if normalize:
                distance = distance / (real.abs().mean() + 1e-3)
            distances.append(distance)
        per_scale.append(torch.stack(distances).mean())
    return torch.stack(per_scale).mean()


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _as_batch(audio: Tensor, name: str) -> Tensor:
    if audio.dim() == 2:
        return audio.unsqueeze(0)
    if audio.dim() != 3:
        raise InputError(f"{name} must be Tensor[C, T] or Tensor[B, C, T], got {tuple(audio.shape)}")
    return audio


@torch.no_grad()
def multiresolution_stft_distance(
    estimate: Tensor,
    reference: Tensor,
    *,
    fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
    sample_rate: int | None = None,
    perceptual_weighting: bool = False,
) -> float:
    """Multi-resolution STFT distance of `estimate` from `reference` (lower is better; 0 if equal).

    Tensor[C, T] or Tensor[B, C, T] each (T at least max(fft_sizes) // 2 + 1); spectral
    convergence is normalised by the reference's magnitude; hops are a quarter of each FFT size.
    """
    estimate, reference = _as_batch(estimate, "estimate"), _as_batch(reference, "reference")
    loss = MultiResolutionSTFTLoss(fft_sizes, sample_rate=sample_rate,
                                   perceptual_weighting=perceptual_weighting).to(estimate.device)
    return float(loss(estimate, reference))


@torch.no_grad()
def si_sdr(estimate: Tensor, reference: Tensor, *, zero_mean: bool = True, eps: float = 1e-8) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2018; higher is better).

    Tensor[C, T] or Tensor[B, C, T] each; the mean over items and channels of
    10 log10(||a s||^2 / ||e - a s||^2) with a = <e, s> / ||s||^2 (s: reference, e: estimate),
    the negative of auraloss' SISDRLoss.
    """
    estimate, reference = _as_batch(estimate, "estimate"), _as_batch(reference, "reference")
    if estimate.shape != reference.shape:
        raise InputError(f"si_sdr needs one shape, got {tuple(estimate.shape)} and {tuple(reference.shape)}")
    estimate, reference = estimate.double(), reference.double()
    if zero_mean:
        estimate = estimate - estimate.mean(-1, keepdim=True)
        reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.square().sum(-1, keepdim=True) + eps)
    target = scale * reference
    residual = estimate - target
    ratio = target.square().sum(-1) / (residual.square().sum(-1) + eps)
    return float((10 * torch.log10(ratio + eps)).mean())
