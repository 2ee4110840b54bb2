"""Inference checkpoints from trained networks, in the layouts other tools load.

- Diffusion: one safetensors file in stable-audio-tools' layout (``model.model.*`` backbone,
  ``pretransform.model.*`` VAE, ``conditioner.conditioners.*``) plus its ``model_config.json``
  (model_type ``diffusion_cond``): what ``create_model_from_config`` + ``load_state_dict`` and our
  ``factory.load_model`` read. LoRA adapters are merged first, so the keys are the plain ones.
- CLAP: a Hugging Face CLAP folder (``config.json``, ``model.safetensors`` in transformers'
  ``ClapModel`` key layout, ``tokenizer.json`` + ``tokenizer_config.json``,
  ``preprocessor_config.json``), what ``ClapModel.from_pretrained`` and our CLAP loader read.

Files are written to a temporary name in the target folder and renamed, so a reader never sees
a partial file.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from ..atomic_files import atomic_write
from ..checkpoint import RUN_CONFIG_FILE, RUN_MODEL_FILE
from ..models.clap import ClapModel, _checkpoint_key
from ..models.clap_audio import FrozenBatchNorm
from ..models.clap_config import ClapConfig
from ..models.hf_folder import WEIGHTS_FILE
from ..models.stable_audio import StableAudioModel
from ..lora import merge_loras
from .lora import has_lora, merge_lora


def save_safetensors(state_dict: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_json(data: Any, path: str | Path) -> Path:
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# --- diffusion --------------------------------------------------------------------------------

def plain_backbone(backbone: nn.Module) -> nn.Module:
    """The backbone as a plain network: a merged copy when it carries LoRA adapters, else itself."""
    return merge_lora(copy.deepcopy(backbone)) if has_lora(backbone) else backbone


def diffusion_state_dict(model: StableAudioModel, backbone: nn.Module | None = None) -> dict[str, Tensor]:
    """The full stable-audio-tools state dict of ``model``, with ``backbone`` (e.g. the EMA copy)
    in place of the model's own when given. Tensors are detached CPU copies."""
    backbone = plain_backbone(model.backbone if backbone is None else backbone)
    state: dict[str, Tensor] = {}
    for key, value in backbone.state_dict().items():
        state[f"model.model.{key}"] = value
    for key, value in model.conditioner.conditioners.state_dict().items():
        state[f"conditioner.conditioners.{key}"] = value
    if model.autoencoder is not None:
        for key, value in model.autoencoder.state_dict().items():
            state[f"pretransform.model.{key}"] = value
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def diffusion_model_config(model: StableAudioModel) -> dict:
    """The model's stable-audio-tools ``model_config.json`` dict (a copy)."""
    return copy.deepcopy(model.config.raw)


def save_diffusion_checkpoint(model: StableAudioModel, folder: str | Path,
                              backbone: nn.Module | None = None) -> tuple[Path, Path]:
    """Write ``model.safetensors`` + ``model_config.json`` into ``folder``; returns both paths."""
    folder = Path(folder)
    checkpoint = save_safetensors(diffusion_state_dict(model, backbone), folder / RUN_MODEL_FILE)
    config = save_json(diffusion_model_config(model), folder / RUN_CONFIG_FILE)
    return checkpoint, config


def save_merged_checkpoint(model: StableAudioModel, path: str | Path,
                           dtypes: dict[str, torch.dtype] | torch.dtype | None = None) -> Path:
    """Fold the runtime LoRAs applied to a Stable Audio 3 model (`lora.load_loras`) into its
    weights and write the whole model as one plain checkpoint in the reference's layout
    (``model.model.*``, ``conditioner.conditioners.*``, ``pretransform.model.*``); the model
    keeps the merged weights. `dtypes`: one dtype for every floating tensor, or key -> dtype
    (e.g. those of the checkpoint the model was loaded from, so the merged file is stored as its
    source was); None writes the model's own dtypes."""
    merge_loras(model.backbone)
    state = diffusion_state_dict(model)
    if dtypes is not None:
        wanted = (lambda key: dtypes) if isinstance(dtypes, torch.dtype) else dtypes.get  # noqa: E731
        state = {key: value.to(wanted(key)) if value.is_floating_point() and wanted(key) is not None else value
                 for key, value in state.items()}
    return save_safetensors(state, path)


# --- CLAP -------------------------------------------------------------------------------------

def _pair_or_int(value: tuple[int, int]) -> int | list[int]:
    return value[0] if value[0] == value[1] else list(value)


def clap_config_dict(config: ClapConfig) -> dict:
    """ClapConfig -> the ``config.json`` of a Hugging Face CLAP folder (transformers' keys)."""
    text = asdict(config.text)
    text["model_type"] = "clap_text_model"
    audio = asdict(config.audio)
    audio.update(
        model_type="clap_audio_model",
        depths=list(config.audio.depths),
        num_attention_heads=list(config.audio.num_attention_heads),
        patch_size=_pair_or_int(config.audio.patch_size),
        patch_stride=list(config.audio.patch_stride),
        # transformers reads both instead of deriving them.
        hidden_size=config.audio.hidden_size,
        num_hidden_layers=len(config.audio.depths),
    )
    return {
        "architectures": ["ClapModel"],
        "model_type": "clap",
        "projection_dim": config.projection_dim,
        "projection_hidden_act": config.text.projection_hidden_act,
        "text_config": text,
        "audio_config": audio,
    }


def clap_state_dict(model: ClapModel) -> dict[str, Tensor]:
    """The model's weights under transformers' ``ClapModel`` keys, with the buffers
    ``save_pretrained`` writes (RoBERTa's position/token-type ids, BatchNorm counters)."""
    state = {_checkpoint_key(k): v for k, v in model.state_dict().items()}
    if model.text is not None:
        positions = model.config.text.max_position_embeddings
        state["text_model.embeddings.position_ids"] = torch.arange(positions)[None]
        state["text_model.embeddings.token_type_ids"] = torch.zeros(1, positions, dtype=torch.long)
    if model.audio is not None:
        for name, module in model.audio.named_modules():
            if isinstance(module, FrozenBatchNorm):
                state[f"{name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def clap_tokenizer_config(pad_token: str = "<pad>") -> dict:
    """tokenizer_config.json naming RoBERTa's special tokens (transformers and our loader read it)."""
    return {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
            "unk_token": "<unk>", "mask_token": "<mask>", "pad_token": pad_token,
            "model_max_length": 512, "tokenizer_class": "PreTrainedTokenizerFast"}


def save_clap_folder(model: ClapModel, tokenizer_json: str, folder: str | Path,
                     preprocessor: dict | None = None, pad_token: str = "<pad>") -> Path:
    """Write a Hugging Face CLAP folder: config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json and (when given) preprocessor_config.json. ``tokenizer_json`` is the
    serialised ``tokenizers.Tokenizer`` (``Tokenizer.to_str()``)."""
    folder = Path(folder)
    save_json(clap_config_dict(model.config), folder / "config.json")
    save_safetensors(clap_state_dict(model), folder / WEIGHTS_FILE, metadata={"format": "pt"})
    atomic_write(folder / "tokenizer.json",
                  lambda tmp: Path(tmp).write_text(tokenizer_json, encoding="utf-8"))
    save_json(clap_tokenizer_config(pad_token), folder / "tokenizer_config.json")
    if preprocessor is not None:
        save_json(preprocessor, folder / "preprocessor_config.json")
    return folder
