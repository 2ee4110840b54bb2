"""PaSST audio tagger (hear21passt's base model, ``passt_s_swa_p16_128_ap476``): 527 AudioSet logits.

Front end: pre-emphasis (x[t] - 0.97 x[t-1]), STFT (1024-point FFT, 800-sample symmetric Hann
window, hop 320, centred with reflection), power, 128 Kaldi mel bands (0 to 15 kHz), log(x + 1e-5),
then (x + 4.5) / 5. Network: a ViT on 16x16 patches with stride 10 (12 frequency x up to 99 time
patches), separate frequency and time position embeddings, class and distillation tokens, 12 blocks
of width 768 with 12 heads; the logits are the head applied to the mean of the two tokens.

Weights: the official ``passt-s-f128-p16-s10-ap.476-swa.pt`` state dict (read with
``torch.load(weights_only=True)``); keys with hear21passt's wrapper prefix ``net.`` load too.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError
from .metrics import PASST_RATE

PASST_WEIGHTS_HELP = (
    "download the PaSST checkpoint yourself: passt-s-f128-p16-s10-ap.476-swa.pt from the v0.0.1-audioset "
    "release of the kkoutini/PaSST repository (the file hear21passt's get_basic_model fetches)"
)


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float) -> Tensor:
    """Kaldi's triangular mel filters (mel = 1127 ln(1 + f / 700), triangles in mel), Tensor[num_bins,
    n_fft // 2 + 1] with a zero Nyquist column, in float32 as torchaudio computes them."""
    num_fft_bins = n_fft // 2
    fft_bin_width = sample_rate / n_fft
    mel_low, mel_high = 1127.0 * math.log(1.0 + low_freq / 700.0), 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left, center, right = (mel_low + (index + k) * delta for k in (0.0, 1.0, 2.0))
    mel = (1127.0 * (1.0 + fft_bin_width * torch.arange(num_fft_bins) / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


class PasstMelFrontend(nn.Module):
    """Mono Tensor[B, T] at 32 kHz -> Tensor[B, 128, frames] normalised log mels."""

    def __init__(self, n_mels: int = 128, n_fft: int = 1024, win_length: int = 800, hop_length: int = 320,
                 sample_rate: int = PASST_RATE, fmax_aug_range: int = 2000):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        fmax = sample_rate // 2 - fmax_aug_range // 2  # hear21passt's default when fmax is None
        self.register_buffer("mel_banks", kaldi_mel_banks(n_mels, n_fft, sample_rate, 0.0, fmax), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        x = F.conv1d(audio[:, None], self.preemphasis)[:, 0]
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length, window=self.window,
                          center=True, normalized=False, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = (self.mel_banks @ power + 1e-5).log()
        return (mel + 4.5) / 5.0


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride)


class PaSST(nn.Module):
    """Tensor[B, 1, 128, frames] log mels -> Tensor[B, 527] logits (``forward``), or raw 32 kHz mono
    audio Tensor[B, T] -> logits (``logits``)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, num_classes: int = 527,
                 n_mels: int = 128, max_frames: int = 998, patch: int = 16, stride: int = 10):
        super().__init__()
        grid = ((n_mels - patch) // stride + 1, (max_frames - patch) // stride + 1)
        self.frontend = PasstMelFrontend(n_mels)
        self.patch_embed = PatchEmbed(dim, patch, stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, dim, grid[0], 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, grid[1]))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.head_dist = nn.Linear(dim, num_classes)  # trained with distillation; unused at inference

    def forward(self, mels: Tensor) -> Tensor:
        x = self.patch_embed.proj(mels)  # [B, dim, f, t]
        x = x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)
        batch = x.shape[0]
        cls = self.cls_token.expand(batch, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(batch, -1, -1) + self.new_pos_embed[:, 1:]
        x = self.norm(self.blocks(torch.cat([cls, dist, x], dim=1)))
        return self.head((x[:, 0] + x[:, 1]) / 2)

    def logits(self, audio: Tensor) -> Tensor:
        return self(self.frontend(audio)[:, None])


def load_passt(path: str | Path, device: torch.device | str = "cpu") -> PaSST:
    """The PaSST base tagger with the weights in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"PaSST weights not found: {path}; {PASST_WEIGHTS_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"could not read {path} as a torch state dict ({exc}); {PASST_WEIGHTS_HELP}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = {k.removeprefix("net."): v for k, v in state.items()
             if not k.startswith(("mel.", "device_proxy")) and not k.endswith("num_batches_tracked")}
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    model = PaSST(depth=max(blocks) + 1 if blocks else 12)  # the official file has 12 blocks
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CheckpointError(f"{path} is not a PaSST base checkpoint: missing {missing[:4]}, unexpected "
                              f"{unexpected[:4]}; {PASST_WEIGHTS_HELP}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: shapes do not match PaSST base ({exc}); {PASST_WEIGHTS_HELP}") from exc
    return model.eval().to(device)
