"""Layers that Stable Audio 3's models share: DynamicTanh, differential self-attention and
sliding-window (banded) attention, all over the project's one attention function.

Used by the SAME autoencoder (models/same.py) and the SA3 DiT. Parameter names reproduce the
reference's (stable-audio-3 `models/transformer.py`: `alpha`/`gamma`/`beta`, `to_qkv`, `to_out`,
`q_norm`, `k_norm`), so its checkpoints load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import attention
from .transformer import apply_rotary

# Queries per block of the banded attention: the band's keys are a small halo around each block,
# so memory grows with N * (block + window), not N^2.
SLIDING_WINDOW_BLOCK = 1024


class DynamicTanh(nn.Module):
    """gamma * tanh(alpha * x) + beta over the last dim (Zhu et al. 2025, "Transformers without
    Normalization"); alpha is one learned scalar, gamma and beta are per channel."""

    def __init__(self, dim: int, init_alpha: float = 4.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), init_alpha))
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., dim] -> Tensor[..., dim]."""
        return self.gamma * torch.tanh(self.alpha * x) + self.beta


def sin_pi(x: Tensor) -> Tensor:
    """sin(pi x): the periodic gate activation of SAME-L's last decoder blocks."""
    return torch.sin(math.pi * x)


def _band(query_positions: Tensor, key_positions: Tensor, window: tuple[int, int]) -> Tensor:
    """Bool [Nq, Nk]: key j is within window[0] before and window[1] after query i."""
    offset = key_positions[None, :] - query_positions[:, None]
    return (offset >= -window[0]) & (offset <= window[1])


def sliding_window_attention(q: Tensor, k: Tensor, v: Tensor, window: tuple[int, int],
                             block: int = SLIDING_WINDOW_BLOCK) -> Tensor:
    """Attention where query i sees keys i - window[0] .. i + window[1] (inclusive).

    q, k, v: Tensor[B, H, N, D] -> Tensor[B, H, N, D]. Queries go in blocks of `block` with the
    keys of the block plus the window on each side (a halo), masked to the band: the same result
    as one N x N band mask without materialising it, and no compiler needed.
    """
    length = q.shape[2]
    positions = torch.arange(length, device=q.device)
    outputs = []
    for start in range(0, length, block):
        stop = min(start + block, length)
        key_start, key_stop = max(0, start - window[0]), min(length, stop + window[1])
        mask = _band(positions[start:stop], positions[key_start:key_stop], window)
        outputs.append(attention(q[:, :, start:stop], k[:, :, key_start:key_stop],
                                 v[:, :, key_start:key_stop], mask))
    return torch.cat(outputs, dim=2)


class DifferentialSelfAttention(nn.Module):
    """Differential self-attention (Ye et al. 2024): softmax(q k^T) v - softmax(q' k'^T) v.

    As the SA3 reference has it: one fused projection `to_qkv` Linear(dim, 5 dim, no bias) split
    into q, k, v, q', k' (in that order), the q/k norms applied to both pairs, rotary positions
    to both, a plain difference (no lambda, no group norm), then `to_out` Linear(dim, dim, no bias).

    Args:
        dim: model width; head_dim: width of a head (dim // head_dim heads).
        qk_norm: builds the per-head norm from head_dim (e.g. DynamicTanh), or None for none.
    """

    def __init__(self, dim: int, head_dim: int, *, qk_norm: Callable[[int], nn.Module] | None = None):
        super().__init__()
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.to_qkv = nn.Linear(dim, dim * 5, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        if qk_norm is not None:
            self.q_norm = qk_norm(head_dim)
            self.k_norm = qk_norm(head_dim)

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, rotary_angles: Tensor | None = None, *,
                sliding_window: tuple[int, int] | None = None,
                padding_mask: Tensor | None = None) -> Tensor:  # fmt: skip
        """x: Tensor[B, N, dim] -> Tensor[B, N, dim].

        rotary_angles: Tensor[N, R] (models/transformer.RotaryEmbedding), applied to the first R
        channels of each head. sliding_window: (before, after) in tokens, or None for full
        attention. padding_mask: bool Tensor[B, N], True = valid; padded keys keep their place in
        the softmax with a zero value (the reference's CPU semantics).
        """
        q, k, v, q_diff, k_diff = (self._heads(part) for part in self.to_qkv(x).chunk(5, dim=-1))
        if hasattr(self, "q_norm"):
            q, q_diff = self.q_norm(q), self.q_norm(q_diff)
            k, k_diff = self.k_norm(k), self.k_norm(k_diff)
        if rotary_angles is not None:
            q, k, q_diff, k_diff = (apply_rotary(t, rotary_angles) for t in (q, k, q_diff, k_diff))
        if padding_mask is not None:
            v = v * padding_mask[:, None, :, None].to(v.dtype)
        if sliding_window is None:
            out = attention(q, k, v) - attention(q_diff, k_diff, v)
        else:
            out = (sliding_window_attention(q, k, v, sliding_window)
                   - sliding_window_attention(q_diff, k_diff, v, sliding_window))
        batch, heads, length, head_dim = out.shape
        return self.to_out(out.transpose(1, 2).reshape(batch, length, heads * head_dim))
