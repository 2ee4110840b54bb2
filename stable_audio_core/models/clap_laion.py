"""LAION CLAP's own checkpoints (`630k-audioset-fusion-best.pt` and its siblings, the state dict of
laion_clap's `CLAP` module) renamed into the Hugging Face `ClapModel` layout our towers read.

The file is read with `torch.load(weights_only=True)`: a dict of tensors, optionally under
"state_dict" and with DistributedDataParallel's "module." prefix. Names differ only in the audio
tower and the projections:

    text_branch.*                      -> text_model.*   (both are transformers' RoBERTa)
    {text,audio}_projection.0 / .2     -> {text,audio}_projection.linear1 / .linear2
    audio_branch.*                     -> audio_model.audio_encoder.*, and inside it
      bn0                              -> batch_norm
      blocks.N.norm1 / norm2           -> blocks.N.layernorm_before / layernorm_after
      blocks.N.attn.qkv (one [3D, D])  -> blocks.N.attention.self.query / key / value
      blocks.N.attn.proj               -> blocks.N.attention.output.dense
      blocks.N.attn.relative_position_* -> blocks.N.attention.self.relative_position_*
      blocks.N.mlp.fc1 / fc2           -> blocks.N.intermediate.dense / output.dense

Dropped: laion's training-only MLPs on the embeddings (`text_transform`, `audio_transform`), the
AudioSet classifier (`audio_branch.tscam_conv`, `audio_branch.head`), the STFT and mel filters
(`audio_branch.spectrogram_extractor`, `logmel_extractor`: ClapFeatureExtractor computes them) and
the shifted-window masks (`attn_mask`, recomputed).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError

LAION_DOWNLOAD = "https://huggingface.co/lukewys/laion_clap (630k-audioset-fusion-best.pt)"
_DROPPED_PREFIXES = ("text_transform.", "audio_transform.", "audio_branch.tscam_conv.", "audio_branch.head.",
                     "audio_branch.spectrogram_extractor.", "audio_branch.logmel_extractor.")
_BLOCK_RENAMES = (
    (".norm1.", ".layernorm_before."), (".norm2.", ".layernorm_after."),
    (".attn.proj.", ".attention.output.dense."),
    (".attn.relative_position_", ".attention.self.relative_position_"),
    (".mlp.fc1.", ".intermediate.dense."), (".mlp.fc2.", ".output.dense."),
)
_BLOCK = re.compile(r"^layers\.\d+\.blocks\.\d+\.")
_PROJECTION = re.compile(r"^(text|audio)_projection\.([02])\.")


def read_laion_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a laion_clap checkpoint file (unwrapped, "module." stripped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"LAION CLAP checkpoint {path} not found; download it from {LAION_DOWNLOAD}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("WeightsUnpickler error")), lines[0] if lines else "")
        raise CheckpointError(
            f"cannot read {path} as a checkpoint of tensors with torch.load(weights_only=True) ({reason}); "
            f"expected laion_clap's {LAION_DOWNLOAD} or a Hugging Face folder such as laion/clap-htsat-fused. "
            "(a file that pickles other objects beside the weights: where you trust it, torch.save its "
            "'state_dict' alone)"
        ) from exc
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors; expected {LAION_DOWNLOAD}")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if not any(key.startswith(("audio_branch.", "text_branch.")) for key in state):
        raise CheckpointError(
            f"{path} is not a LAION CLAP checkpoint (no audio_branch.* or text_branch.* keys); "
            f"expected {LAION_DOWNLOAD}"
        )
    return state


def laion_to_hf_key(key: str) -> str | None:
    """One laion_clap key -> its transformers ClapModel key; None for the keys left out. The
    fused qkv weight keeps its name (``.attn.qkv.``) for `laion_to_hf` to split."""
    if key.startswith(_DROPPED_PREFIXES) or key.endswith(".attn_mask"):
        return None
    if key.startswith("text_branch."):
        return "text_model." + key.removeprefix("text_branch.")
    match = _PROJECTION.match(key)
    if match:
        linear = "linear1" if match.group(2) == "0" else "linear2"
        return f"{match.group(1)}_projection.{linear}." + key[match.end():]
    if not key.startswith("audio_branch."):
        return key  # logit_scale_a / logit_scale_t
    rest = key.removeprefix("audio_branch.")
    if rest.startswith("bn0."):
        rest = "batch_norm." + rest.removeprefix("bn0.")
    elif _BLOCK.match(rest):
        for old, new in _BLOCK_RENAMES:
            rest = rest.replace(old, new)
    return "audio_model.audio_encoder." + rest


def laion_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A laion_clap state dict -> the same tensors under transformers' ClapModel names."""
    out = {}
    for key, value in state.items():
        name = laion_to_hf_key(key)
        if name is None:
            continue
        if ".attn.qkv." in name:
            # laion projects q, k and v with one Linear; its output rows are q, then k, then v.
            stem, _, kind = name.rpartition(".attn.qkv.")
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{stem}.attention.self.{part}.{kind}"] = chunk
            continue
        out[name] = value
    return out
