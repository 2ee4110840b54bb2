"""Layers that Stable Audio 3's models share: DynamicTanh, the one self-attention module (plain or
differential, with q/k norms, rotary positions, padding and sliding windows) and sliding-window
(banded) attention, all over the project's one attention function.

Used by the SAME autoencoder (models/same.py) and the SA3 DiT. Parameter names reproduce the
reference's (stable-audio-3 `models/transformer.py`: `alpha`/`gamma`/`beta`, `to_qkv`, `to_out`,
`q_norm`, `k_norm`), so its checkpoints load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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


QKNormFactory = Callable[[int], nn.Module]


class L2Norm(nn.Module):
    """x / max(||x||, eps) over the last dim: the parameter-free `qk_norm` "l2"."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1, eps=self.eps)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """Tensor[B, N, H*D] -> Tensor[B, H, N, D]."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """Tensor[B, H, N, D] -> Tensor[B, N, H*D]."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def attend(queries: list[Tensor], keys: list[Tensor], v: Tensor,
           sliding_window: tuple[int, int] | None = None) -> Tensor:
    """attention(q, k, v), or with a second pair the differential form (Ye et al. 2024)
    attention(q, k, v) - attention(q', k', v): two softmax maps over the same values, no lambda
    and no group norm, as stable-audio-3 has it. Shapes as `attention` ([B, H, N, D])."""

    def one(q: Tensor, k: Tensor) -> Tensor:
        if sliding_window is None:
            return attention(q, k, v)
        return sliding_window_attention(q, k, v, sliding_window)

    out = one(queries[0], keys[0])
    return out - one(queries[1], keys[1]) if len(queries) == 2 else out


def add_output_and_qk_norms(module: nn.Module, dim: int, head_dim: int, qk_norm: QKNormFactory | None,
                            zero_init_output: bool) -> None:
    """Give an attention module `to_out` Linear(dim, dim, no bias) and, with a factory, the
    per-head `q_norm` and `k_norm` (registered in the reference's order)."""
    module.to_out = nn.Linear(dim, dim, bias=False)
    if zero_init_output:
        nn.init.zeros_(module.to_out.weight)
    if qk_norm is not None:
        module.q_norm = qk_norm(head_dim)
        module.k_norm = qk_norm(head_dim)


class SelfAttention(nn.Module):
    """Self-attention of SA3's DiT and SAME: one fused projection `to_qkv` Linear(dim, 3 dim) giving
    q, k, v or, differential, Linear(dim, 5 dim) giving q, k, v, q', k' (in that order); the q/k
    norms applied to every query/key, rotary positions to them, then `to_out` Linear(dim, dim).

    Args:
        dim: model width; head_dim: width of a head (dim // head_dim heads).
        differential: subtract a second softmax map (see `attend`).
        qk_norm: builds the per-head norm from head_dim (RMSNorm for the DiT, DynamicTanh for
            SAME), or None for none.
        zero_init_output: start `to_out` at zero (the DiT's initialisation; weights load over it).
    """

    def __init__(self, dim: int, head_dim: int, *, differential: bool = False,
                 qk_norm: QKNormFactory | None = None, zero_init_output: bool = False):
        super().__init__()
        self.num_heads = dim // head_dim
        self.parts = 5 if differential else 3
        self.to_qkv = nn.Linear(dim, dim * self.parts, bias=False)
        add_output_and_qk_norms(self, dim, head_dim, qk_norm, zero_init_output)

    def forward(self, x: Tensor, rotary_angles: Tensor | None = None, *,
                padding_mask: Tensor | None = None,
                sliding_window: tuple[int, int] | None = None) -> Tensor:  # fmt: skip
        """x: Tensor[B, N, dim] -> Tensor[B, N, dim].

        rotary_angles: Tensor[N, R] (models/transformer.RotaryEmbedding), applied to the first R
        channels of each head. padding_mask: bool Tensor[B, N], True = valid; padded keys keep
        their place in the softmax with a zero value (the reference's CPU semantics).
        sliding_window: (before, after) in tokens, or None for full attention.
        """
        parts = [split_heads(part, self.num_heads) for part in self.to_qkv(x).chunk(self.parts, dim=-1)]
        v = parts[2]
        queries, keys = [parts[0], *parts[3:4]], [parts[1], *parts[4:5]]
        if hasattr(self, "q_norm"):
            queries = [self.q_norm(q) for q in queries]
            keys = [self.k_norm(k) for k in keys]
        if rotary_angles is not None:
            queries = [apply_rotary(q, rotary_angles) for q in queries]
            keys = [apply_rotary(k, rotary_angles) for k in keys]
        if padding_mask is not None:
            v = v * padding_mask[:, None, :, None].to(v.dtype)
        return self.to_out(merge_heads(attend(queries, keys, v, sliding_window)))
