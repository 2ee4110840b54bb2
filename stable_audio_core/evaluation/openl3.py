"""OpenL3 audio embedding network (mel256 input, "music" or "env" content type, 512-d output).

The network as openl3 0.4.2 builds it in Keras: a kapre mel spectrogram front end (1 s of 48 kHz
audio, 2048-point STFT every 242 samples, end padded, periodic Hann window, magnitude, 256 Slaney
mel bands, kapre 0.1.4-style decibels relative to the window's maximum, floored at -80 dB), then
batch norm and four conv blocks (64, 128, 256, 512 filters; 3x3 'same' convs with batch norm and
ReLU; 2x2 max pools after the first three), the 512-filter embedding conv and a (32, 24) max pool.

Weights: the ``openl3_audio_mel256_{music,env}.h5`` files openl3 ships (needs h5py), or
torchopenl3's converted ``torchopenl3_mel256_{music,env}_512.pth.tar`` state dicts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio.features import mel_filterbank
from ..errors import CheckpointError
from .metrics import OPENL3_RATE

OPENL3_WEIGHTS_HELP = (
    "download openl3's weights yourself: the file openl3_audio_mel256_music.h5 (or _env.h5) inside the "
    "openl3 0.4.2 package from PyPI (pip download openl3==0.4.2, unzip, openl3/*.h5), or torchopenl3's "
    "torchopenl3_mel256_music_512.pth.tar from the torchopenl3/torchopenl3-models repository"
)

CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 512)
POOL_AFTER = (2, 4, 6)  # convs followed by a 2x2 max pool (the end of each block)
BN_EPS = 1e-3  # Keras' BatchNormalization default


class KapreMelFrontend(nn.Module):
    """Tensor[B, 48000] -> Tensor[B, 1, n_mels, frames] decibels (openl3 0.4.2's kapre front end)."""

    def __init__(self, n_mels: int = 256, n_fft: int = 2048, hop_length: int = 242, sample_rate: int = OPENL3_RATE,
                 dynamic_range: float = 80.0):
        super().__init__()
        self.n_fft, self.hop_length, self.dynamic_range = n_fft, hop_length, dynamic_range
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=torch.float64), persistent=False)
        filters = mel_filterbank(n_fft // 2 + 1, n_mels, 0.0, sample_rate / 2, sample_rate,
                                 mel_scale="slaney", slaney_norm=True)  # kapre 0.3's librosa-style filters
        self.register_buffer("mel_filters", filters.float(), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        frames = math.ceil(audio.shape[-1] / self.hop_length)  # tf.signal.stft(pad_end=True)
        padded = F.pad(audio.double(), (0, (frames - 1) * self.hop_length + self.n_fft - audio.shape[-1]))
        segments = padded.unfold(-1, self.n_fft, self.hop_length)[:, :frames] * self.window
        magnitude = torch.fft.rfft(segments, dim=-1).abs().float()  # [B, frames, bins]
        mel = magnitude @ self.mel_filters  # [B, frames, n_mels]
        decibels = 10.0 * torch.log10(mel.clamp_min(1e-10))
        decibels = decibels - decibels.amax(dim=(1, 2), keepdim=True)
        return decibels.clamp_min(-self.dynamic_range).transpose(1, 2)[:, None]


class OpenL3(nn.Module):
    """1 s windows at 48 kHz, Tensor[B, 48000] -> Tensor[B, 512] embeddings."""

    def __init__(self, n_mels: int = 256, embedding_size: int = 512):
        super().__init__()
        if (n_mels, embedding_size) != (256, 512):
            raise CheckpointError("only the mel256 input with 512-d embeddings (FD_openl3's setting) is built")
        self.frontend = KapreMelFrontend(n_mels)
        self.batch_normalization_1 = nn.BatchNorm2d(1, eps=BN_EPS)
        in_channels = 1
        for index, channels in enumerate(CONV_CHANNELS, start=1):
            setattr(self, f"conv2d_{index}", nn.Conv2d(in_channels, channels, 3, padding=1))
            setattr(self, f"batch_normalization_{index + 1}", nn.BatchNorm2d(channels, eps=BN_EPS))
            in_channels = channels
        self.audio_embedding_layer = nn.Conv2d(512, 512, 3, padding=1)
        self.pool_size = (32, 24)

    def embed_spectrogram(self, spec: Tensor) -> Tensor:
        """Tensor[B, 1, 256, 199] front-end output -> Tensor[B, 512]."""
        x = self.batch_normalization_1(spec)
        for index in range(1, len(CONV_CHANNELS) + 1):
            x = getattr(self, f"conv2d_{index}")(x)
            x = F.relu(getattr(self, f"batch_normalization_{index + 1}")(x))
            if index in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        x = self.audio_embedding_layer(x)
        x = F.max_pool2d(x, self.pool_size, ceil_mode=True)  # Keras 'same' pooling: one output cell
        return x.flatten(1)

    def forward(self, audio: Tensor) -> Tensor:
        return self.embed_spectrogram(self.frontend(audio))


def _h5_state_dict(path: Path) -> dict[str, Tensor]:
    """Keras weights (.h5) -> our state dict: batch norms and convs in the order Keras lists them."""
    try:
        import h5py
    except ImportError as exc:
        raise CheckpointError(f"{path} is a Keras .h5 file; reading it needs h5py (pip install h5py), "
                              "or use torchopenl3's .pth.tar file instead") from exc
    norms, convs = [], []
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n for n in root.attrs.get("layer_names", list(root.keys()))]
        for name in names:
            group = root[name]
            weight_names = [w.decode() if isinstance(w, bytes) else w for w in group.attrs.get("weight_names", [])]
            arrays = {w.split("/")[-1].split(":")[0]: np.asarray(group[w]) for w in weight_names}
            if "kernel" in arrays:
                convs.append(arrays)
            elif "gamma" in arrays:
                norms.append(arrays)
    if len(norms) != 8 or len(convs) != 8:
        raise CheckpointError(f"{path}: expected 8 batch norms and 8 convs of openl3's audio network, "
                              f"found {len(norms)} and {len(convs)}; {OPENL3_WEIGHTS_HELP}")
    state = {}
    for index, bn in enumerate(norms, start=1):
        prefix = f"batch_normalization_{index}."
        state[prefix + "weight"] = torch.from_numpy(bn["gamma"])
        state[prefix + "bias"] = torch.from_numpy(bn["beta"])
        state[prefix + "running_mean"] = torch.from_numpy(bn["moving_mean"])
        state[prefix + "running_var"] = torch.from_numpy(bn["moving_variance"])
    for index, conv in enumerate(convs, start=1):
        prefix = "audio_embedding_layer." if index == 8 else f"conv2d_{index}."
        state[prefix + "weight"] = torch.from_numpy(conv["kernel"]).permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        state[prefix + "bias"] = torch.from_numpy(conv["bias"])
    return state


def load_openl3(path: str | Path, device: torch.device | str = "cpu") -> OpenL3:
    """An OpenL3 network with the weights in ``path`` (.h5 from openl3, or torchopenl3's .pth.tar)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"OpenL3 weights not found: {path}; {OPENL3_WEIGHTS_HELP}")
    if path.suffix == ".h5":
        state = _h5_state_dict(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"could not read {path} as a torch state dict ({exc}); {OPENL3_WEIGHTS_HELP}") from exc
        state = {k: v for k, v in state.items() if not k.startswith("speclayer.")}  # torchopenl3's front-end constants
    model = OpenL3()
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CheckpointError(f"{path} is not an OpenL3 mel256 audio network: missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}; {OPENL3_WEIGHTS_HELP}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: shapes do not match OpenL3 mel256 ({exc}); {OPENL3_WEIGHTS_HELP}") from exc
    return model.eval().to(device)
