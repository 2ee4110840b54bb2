"""Reading checkpoints safely and loading them strictly, with errors a user can act on.

Accepted: safetensors files (always preferred) and `.ckpt`/`.pt` files readable with
`torch.load(weights_only=True)` (never arbitrary pickles). Key layout: stable-audio-tools'
(`model.model.*`, `pretransform.model.*`, `conditioner.conditioners.*`); weight-norm pairs may be
stored as `weight_g`/`weight_v`, as torch parametrizations (`parametrizations.weight.original0/1`)
or folded into a plain `weight`; all three load into the same model.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .models.layers import match_weight_norm_form


# What a training run folder holds (training/state.py writes it with these names): a `latest`
# file naming the newest complete checkpoint folder, each folder holding the exported weights
# and the model config under these names.
RUN_LATEST_FILE = "latest"
RUN_MODEL_FILE = "model.safetensors"
RUN_CONFIG_FILE = "model_config.json"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training run folder (-> its latest checkpoint's weights), or one
    checkpoint folder of a run (-> its weights)."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / RUN_MODEL_FILE).is_file():
        return path / RUN_MODEL_FILE
    latest = path / RUN_LATEST_FILE
    if latest.is_file():
        named = path / latest.read_text().strip()
        if (named / RUN_MODEL_FILE).is_file():
            return named / RUN_MODEL_FILE
    raise CheckpointError(
        f"{path} is a folder but neither a training run (with a '{RUN_LATEST_FILE}' file naming a "
        f"complete checkpoint) nor a checkpoint folder holding {RUN_MODEL_FILE}"
    )


def config_beside(path: str | Path) -> Path:
    """The `model_config.json` saved beside a checkpoint (`path` as `resolve_checkpoint` takes it);
    it may not exist (a bare weights file)."""
    return resolve_checkpoint(path).parent / RUN_CONFIG_FILE


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint into a flat {key: tensor} dict on the CPU. `path` is a file, or a training
    run folder / checkpoint folder (see `resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be read with torch.load(weights_only=True) ({load_failure_reason(exc)}); only "
            "safetensors and plain tensor checkpoints are loaded, never arbitrary pickles: convert it "
            "to safetensors with the tool that wrote it"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors")
    return data


def load_failure_reason(exc: Exception) -> str:
    """torch.load's reason without its advice to retry with weights_only=False (which would run
    the file's code): the unpickler's own error line when there is one."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = " ".join(text[text.index(marker) + len(marker):].split("\n\n")[:2]).strip()
        return "not a plain tensor file: " + (reason.split(". ")[0].strip() or "unreadable")[:200]
    lines = [line for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return (lines[0].strip() if lines else type(exc).__name__)[:200]


# Checkpoint key prefixes that hold an autoencoder: a diffusion model's pretransform, a
# stable-audio-tools training wrapper's autoencoder.
AUTOENCODER_PREFIXES = ("pretransform.model.", "autoencoder.")


def autoencoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The autoencoder's weights (``encoder.*``, ``decoder.*``) in a checkpoint's state: a diffusion
    model's ``pretransform.model.*`` or a training wrapper's ``autoencoder.*`` with the prefix
    taken off; a bare autoencoder's state as it is."""
    for prefix in AUTOENCODER_PREFIXES:
        selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if selected:
            return selected
    return state


def _group(keys) -> str:
    """Summarise keys grouped by their first two dotted components, a few examples each."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        groups[".".join(key.split(".")[:2])].append(key)
    lines = []
    for prefix, members in groups.items():
        shown = ", ".join(members[:3]) + (f", ... ({len(members)} keys)" if len(members) > 3 else "")
        lines.append(f"  {prefix}.*: {shown}")
    return "\n".join(lines)


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Load `state_dict` into `module`, raising CheckpointError listing every mismatch."""
    own = module.state_dict()
    expected = {k: v.shape for k, v in own.items()}
    state_dict = match_weight_norm_form(state_dict, expected)
    # Buffers are derived, not learned (LayerNorm's zero beta, rotary frequencies); repackaged
    # checkpoints such as ComfyUI's may leave them out, so missing ones keep the built values.
    buffers = {name for name, _ in module.named_buffers()}
    for key in (set(expected) - set(state_dict)) & buffers:
        state_dict[key] = own[key]
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    mismatched = [
        f"  {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}"
        for k in sorted(set(expected) & set(state_dict)) if state_dict[k].shape != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) the model needs are missing from {what}:\n{_group(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) in {what} are not in the model:\n{_group(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es):\n" + "\n".join(mismatched[:20]))
    if problems:
        raise CheckpointError(
            f"{what} does not match the model built from the config:\n" + "\n".join(problems)
            + "\nCheck that the config file belongs to this checkpoint."
        )
    module.load_state_dict(state_dict, strict=True)
