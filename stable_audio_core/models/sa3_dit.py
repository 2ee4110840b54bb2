"""The Stable Audio 3 diffusion transformer (stable-audio-3's `DiffusionTransformer`, type "dit").

Latents x: [B, C, L] and the flow time t in [0, 1] become one token per latent frame. The time's
exponential Fourier features are embedded and added to the global embedding (the duration), which
modulates every block adaLN-style (Peebles & Xie 2023); text and duration tokens enter through
cross-attention; the inpainting input (mask + masked latents) is added to the latent tokens inside
every block (`local_add_cond`). Learned memory tokens are prepended to the sequence and take part
in the rotary positions. Each block:

    h = RMSNorm(x) * (1 + scale1) + shift1 ;  x += sigmoid(1 - gate1) * SelfAttn(h)
    x += CrossAttn(RMSNorm(x), context)
    x += pad_left(LocalMLP(local_add_cond))
    h = RMSNorm(x) * (1 + scale2) + shift2 ;  x += sigmoid(1 - gate2) * FeedForward(h)

Self-attention may be differential (Ye et al. 2024, "Differential Transformer": two softmax maps
subtracted, here without the lambda and the sub-norm). A padding mask [B, L] (True = valid) makes
padded latents contribute nothing to self-attention by zeroing their values: they stay in the
softmax denominator, as the reference does without flash-attn. Cross-attention is never masked.

Parameter names reproduce the reference's, so a checkpoint's `model.model.<key>` loads as `<key>`.
Guidance is not done here: see `stable_audio_core/sampling/sa3.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import DIFFUSION_OBJECTIVES, check_keys
from ..errors import ConfigError, InputError
from .dit import conditioning_projections, mlp
from .sa3_layers import (L2Norm, QKNormFactory, SelfAttention, add_output_and_qk_norms, attend, merge_heads,
                         split_heads)
from .transformer import ROTARY_MIN_DIM, FeedForward, LayerNorm, RotaryEmbedding, key_value_heads

TIMESTEP_FEATURES = 256
QK_NORMS = ("none", "l2", "ln", "rms")
NORM_TYPES = ("rms_norm", "layer_norm")
# The reference's range for log-SNR time features (`timestep_features_logsnr`).
_LOGSNR_MIN, _LOGSNR_MAX = -12.0, 5.0


# --- features and norms -------------------------------------------------------------------------

class ExpoFourierFeatures(nn.Module):
    """[cos(2 pi f x), sin(2 pi f x)] for dim/2 frequencies f spaced exponentially from min_freq
    to max_freq. Computed in float32 whatever the input dtype; returned in the input's dtype."""

    def __init__(self, dim: int = TIMESTEP_FEATURES, min_freq: float = 0.5, max_freq: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"Fourier feature width must be even, got {dim}")
        self.dim, self.min_freq, self.max_freq = dim, min_freq, max_freq

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B] or Tensor[B, 1] -> Tensor[B, dim] (cosines first)."""
        dtype = x.dtype
        x = x.float()
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        ramp = torch.linspace(0, 1, self.dim // 2, device=x.device, dtype=torch.float32)
        log_min, log_max = math.log(self.min_freq), math.log(self.max_freq)
        freqs = torch.exp(ramp * (log_max - log_min) + log_min)
        angles = x * freqs * 2 * math.pi
        return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * gamma over the last axis. `force_fp32` normalises in float32 and casts back;
    `fix_scale` makes gamma a buffer of ones."""

    def __init__(self, dim: int, *, fix_scale: bool = False, force_fp32: bool = False, eps: float = 1e-5):
        super().__init__()
        if fix_scale:
            self.register_buffer("gamma", torch.ones(dim))
        else:
            self.gamma = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.force_fp32 = force_fp32

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., dim] -> Tensor[..., dim]."""
        if self.force_fp32:
            return F.rms_norm(x.float(), x.shape[-1:], self.gamma.float(), self.eps).to(x.dtype)
        return F.rms_norm(x, x.shape[-1:], self.gamma, self.eps)


# --- attention ----------------------------------------------------------------------------------

def qk_norm_factory(kind: str, eps: float) -> QKNormFactory | None:
    """The per-head q/k norm of an `attn_kwargs.qk_norm` value; None for "none"."""
    if kind == "rms":
        return lambda head_dim: RMSNorm(head_dim, eps=eps)
    if kind == "ln":
        return lambda head_dim: nn.LayerNorm(head_dim, eps=eps)
    if kind == "l2":
        return lambda head_dim: L2Norm(eps)
    return None


class CrossAttention(nn.Module):
    """Attention from the sequence to context tokens of width `context_dim` (no rotary, no mask).

    `to_q` gives q (and q_diff), `to_kv` gives k, v (differential: k, k_diff, v). Keys and values
    have context_dim / head_dim heads, shared by groups of query heads when that is fewer. The
    q/k norm and the differential form are SelfAttention's (models/sa3_layers.py).
    """

    def __init__(self, dim: int, head_dim: int, context_dim: int, *, differential: bool = False,
                 qk_norm: QKNormFactory | None = None, zero_init_output: bool = True):
        super().__init__()
        self.num_heads = dim // head_dim
        self.kv_heads = key_value_heads(dim, head_dim, context_dim)
        self.differential = differential
        self.to_q = nn.Linear(dim, dim * (2 if differential else 1), bias=False)
        self.to_kv = nn.Linear(context_dim, context_dim * (3 if differential else 2), bias=False)
        add_output_and_qk_norms(self, dim, head_dim, qk_norm, zero_init_output)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: Tensor[B, N, dim], context: Tensor[B, M, context_dim] -> Tensor[B, N, dim]."""
        queries = [split_heads(q, self.num_heads) for q in self.to_q(x).chunk(2 if self.differential else 1, -1)]
        chunks = self.to_kv(context).chunk(3 if self.differential else 2, dim=-1)
        kv = [split_heads(part, self.kv_heads) for part in chunks]
        keys, v = kv[:-1], kv[-1]
        if hasattr(self, "q_norm"):
            queries = [self.q_norm(q) for q in queries]
            keys = [self.k_norm(k) for k in keys]
        return self.to_out(merge_heads(attend(queries, keys, v)))


# --- options, block, transformer ----------------------------------------------------------------

@dataclass(frozen=True)
class SA3BlockOptions:
    """The block switches of `model.diffusion.config` (norm_type, norm_kwargs, attn_kwargs, ff_kwargs)."""

    norm_type: str = "rms_norm"
    norm_fix_scale: bool = False
    norm_force_fp32: bool = False
    norm_eps: float = 1e-5
    norm_bias: bool = False          # layer_norm only
    qk_norm: str = "none"
    qk_norm_eps: float = 1e-6
    differential: bool = False
    ff_mult: float = 4.0
    ff_glu: bool = True
    ff_bias: bool = True
    zero_init_branch_outputs: bool = True  # initialisation only

    def norm(self, dim: int) -> nn.Module:
        if self.norm_type == "layer_norm":
            return LayerNorm(dim, bias=self.norm_bias, fix_scale=self.norm_fix_scale,
                             force_fp32=self.norm_force_fp32, eps=self.norm_eps)
        return RMSNorm(dim, fix_scale=self.norm_fix_scale, force_fp32=self.norm_force_fp32, eps=self.norm_eps)


def _left_pad_to(emb: Tensor, length: int) -> Tensor:
    """Align Tensor[B, N', D] with the last N' of `length` tokens: zeros before (the memory
    tokens), or keep the last `length` when longer."""
    if emb.shape[1] < length:
        return F.pad(emb, (0, 0, length - emb.shape[1], 0))
    return emb[:, emb.shape[1] - length:]


class SA3TransformerBlock(nn.Module):
    """Self-attention, cross-attention, local additive conditioning, feed-forward (see module doc).

    With `adaptive` the self-attention and feed-forward branches are modulated by the block's
    `to_scale_shift_gate` plus the shared global embedding (chunks: scale, shift, gate, twice).
    """

    def __init__(self, dim: int, head_dim: int, *, context_dim: int | None, adaptive: bool,
                 local_add_cond_dim: int | None, options: SA3BlockOptions = SA3BlockOptions()):
        super().__init__()
        attn_kwargs = dict(differential=options.differential,
                           qk_norm=qk_norm_factory(options.qk_norm, options.qk_norm_eps),
                           zero_init_output=options.zero_init_branch_outputs)
        self.pre_norm = options.norm(dim)
        self.self_attn = SelfAttention(dim, head_dim, **attn_kwargs)
        self.cross_attn = None
        if context_dim is not None:
            self.cross_attend_norm = options.norm(dim)
            self.cross_attn = CrossAttention(dim, head_dim, context_dim, **attn_kwargs)
        self.ff_norm = options.norm(dim)
        self.ff = FeedForward(dim, mult=options.ff_mult, glu=options.ff_glu, bias=options.ff_bias,
                              zero_init_output=options.zero_init_branch_outputs)
        self.to_scale_shift_gate = nn.Parameter(torch.randn(6 * dim) / dim ** 0.5) if adaptive else None
        self.to_local_embed = None
        if local_add_cond_dim is not None:
            self.to_local_embed = mlp(local_add_cond_dim, dim, bias=True)
            nn.init.zeros_(self.to_local_embed[-1].weight)
            nn.init.zeros_(self.to_local_embed[-1].bias)

    def forward(self, x: Tensor, *, context: Tensor | None = None, global_cond: Tensor | None = None,
                local_add_cond: Tensor | None = None, rotary_angles: Tensor | None = None,
                padding_mask: Tensor | None = None) -> Tensor:
        """x: Tensor[B, N, dim]; context: Tensor[B, M, Dc]; global_cond: Tensor[B, 6*dim];
        local_add_cond: Tensor[B, N', Dl] for the last N' tokens; rotary_angles: Tensor[N, R];
        padding_mask: Tensor[B, N] bool -> Tensor[B, N, dim]."""
        modulated = self.to_scale_shift_gate is not None and global_cond is not None
        if modulated:
            chunks = (self.to_scale_shift_gate + global_cond).unsqueeze(1).chunk(6, dim=-1)
            scale_attn, shift_attn, gate_attn, scale_ff, shift_ff, gate_ff = chunks
            h = self.pre_norm(x) * (1 + scale_attn) + shift_attn
            x = x + self.self_attn(h, rotary_angles, padding_mask=padding_mask) * torch.sigmoid(1 - gate_attn)
        else:
            x = x + self.self_attn(self.pre_norm(x), rotary_angles, padding_mask=padding_mask)
        if context is not None and self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_attend_norm(x), context)
        if local_add_cond is not None and self.to_local_embed is not None:
            x = x + _left_pad_to(self.to_local_embed(local_add_cond), x.shape[1])
        if modulated:
            h = self.ff_norm(x) * (1 + scale_ff) + shift_ff
            return x + self.ff(h) * torch.sigmoid(1 - gate_ff)
        return x + self.ff(self.ff_norm(x))


class SA3Transformer(nn.Module):
    """project_in -> [memory tokens; x] -> blocks -> drop the memory tokens -> project_out.

    Rotary positions count the memory tokens (they sit at 0..M-1); they are always valid under
    the padding mask.
    """

    def __init__(self, dim: int, depth: int, *, dim_in: int, dim_out: int, head_dim: int,
                 context_dim: int | None, global_cond_dim: int | None, local_add_cond_dim: int | None,
                 num_memory_tokens: int = 0, rotary_pos_emb: bool = True, final_cross_attn_ix: int = -1,
                 options: SA3BlockOptions = SA3BlockOptions()):
        super().__init__()
        rotary_dim = max(head_dim // 2, ROTARY_MIN_DIM)
        if rotary_pos_emb and rotary_dim > head_dim:
            raise ConfigError(
                f"head dim {head_dim} is below {ROTARY_MIN_DIM}, which the rotary embedding needs "
                f"(stable-audio-3 fails the same way); use embed_dim / num_heads >= {ROTARY_MIN_DIM}"
            )
        self.dim = dim
        self.num_memory_tokens = num_memory_tokens
        self.layers = nn.ModuleList()  # registered first, as in the reference (state-dict order)
        self.project_in = nn.Linear(dim_in, dim, bias=False)
        self.project_out = nn.Linear(dim, dim_out, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(rotary_dim) if rotary_pos_emb else None
        if num_memory_tokens > 0:
            self.memory_tokens = nn.Parameter(torch.randn(num_memory_tokens, dim))
        self.global_cond_embedder = None
        if global_cond_dim is not None:
            self.global_cond_embedder = nn.Sequential(
                nn.Linear(global_cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim * 6)
            )
        for index in range(depth):
            cross = context_dim is not None and (final_cross_attn_ix == -1 or index <= final_cross_attn_ix)
            self.layers.append(SA3TransformerBlock(
                dim, head_dim, context_dim=context_dim if cross else None,
                adaptive=global_cond_dim is not None, local_add_cond_dim=local_add_cond_dim,
                options=options,
            ))

    def forward(self, x: Tensor, *, context: Tensor | None = None, global_cond: Tensor | None = None,
                local_add_cond: Tensor | None = None, padding_mask: Tensor | None = None) -> Tensor:
        """x: Tensor[B, N, dim_in]; context: Tensor[B, M, Dc]; global_cond: Tensor[B, Dg];
        local_add_cond: Tensor[B, N, Dl]; padding_mask: Tensor[B, N] bool -> Tensor[B, N, dim_out]."""
        x = self.project_in(x)
        batch = x.shape[0]
        if self.num_memory_tokens > 0:
            x = torch.cat([self.memory_tokens.expand(batch, -1, -1), x], dim=1)
        angles = self.rotary_pos_emb(x.shape[1]) if self.rotary_pos_emb is not None else None
        if global_cond is not None and self.global_cond_embedder is not None:
            global_cond = self.global_cond_embedder(global_cond)
        if padding_mask is not None and self.num_memory_tokens > 0:
            memory_valid = padding_mask.new_ones(batch, self.num_memory_tokens)
            padding_mask = torch.cat([memory_valid, padding_mask], dim=1)
        for layer in self.layers:
            x = layer(x, context=context, global_cond=global_cond, local_add_cond=local_add_cond,
                      rotary_angles=angles, padding_mask=padding_mask)
        return self.project_out(x[:, self.num_memory_tokens:])


# --- the diffusion transformer ------------------------------------------------------------------

# Reference options accepted only at the value that leaves the architecture unchanged.
_ONLY_DEFAULT = {
    "transformer_type": "continuous_transformer", "global_cond_type": "adaLN",
    "timestep_cond_type": "global", "timestep_features_type": "expo", "patch_size": 1,
    "input_concat_dim": 0, "prepend_cond_dim": 0, "causal": False, "conformer": False,
    "use_sinusoidal_emb": False, "use_abs_pos_emb": False, "sliding_window": None,
    "add_rope": False, "layer_scale": False, "cross_attn_rotary_pos_emb": False,
}
# Keys that only matter with an option refused above, or with none at all.
_IGNORED = {"timestep_embed_dim", "abs_pos_emb_max_length"}
_DIT_KEYS = {
    "io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "project_cond_tokens",
    "global_cond_dim", "project_global_cond", "local_add_cond_dim", "num_memory_tokens",
    "timestep_features_dim", "timestep_features_logsnr", "modular_local_cond_configs",
    "rotary_pos_emb", "final_cross_attn_ix", "zero_init_branch_outputs", "norm_type",
    "norm_kwargs", "attn_kwargs", "ff_kwargs", *_ONLY_DEFAULT, *_IGNORED,
}
_ATTN_KEYS = {"qk_norm", "qk_norm_eps", "differential", "feat_scale"}
_FF_KEYS = {"mult", "no_bias", "glu", "use_conv", "conv_kernel_size", "sinusoidal", "dim_out"}
_NORM_KEYS = {"rms_norm": {"fix_scale", "force_fp32", "eps"},
              "layer_norm": {"bias", "fix_scale", "force_fp32", "eps"}}


def _unsupported(where: str, key: str, value, supported) -> ConfigError:
    return ConfigError(
        f"{where}: {key}={value!r} is not supported by the SA3 DiT (supported: {supported!r}); "
        f"remove the key or set it to that value"
    )


def _block_options(config: dict, where: str) -> SA3BlockOptions:
    norm_type = config.get("norm_type", "layer_norm")
    if norm_type not in NORM_TYPES:
        raise _unsupported(where, "norm_type", norm_type, NORM_TYPES)
    norm = config.get("norm_kwargs") or {}
    check_keys(norm, _NORM_KEYS[norm_type], f"{where}.norm_kwargs")

    attn = config.get("attn_kwargs") or {}
    check_keys(attn, _ATTN_KEYS, f"{where}.attn_kwargs")
    if attn.get("feat_scale", False):
        raise _unsupported(f"{where}.attn_kwargs", "feat_scale", attn["feat_scale"], False)
    qk_norm = attn.get("qk_norm", "none")
    if qk_norm not in QK_NORMS:
        raise _unsupported(f"{where}.attn_kwargs", "qk_norm", qk_norm, QK_NORMS)

    ff = config.get("ff_kwargs") or {}
    check_keys(ff, _FF_KEYS, f"{where}.ff_kwargs")
    for key, default in (("use_conv", False), ("sinusoidal", False), ("dim_out", None)):
        if ff.get(key, default) != default:
            raise _unsupported(f"{where}.ff_kwargs", key, ff[key], default)

    return SA3BlockOptions(
        norm_type=norm_type,
        norm_fix_scale=bool(norm.get("fix_scale", False)),
        norm_force_fp32=bool(norm.get("force_fp32", False)),
        norm_eps=float(norm.get("eps", 1e-5)),
        norm_bias=bool(norm.get("bias", False)),
        qk_norm=qk_norm,
        qk_norm_eps=float(attn.get("qk_norm_eps", 1e-6)),
        differential=bool(attn.get("differential", False)),
        ff_mult=float(ff.get("mult", 4)),
        ff_glu=bool(ff.get("glu", True)),
        ff_bias=not ff.get("no_bias", False),
        zero_init_branch_outputs=bool(config.get("zero_init_branch_outputs", True)),
    )


class SA3DiT(nn.Module):
    """Constructor arguments carry the names and defaults of stable-audio-3's `model.diffusion.config`.

    Args:
        io_channels: latent channels C (256 for SAME).
        embed_dim, depth, num_heads: transformer width, blocks, heads (head dim >= 32).
        cond_token_dim: width of the cross-attention tokens (0: no cross-attention).
        project_cond_tokens: project them to embed_dim (otherwise keys/values keep their width).
        global_cond_dim: width of the global conditioning (0: none; the time embedding alone).
        project_global_cond: project it to embed_dim (otherwise it must already have that width).
        local_add_cond_dim: channels of the per-frame additive conditioning (0: none).
        num_memory_tokens: learned tokens prepended to the sequence.
        timestep_features_dim: exponential Fourier features of t.
        timestep_features_logsnr: feed the normalised log-SNR of t instead of t.
        rotary_pos_emb, final_cross_attn_ix: as in the reference.
        diffusion_objective: "rectified_flow" or "rf_denoiser" (or "v"); stored for the sampler.
        options: the block switches.
    """

    def __init__(self, *, io_channels: int = 32, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 8, cond_token_dim: int = 0, project_cond_tokens: bool = True,
                 global_cond_dim: int = 0, project_global_cond: bool = True,
                 local_add_cond_dim: int = 0, num_memory_tokens: int = 0,
                 timestep_features_dim: int = TIMESTEP_FEATURES, timestep_features_logsnr: bool = False,
                 rotary_pos_emb: bool = True, final_cross_attn_ix: int = -1,
                 diffusion_objective: str = "rectified_flow",
                 options: SA3BlockOptions = SA3BlockOptions()):
        super().__init__()
        if diffusion_objective not in DIFFUSION_OBJECTIVES:
            raise ConfigError(
                f"diffusion_objective {diffusion_objective!r} is not one of {DIFFUSION_OBJECTIVES}"
            )
        if num_heads <= 0 or embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        self.io_channels = io_channels
        self.cond_token_dim = cond_token_dim
        self.global_cond_dim = global_cond_dim
        self.local_add_cond_dim = local_add_cond_dim
        self.timestep_features_logsnr = timestep_features_logsnr
        self.diffusion_objective = diffusion_objective

        self.timestep_features = ExpoFourierFeatures(timestep_features_dim)
        self.to_timestep_embed = mlp(timestep_features_dim, embed_dim, bias=True)

        self.to_cond_embed, context_dim, self.to_global_embed = conditioning_projections(
            embed_dim, cond_token_dim, project_cond_tokens, global_cond_dim, project_global_cond)
        context_dim = context_dim or None

        self.transformer = SA3Transformer(
            embed_dim, depth, dim_in=io_channels, dim_out=io_channels, head_dim=embed_dim // num_heads,
            context_dim=context_dim, global_cond_dim=embed_dim,
            local_add_cond_dim=local_add_cond_dim or None, num_memory_tokens=num_memory_tokens,
            rotary_pos_emb=rotary_pos_emb, final_cross_attn_ix=final_cross_attn_ix, options=options,
        )
        self.preprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        nn.init.zeros_(self.preprocess_conv.weight)
        self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        nn.init.zeros_(self.postprocess_conv.weight)

    @classmethod
    def from_config(cls, diffusion_config: dict, objective: str = "rectified_flow",
                    where: str = "model.diffusion.config") -> "SA3DiT":
        """Build from stable-audio-3's `model.diffusion.config` and `model.diffusion.diffusion_objective`."""
        check_keys(diffusion_config, _DIT_KEYS, where)
        for key, default in _ONLY_DEFAULT.items():
            if key in diffusion_config and diffusion_config[key] != default:
                raise _unsupported(where, key, diffusion_config[key], default)
        if diffusion_config.get("modular_local_cond_configs"):
            raise _unsupported(where, "modular_local_cond_configs",
                               diffusion_config["modular_local_cond_configs"], [])
        options = _block_options(diffusion_config, where)
        names = ("io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim",
                 "project_cond_tokens", "global_cond_dim", "project_global_cond",
                 "local_add_cond_dim", "num_memory_tokens", "timestep_features_dim",
                 "timestep_features_logsnr", "rotary_pos_emb", "final_cross_attn_ix")
        kwargs = {name: diffusion_config[name] for name in names if name in diffusion_config}
        return cls(**kwargs, diffusion_objective=objective, options=options)

    def _time_features(self, t: Tensor) -> Tensor:
        """The value the timestep features see: t, or its log-SNR normalised to [0, 1]."""
        if not self.timestep_features_logsnr:
            return t
        clamped = t.float().clamp(1e-7, 1 - 1e-7)
        logsnr = torch.log((1 - clamped) / clamped).clamp(_LOGSNR_MIN, _LOGSNR_MAX)
        return ((_LOGSNR_MAX - logsnr) / (_LOGSNR_MAX - _LOGSNR_MIN)).to(t.dtype)

    def forward(self, x: Tensor, t: Tensor, cross_attn_cond: Tensor | None = None,
                global_embed: Tensor | None = None, local_add_cond: Tensor | None = None,
                padding_mask: Tensor | None = None) -> Tensor:
        """One network evaluation (no guidance): the velocity v = eps - x0 for rectified flow.

        Args:
            x: Tensor[B, C, L] noisy latents.
            t: Tensor[B] flow time (kept in float32 for the features).
            cross_attn_cond: Tensor[B, M, cond_token_dim] (text tokens, then the duration token).
            global_embed: Tensor[B, global_cond_dim] (the duration embedding).
            local_add_cond: Tensor[B, local_add_cond_dim, L] (inpainting mask, masked latents).
            padding_mask: Tensor[B, L] bool, True = valid latent frame.

        Returns:
            Tensor[B, C, L].
        """
        dtype = self.preprocess_conv.weight.dtype
        x = x.to(dtype)
        if x.dim() != 3 or x.shape[1] != self.io_channels:
            raise InputError(f"x must have shape [B, {self.io_channels}, L], got {tuple(x.shape)}")
        context = None
        if cross_attn_cond is not None and self.to_cond_embed is not None:
            context = self.to_cond_embed(cross_attn_cond.to(dtype))
        if global_embed is not None and self.to_global_embed is not None:
            global_embed = self.to_global_embed(global_embed.to(dtype))
        if local_add_cond is None and self.local_add_cond_dim:
            # Text-to-audio: the reference still embeds an all-zero inpainting input.
            local_add_cond = x.new_zeros(x.shape[0], self.local_add_cond_dim, x.shape[2])
        if local_add_cond is not None:
            local_add_cond = local_add_cond.to(dtype).transpose(1, 2)

        time = self._time_features(t.float()).to(dtype)
        time_embed = self.to_timestep_embed(self.timestep_features(time[:, None]))
        global_embed = time_embed if global_embed is None else global_embed + time_embed

        x = self.preprocess_conv(x) + x
        out = self.transformer(x.transpose(1, 2), context=context, global_cond=global_embed,
                               local_add_cond=local_add_cond,
                               padding_mask=None if padding_mask is None else padding_mask.bool())
        out = out.transpose(1, 2)
        return self.postprocess_conv(out) + out
