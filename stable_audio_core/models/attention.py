"""The project's one attention function: softmax(q k^T * scale + mask) v over [B, H, N, D] tensors.

It runs flash-attn's kernel when that optional package is importable and the call is one it
handles (CUDA, fp16/bf16, no mask, head dim a multiple of 8 up to 256); otherwise PyTorch's
`scaled_dot_product_attention`. Grouped-query attention (Ainslie et al. 2023) is built in: k and v
may carry fewer heads than q, and query head i reads key/value head i // (H / H_kv).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import InputError

_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_MAX_HEAD_DIM = 256

_flash_attn_func: Callable | None = None
_flash_attn_looked_up = False


def _flash_attn() -> Callable | None:
    """flash_attn.flash_attn_func, imported on first use; None when the package is absent or broken."""
    global _flash_attn_func, _flash_attn_looked_up
    if not _flash_attn_looked_up:
        _flash_attn_looked_up = True
        try:
            from flash_attn import flash_attn_func
        except Exception:  # not installed, or built against another torch/CUDA: use SDPA
            flash_attn_func = None
        _flash_attn_func = flash_attn_func
    return _flash_attn_func


def _flash_attn_applies(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> bool:
    head_dim = q.shape[-1]
    return (
        mask is None
        and q.is_cuda
        and q.dtype in _FLASH_DTYPES
        and k.dtype == q.dtype
        and v.dtype == q.dtype
        and v.shape[-1] == head_dim
        and head_dim % 8 == 0
        and head_dim <= _FLASH_MAX_HEAD_DIM
        and _flash_attn() is not None
    )


def _check_shapes(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise InputError(
            f"attention expects q, k, v of shape [B, H, N, D]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    heads, kv_heads = q.shape[1], k.shape[1]
    if v.shape[1] != kv_heads or k.shape[2] != v.shape[2] or q.shape[-1] != k.shape[-1]:
        raise InputError(
            f"attention: k {tuple(k.shape)} and v {tuple(v.shape)} must share heads and length, "
            f"and k must share the head dim of q {tuple(q.shape)}"
        )
    if heads % kv_heads != 0:
        raise InputError(
            f"attention: q has {heads} heads, which is not a multiple of the {kv_heads} key/value heads"
        )
    if causal and q.shape[2] != k.shape[2]:
        # SDPA aligns a rectangular causal mask top-left and flash-attn bottom-right: refuse both.
        raise InputError(
            f"causal attention needs as many queries as keys; got {q.shape[2]} and {k.shape[2]}"
        )


def _with_causal(mask: Tensor, length: int) -> Tensor:
    allowed = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, float("-inf"))


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    causal: bool = False,
    *,
    scale: float | None = None,
) -> Tensor:
    """Scaled dot-product attention.

    Args:
        q: Tensor[B, H, Nq, D].
        k: Tensor[B, Hkv, Nk, D], with H a multiple of Hkv (grouped-query attention).
        v: Tensor[B, Hkv, Nk, Dv].
        mask: optional, broadcastable to [B, H, Nq, Nk]: bool (True = may attend) or a float bias
            added to the scores. A key-padding mask [B, Nk] is passed as `mask[:, None, None, :]`.
        causal: query i attends to keys 0..i only (needs Nq == Nk).
        scale: multiplies q k^T; default 1 / sqrt(D).

    Returns:
        Tensor[B, H, Nq, Dv].
    """
    _check_shapes(q, k, v, causal)
    if _flash_attn_applies(q, k, v, mask):
        # flash-attn works on [B, N, H, D] and groups query heads over fewer k/v heads itself.
        out = _flash_attn()(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=causal
        )
        return out.transpose(1, 2)

    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    if causal and mask is not None:
        mask = _with_causal(mask, q.shape[2])
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
