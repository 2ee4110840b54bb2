"""The pre-norm transformer of the Stable Audio DiT (stable-audio-tools' `ContinuousTransformer`).

Each block: self-attention with rotary positions -> cross-attention to the conditioning tokens ->
SwiGLU feed-forward (Shazeer 2020), each a residual branch behind a LayerNorm, optionally
modulated adaLN-style (Peebles & Xie 2023) by a global embedding. Module and parameter names
reproduce the reference's state-dict keys (`layers.{i}.self_attn.to_qkv.weight`, ...), so its
checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..config import check_keys
from ..errors import ConfigError, InputError
from .attention import attention

# The reference gives the rotary embedding max(head_dim // 2, 32) channels of each head.
ROTARY_MIN_DIM = 32
ROTARY_BASE = 10000.0
QK_NORMS = ("none", "ln", "l2")
QK_LAYERNORM_EPS = 1e-6


# --- rotary position embedding (Su et al. 2021, RoFormer), applied to a leading slice of each head ---

class RotaryEmbedding(nn.Module):
    """Rotation angles for positions 0..N-1 over `dim` channels (the GPT-NeoX half-split layout).

    `inv_freq` is a persistent buffer, as in the reference checkpoints.
    """

    def __init__(self, dim: int, base: float = ROTARY_BASE):
        super().__init__()
        self.dim = dim
        exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
        self.register_buffer("inv_freq", 1.0 / (base ** exponents))

    def forward(self, seq_len: int) -> Tensor:
        """-> Tensor[N, dim] of float32 angles; both halves repeat the same frequencies."""
        positions = torch.arange(seq_len, device=self.inv_freq.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq.float())
        return torch.cat((angles, angles), dim=-1)


def apply_rotary(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate the first R channels of every head of x: Tensor[B, H, N, D] by angles: Tensor[N, R].

    Channel j pairs with j + R/2; channels R..D-1 pass through. Computed in float32 (like the
    reference), returned in x's dtype.
    """
    rot_dim = angles.shape[-1]
    half = rot_dim // 2
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half].float(), x[..., half:rot_dim].float()
    # (first, second) * cos + (-second, first) * sin, each half written once into its place
    # (concatenating narrow slices on the last dim is several times slower on the CPU).
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out[..., rot_dim:] = x[..., rot_dim:]
    out[..., :half] = first * cos[..., :half] - second * sin[..., :half]
    out[..., half:rot_dim] = second * cos[..., half:] + first * sin[..., half:]
    return out


# --- norms and feed-forward -----------------------------------------------------------------

class LayerNorm(nn.Module):
    """LayerNorm stored as `gamma` and `beta`, both always in the state dict.

    By default `beta` is a zero buffer (a bias-free norm) and `gamma` is trained; `bias=True` makes
    `beta` a parameter, `fix_scale=True` makes `gamma` a buffer of ones. `force_fp32` normalises in
    float32 and casts back.
    """

    def __init__(self, dim: int, *, bias: bool = False, fix_scale: bool = False,
                 force_fp32: bool = False, eps: float = 1e-5):
        super().__init__()
        if fix_scale:
            self.register_buffer("gamma", torch.ones(dim))
        else:
            self.gamma = nn.Parameter(torch.ones(dim))
        if bias:
            self.beta = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("beta", torch.zeros(dim))
        self.eps = eps
        self.force_fp32 = force_fp32

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., dim] -> Tensor[..., dim]."""
        if self.force_fp32:
            out = F.layer_norm(x.float(), x.shape[-1:], self.gamma.float(), self.beta.float(), self.eps)
            return out.to(x.dtype)
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta, self.eps)


class GLU(nn.Module):
    """value * activation(gate), where [value, gate] = proj(x) split in two halves (SiLU: SwiGLU)."""

    def __init__(self, dim_in: int, dim_out: int, activation: Callable[[Tensor], Tensor] = F.silu):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * self.activation(gate)


class FeedForward(nn.Module):
    """SwiGLU (or plain SiLU MLP) with hidden width int(dim * mult), output initialised to zero.

    `activation` replaces SiLU as the GLU's gate (SAME-L's sin blocks). The `nn.Identity`
    placeholders keep the reference's Sequential indices (`ff.0.proj`, `ff.2`).
    """

    def __init__(self, dim: int, *, mult: float = 4.0, glu: bool = True, bias: bool = True,
                 zero_init_output: bool = True, activation: Callable[[Tensor], Tensor] = F.silu):
        super().__init__()
        hidden = int(dim * mult)
        if glu:
            linear_in = GLU(dim, hidden, activation)
        else:
            linear_in = nn.Sequential(nn.Identity(), nn.Linear(dim, hidden, bias=bias),
                                      nn.Identity(), nn.SiLU())
        linear_out = nn.Linear(hidden, dim, bias=bias)
        if zero_init_output:
            nn.init.zeros_(linear_out.weight)
            if bias:
                nn.init.zeros_(linear_out.bias)
        self.ff = nn.Sequential(linear_in, nn.Identity(), linear_out, nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, N, dim] -> Tensor[B, N, dim]."""
        return self.ff(x)


# --- attention ------------------------------------------------------------------------------

def _split_heads(x: Tensor, heads: int) -> Tensor:
    """Tensor[B, N, H*D] -> Tensor[B, H, N, D]."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


class _HeadedAttention(nn.Module):
    """What self- and cross-attention share: q/k norm, rotary, attention, output projection."""

    def _init_output(self, dim: int, head_dim: int, qk_norm: str, zero_init_output: bool) -> None:
        self.to_out = nn.Linear(dim, dim, bias=False)
        if zero_init_output:
            nn.init.zeros_(self.to_out.weight)
        self.qk_norm = qk_norm
        if qk_norm == "ln":
            self.q_norm = nn.LayerNorm(head_dim, eps=QK_LAYERNORM_EPS)
            self.k_norm = nn.LayerNorm(head_dim, eps=QK_LAYERNORM_EPS)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, rotary_angles: Tensor | None) -> Tensor:
        """q: Tensor[B, H, N, D], k/v: Tensor[B, Hkv, M, D] -> Tensor[B, N, H*D] after to_out."""
        if self.qk_norm == "l2":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        elif self.qk_norm == "ln":
            q, k = self.q_norm(q).to(q.dtype), self.k_norm(k).to(k.dtype)
        if rotary_angles is not None:
            q, k = apply_rotary(q, rotary_angles), apply_rotary(k, rotary_angles)
        out = attention(q, k, v)
        batch, heads, length, head_dim = out.shape
        return self.to_out(out.transpose(1, 2).reshape(batch, length, heads * head_dim))


class SelfAttention(_HeadedAttention):
    """Multi-head self-attention with one fused q/k/v projection (`to_qkv`)."""

    def __init__(self, dim: int, head_dim: int, *, qk_norm: str = "none", zero_init_output: bool = True):
        super().__init__()
        self.num_heads = dim // head_dim
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self._init_output(dim, head_dim, qk_norm, zero_init_output)

    def forward(self, x: Tensor, rotary_angles: Tensor | None = None) -> Tensor:
        """x: Tensor[B, N, dim], rotary_angles: Tensor[N, R] -> Tensor[B, N, dim]."""
        q, k, v = (_split_heads(part, self.num_heads) for part in self.to_qkv(x).chunk(3, dim=-1))
        return self._attend(q, k, v, rotary_angles)


def key_value_heads(dim: int, head_dim: int, context_dim: int) -> int:
    """Heads of the keys and values when they keep the context's width: context_dim / head_dim,
    which must divide the dim / head_dim query heads (grouped-query attention)."""
    heads = context_dim // head_dim
    if context_dim % head_dim or heads == 0 or (dim // head_dim) % heads:
        raise ConfigError(
            f"cross-attention context width {context_dim} must be a multiple of the head dim "
            f"{head_dim} giving a head count that divides the {dim // head_dim} query heads; "
            f"change cond_token_dim (or set project_cond_tokens to true)"
        )
    return heads


class CrossAttention(_HeadedAttention):
    """Attention from the sequence to conditioning tokens of width `context_dim`.

    Keys and values keep the context's width, so they have context_dim / head_dim heads, shared by
    groups of query heads (grouped-query attention); SAO 1.0 has 24 query and 12 key/value heads.
    """

    def __init__(self, dim: int, head_dim: int, context_dim: int, *, qk_norm: str = "none",
                 zero_init_output: bool = True):
        super().__init__()
        self.num_heads = dim // head_dim
        self.kv_heads = key_value_heads(dim, head_dim, context_dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, context_dim * 2, bias=False)
        self._init_output(dim, head_dim, qk_norm, zero_init_output)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: Tensor[B, N, dim], context: Tensor[B, M, context_dim] -> Tensor[B, N, dim]."""
        q = _split_heads(self.to_q(x), self.num_heads)
        k, v = (_split_heads(part, self.kv_heads) for part in self.to_kv(context).chunk(2, dim=-1))
        return self._attend(q, k, v, None)


# --- options, block, transformer ------------------------------------------------------------

# Reference options accepted only at the value that leaves the architecture unchanged.
_ONLY_DEFAULT = {
    "causal": False, "conformer": False, "use_sinusoidal_emb": False, "use_abs_pos_emb": False,
    "num_memory_tokens": 0, "sliding_window": None, "remove_norms": False, "add_rope": False,
    "layer_scale": False,
}
_ATTN_KEYS = {"qk_norm", "differential", "feat_scale"}
_FF_KEYS = {"mult", "no_bias", "glu", "use_conv", "conv_kernel_size"}
_NORM_KEYS = {"bias", "fix_scale", "force_fp32", "eps"}


def _unsupported(where: str, key: str, value, supported) -> ConfigError:
    return ConfigError(
        f"{where}: {key}={value!r} is not supported by stable_audio_core (supported: {supported!r}); "
        f"remove the key or set it to that value"
    )


@dataclass(frozen=True)
class TransformerOptions:
    """Architecture switches of the transformer, read from the DiT config's pass-through keys.

    Config spelling (stable-audio-tools): `rotary_pos_emb`, `final_cross_attn_ix`,
    `zero_init_branch_outputs`, `attn_kwargs.qk_norm`, `ff_kwargs.{mult, no_bias, glu}`,
    `norm_kwargs.{bias, fix_scale, force_fp32, eps}`.
    """

    rotary_pos_emb: bool = True
    final_cross_attn_ix: int = -1          # last block with cross-attention; -1 = every block
    zero_init_branch_outputs: bool = True  # initialisation only
    qk_norm: str = "none"                  # "none" | "ln" (LayerNorm per head) | "l2"
    ff_mult: float = 4.0
    ff_glu: bool = True
    ff_bias: bool = True
    norm_bias: bool = False
    norm_fix_scale: bool = False
    norm_force_fp32: bool = False
    norm_eps: float = 1e-5

    CONFIG_KEYS = frozenset({"rotary_pos_emb", "final_cross_attn_ix", "zero_init_branch_outputs",
                             "abs_pos_emb_max_length", "attn_kwargs", "ff_kwargs", "norm_kwargs",
                             *_ONLY_DEFAULT})

    @classmethod
    def from_config(cls, config: dict, where: str = "model.diffusion.config") -> "TransformerOptions":
        """Parse the ContinuousTransformer/TransformerBlock keys of a DiT config (others rejected)."""
        check_keys(config, set(cls.CONFIG_KEYS), where)
        for key, default in _ONLY_DEFAULT.items():
            if key in config and config[key] != default:
                raise _unsupported(where, key, config[key], default)
        # abs_pos_emb_max_length only matters with use_abs_pos_emb, which is rejected above.

        attn = config.get("attn_kwargs") or {}
        check_keys(attn, _ATTN_KEYS, f"{where}.attn_kwargs")
        for key in ("differential", "feat_scale"):
            if attn.get(key, False):
                raise _unsupported(f"{where}.attn_kwargs", key, attn[key], False)
        qk_norm = attn.get("qk_norm", "none")
        if qk_norm not in QK_NORMS:
            raise _unsupported(f"{where}.attn_kwargs", "qk_norm", qk_norm, QK_NORMS)

        ff = config.get("ff_kwargs") or {}
        check_keys(ff, _FF_KEYS, f"{where}.ff_kwargs")
        if ff.get("use_conv", False):
            raise _unsupported(f"{where}.ff_kwargs", "use_conv", ff["use_conv"], False)
        # conv_kernel_size only matters with use_conv.

        norm = config.get("norm_kwargs") or {}
        check_keys(norm, _NORM_KEYS, f"{where}.norm_kwargs")

        return cls(
            rotary_pos_emb=bool(config.get("rotary_pos_emb", True)),
            final_cross_attn_ix=int(config.get("final_cross_attn_ix", -1)),
            zero_init_branch_outputs=bool(config.get("zero_init_branch_outputs", True)),
            qk_norm=qk_norm,
            ff_mult=float(ff.get("mult", 4.0)),
            ff_glu=bool(ff.get("glu", True)),
            ff_bias=not ff.get("no_bias", False),
            norm_bias=bool(norm.get("bias", False)),
            norm_fix_scale=bool(norm.get("fix_scale", False)),
            norm_force_fp32=bool(norm.get("force_fp32", False)),
            norm_eps=float(norm.get("eps", 1e-5)),
        )

    def layer_norm(self, dim: int) -> LayerNorm:
        return LayerNorm(dim, bias=self.norm_bias, fix_scale=self.norm_fix_scale,
                         force_fp32=self.norm_force_fp32, eps=self.norm_eps)


class TransformerBlock(nn.Module):
    """Pre-norm block: x += self_attn(norm x); x += cross_attn(norm x, context); x += ff(norm x).

    With `global_cond` (adaLN), the self-attention and feed-forward branches see
    norm(x) * (1 + scale) + shift and are gated by sigmoid(1 - gate), where the six
    scale/shift/gate vectors are `to_scale_shift_gate` plus the block's share of the embedding.
    """

    def __init__(self, dim: int, head_dim: int, *, context_dim: int | None = None,
                 adaptive: bool = False, options: TransformerOptions = TransformerOptions()):
        super().__init__()
        zero_init = options.zero_init_branch_outputs
        self.pre_norm = options.layer_norm(dim)
        self.self_attn = SelfAttention(dim, head_dim, qk_norm=options.qk_norm, zero_init_output=zero_init)
        self.cross_attn = None
        if context_dim is not None:
            self.cross_attend_norm = options.layer_norm(dim)
            self.cross_attn = CrossAttention(dim, head_dim, context_dim, qk_norm=options.qk_norm,
                                             zero_init_output=zero_init)
        self.ff_norm = options.layer_norm(dim)
        self.ff = FeedForward(dim, mult=options.ff_mult, glu=options.ff_glu, bias=options.ff_bias,
                              zero_init_output=zero_init)
        self.to_scale_shift_gate = nn.Parameter(torch.randn(6 * dim) / dim ** 0.5) if adaptive else None

    def forward(self, x: Tensor, context: Tensor | None = None, global_cond: Tensor | None = None,
                rotary_angles: Tensor | None = None) -> Tensor:
        """x: Tensor[B, N, dim], context: Tensor[B, M, Dc], global_cond: Tensor[B, 6*dim],
        rotary_angles: Tensor[N, R] -> Tensor[B, N, dim]."""
        if self.to_scale_shift_gate is None or global_cond is None:
            x = x + self.self_attn(self.pre_norm(x), rotary_angles)
            x = self._cross_attend(x, context)
            return x + self.ff(self.ff_norm(x))

        modulation = (self.to_scale_shift_gate + global_cond).unsqueeze(1).chunk(6, dim=-1)
        scale_attn, shift_attn, gate_attn, scale_ff, shift_ff, gate_ff = modulation
        branch = self.self_attn(self.pre_norm(x) * (1 + scale_attn) + shift_attn, rotary_angles)
        x = x + branch * torch.sigmoid(1 - gate_attn)
        x = self._cross_attend(x, context)
        branch = self.ff(self.ff_norm(x) * (1 + scale_ff) + shift_ff)
        return x + branch * torch.sigmoid(1 - gate_ff)

    def _cross_attend(self, x: Tensor, context: Tensor | None) -> Tensor:
        if context is None or self.cross_attn is None:
            return x
        return x + self.cross_attn(self.cross_attend_norm(x), context)


class ContinuousTransformer(nn.Module):
    """project_in -> [prepended tokens; x] -> blocks -> project_out.

    Rotary positions count the prepended tokens too (position 0 is the first prepended token).
    The output keeps the prepended positions; the caller drops them.
    """

    def __init__(self, dim: int, depth: int, *, dim_in: int | None, dim_out: int | None, head_dim: int,
                 context_dim: int | None = None, global_cond_dim: int | None = None,
                 options: TransformerOptions = TransformerOptions()):
        super().__init__()
        if dim % head_dim:
            raise ConfigError(f"transformer width {dim} is not a multiple of the head dim {head_dim}")
        rotary_dim = max(head_dim // 2, ROTARY_MIN_DIM)
        if options.rotary_pos_emb and rotary_dim > head_dim:
            raise ConfigError(
                f"head dim {head_dim} is below {ROTARY_MIN_DIM}, which the rotary embedding needs "
                f"(stable-audio-tools fails the same way); use fewer heads (embed_dim / num_heads >= 32)"
            )
        self.dim = dim
        self.layers = nn.ModuleList()  # registered first, as in the reference (state-dict order)
        self.project_in = nn.Linear(dim_in, dim, bias=False) if dim_in is not None else nn.Identity()
        self.project_out = nn.Linear(dim, dim_out, bias=False) if dim_out is not None else nn.Identity()
        self.rotary_pos_emb = RotaryEmbedding(rotary_dim) if options.rotary_pos_emb else None
        self.global_cond_embedder = None
        if global_cond_dim is not None:
            self.global_cond_embedder = nn.Sequential(
                nn.Linear(global_cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim * 6)
            )
        last_cross = options.final_cross_attn_ix
        for index in range(depth):
            cross = context_dim is not None and (last_cross == -1 or index <= last_cross)
            self.layers.append(TransformerBlock(
                dim, head_dim, context_dim=context_dim if cross else None,
                adaptive=global_cond_dim is not None, options=options,
            ))
        # Recompute each block in the backward pass (training memory); no effect on values.
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, prepend_embeds: Tensor | None = None, context: Tensor | None = None,
                global_cond: Tensor | None = None) -> Tensor:
        """x: Tensor[B, N, dim_in], prepend_embeds: Tensor[B, P, dim], context: Tensor[B, M, Dc],
        global_cond: Tensor[B, Dg] -> Tensor[B, P + N, dim_out]."""
        x = self.project_in(x)
        if prepend_embeds is not None:
            if prepend_embeds.shape[-1] != self.dim:
                raise InputError(
                    f"prepended tokens have width {prepend_embeds.shape[-1]}, the transformer {self.dim}"
                )
            x = torch.cat((prepend_embeds, x), dim=1)
        angles = self.rotary_pos_emb(x.shape[1]) if self.rotary_pos_emb is not None else None
        if global_cond is not None and self.global_cond_embedder is not None:
            global_cond = self.global_cond_embedder(global_cond)
        else:
            global_cond = None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, context, global_cond, angles, use_reentrant=False)
            else:
                x = layer(x, context, global_cond, angles)
        return self.project_out(x)
