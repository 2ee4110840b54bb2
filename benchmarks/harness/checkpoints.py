"""Random-weight checkpoints and the shared text encoder folder every party loads (our environment).

Nothing is downloaded. Weights come from our own model classes with a fixed seed; parameters that
start at zero (attention/feed-forward outputs, the DiT's 1x1 convs) get small random values so
every path does work and the agreement check sees it. Files (stable-audio-tools layout):

  <name>.model_config.json   the exact config every party builds
  <name>.safetensors          model.model.*, conditioner.conditioners.*, pretransform.model.*
  t5-<scale>/                 config.json, model.safetensors (Hugging Face T5 encoder keys),
                              tokenizer.json + tokenizer_config.json + special_tokens_map.json

The tokenizer is a word-level `tokenizers` model with T5's conventions (<pad> = 0, </s> = 1
appended, <unk> = 2), so every party tokenizes the prompt to the same ids from the same file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ZERO_INIT_STD = 0.02

# Words of the tokenizer's vocabulary (ids 3...); anything else maps to <unk>.
WORDS = (
    "a an and with of in on the to for from by at slow fast soft loud warm cold bright dark deep "
    "analog digital synth synthesizer pad lead bass drum drums kick snare hat hihat cymbal piano "
    "guitar violin cello strings brass horn flute choir vocal voice chords chord melody arpeggio "
    "evolving pulsing rhythmic ambient electronic techno house jazz rock pop orchestral cinematic "
    "lofi hiphop vinyl crackle noise reverb delay echo distortion filter sweep rise drop loop beat "
    "groove bpm 60 70 80 90 100 110 120 128 140 160 minor major key tempo long short sustained "
    "plucked bowed struck gentle aggressive dreamy dark uplifting sad happy calm energetic"
).split()


def build_tokenizer_files(folder: Path, model_max_length: int = 512) -> None:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    special = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                "padding_side": "right", "truncation_side": "right", **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))


def _fill_zero_parameters_(module: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.numel() and not parameter.abs().max() > 0:
                parameter.copy_(ZERO_INIT_STD * torch.randn(parameter.shape, generator=generator))


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({key: value.detach().contiguous() for key, value in state.items()}, str(path))


def write_t5_folder(folder: Path, config: dict, seed: int) -> None:
    from stable_audio_core.text.t5 import T5Encoder

    torch.manual_seed(seed)
    encoder = T5Encoder.from_config(config)
    # torch's default Linear init is far wider than T5's; keep activations in a sane range.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if parameter.dim() == 2 and "relative_attention_bias" not in name:
                std = 1.0 if "embed" in name or "shared" in name else parameter.shape[1] ** -0.5
                parameter.copy_(std * torch.randn(parameter.shape, generator=generator))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    state = encoder.state_dict()
    state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    _save(state, folder / "model.safetensors")
    build_tokenizer_files(folder)


def write_model(config: dict, path: Path, seed: int) -> int:
    """Build the model of `config` with fixed random weights and save it; returns parameters."""
    from stable_audio_core.factory import build_model

    torch.manual_seed(seed)
    model = build_model(config)
    _fill_zero_parameters_(model, torch.Generator().manual_seed(seed))
    _save(model.state_dict(), path)
    return sum(p.numel() for p in model.parameters())


def write_latents(path: Path, frames: int, channels: int = 64, seed: int = 1) -> None:
    import numpy as np

    latents = torch.randn(1, channels, frames, generator=torch.Generator().manual_seed(seed))
    np.save(path, latents.numpy())
