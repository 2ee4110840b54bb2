"""The default model that ships inside the package (trained by this project, see
``default_model/MODEL_CARD.md``): where its files are and how to load it.

Layout of ``stable_audio_core/default_model/``:
  model_config.json   stable-audio-tools config (U-Net diffusion, Oobleck VAE, CLAP + int timing)
  model.safetensors   the diffusion model, its VAE and conditioner weights (stable-audio-tools keys)
  clap/               Hugging Face CLAP folder: the text encoder (and the audio tower for scoring)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError

DEFAULT_MODEL_DIR = Path(__file__).parent
# How hosts (the CLI, the loader node's checkpoint list, workflows) name the bundled model.
DEFAULT_MODEL_NAME = "bundled/default-small"


@dataclass(frozen=True)
class BundledModel:
    config: Path
    checkpoint: Path
    text_encoder: Path


def default_model_files(folder: str | Path | None = None) -> BundledModel:
    """The bundled model's files (in ``folder``, default DEFAULT_MODEL_DIR, read at call time so
    tests can point it elsewhere); InputError naming what is missing."""
    folder = Path(DEFAULT_MODEL_DIR if folder is None else folder)
    files = BundledModel(folder / "model_config.json", folder / "model.safetensors", folder / "clap")
    missing = [str(p) for p in (files.config, files.checkpoint, files.text_encoder / "config.json")
               if not p.is_file()]
    if missing:
        raise InputError(f"the bundled default model is incomplete: missing {missing}; reinstall the "
                         "package, or pass --config/--checkpoint for another model")
    return files


def load_default_model(device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                       **kwargs):
    """``factory.load_model`` on the bundled files (kwargs as load_model's)."""
    from ..factory import load_model
    files = default_model_files()
    return load_model(files.config, files.checkpoint, text_encoder=files.text_encoder,
                      device=device, dtype=dtype, **kwargs)
