"""CLAP (Wu et al. 2023): a text tower and an audio tower projecting into one embedding space,
loaded from a local Hugging Face folder (config.json + model.safetensors in transformers'
`ClapModel` key layout, e.g. laion/clap-htsat-unfused) or from laion_clap's own checkpoint file
(`from_laion_checkpoint`, renamed by clap_laion.py). Inference only; no transformers needed.

The towers live in clap_text.py (RoBERTa) and clap_audio.py (HTSAT). Either can be loaded alone:
Stable Audio's `clap_text` conditioner needs only the text tower.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, InputError
from .clap_audio import ClapAudioModel, relative_position_index
from .clap_config import ClapAudioConfig, ClapConfig
from .clap_laion import laion_to_hf, read_laion_checkpoint
from .clap_text import ClapTextModel
# Hugging Face folder reading is shared with the T5 loader (single file, shards, pickle refusal).
from .hf_folder import CONFIG_FILE, read_weights, select_weights, weight_files

TOWERS = ("text", "audio")
# laion_clap's fused checkpoints (630k-fusion-best.pt, 630k-audioset-fusion-best.pt): the
# architecture of the Hugging Face laion/clap-htsat-fused folder.
LAION_FUSED_CONFIG = ClapConfig(audio=ClapAudioConfig(enable_fusion=True, fusion_type="aff_2d"))
# Checkpoint key prefixes of each tower (our module `text` holds keys `text.<checkpoint key>`).
TOWER_PREFIXES = {"text": ("text_model.", "text_projection."), "audio": ("audio_model.", "audio_projection.")}


class ClapModel(nn.Module):
    """CLAP's two towers (`text`, `audio`; either may be None) and the learned logit scales."""

    def __init__(self, config: ClapConfig, towers: tuple[str, ...] = TOWERS):
        super().__init__()
        unknown = sorted(set(towers) - set(TOWERS))
        if unknown or not towers:
            raise InputError(f"towers must be a non-empty subset of {list(TOWERS)}, got {list(towers)}")
        self.config = config
        self.text = ClapTextModel(config.text) if "text" in towers else None
        self.audio = ClapAudioModel(config.audio) if "audio" in towers else None
        # log of the inverse temperature for audio->text and text->audio logits.
        self.logit_scale_a = nn.Parameter(torch.tensor(0.0))
        self.logit_scale_t = nn.Parameter(torch.tensor(0.0))

    @property
    def projection_dim(self) -> int:
        return self.config.projection_dim

    def _tower(self, name: str) -> nn.Module:
        tower = getattr(self, name)
        if tower is None:
            raise InputError(f"this CLAP model was loaded without its {name} tower; load it with towers=('text', 'audio')")
        return tower

    def text_embedding(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """LongTensor[B, L] -> Tensor[B, P], L2-normalised (laion-clap's get_text_embedding)."""
        return F.normalize(self._tower("text")(input_ids, attention_mask).text_embeds, dim=-1)

    def audio_embedding(self, input_features: Tensor, is_longer: Tensor | None = None) -> Tensor:
        """Tensor[B, C, T, F] log-mel -> Tensor[B, P], L2-normalised."""
        return F.normalize(self._tower("audio")(input_features, is_longer).audio_embeds, dim=-1)

    def logits(self, text_embeds: Tensor, audio_embeds: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised Tensor[Bt, P], Tensor[Ba, P] -> (logits_per_text [Bt, Ba], logits_per_audio
        [Ba, Bt]): cosine similarities scaled by exp(logit_scale_t) and exp(logit_scale_a)."""
        similarity = text_embeds @ audio_embeds.t()
        return similarity * self.logit_scale_t.exp(), similarity.t() * self.logit_scale_a.exp()

    @classmethod
    def from_config(cls, raw: dict) -> "ClapModel":
        return cls(ClapConfig.from_dict(raw))

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        towers: tuple[str, ...] = TOWERS,
    ) -> "ClapModel":
        """Load a Hugging Face CLAP folder: config.json + model.safetensors (or shards with
        model.safetensors.index.json). Only safetensors are read. The checkpoint must hold exactly
        the keys of the requested towers (keys of a tower not requested are skipped); anything
        missing, extra or mis-shaped raises CheckpointError listing it. Returns the model in eval
        mode on `device`, floating tensors in `dtype`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"CLAP folder {folder} not found")
        config = ClapConfig.from_json_file(folder / CONFIG_FILE)
        return cls._from_items(config, towers, dtype, device, "CLAP checkpoint",
                               lambda checks: read_weights(weight_files(folder), **checks))

    @classmethod
    def from_laion_checkpoint(
        cls,
        path: str | Path,
        config: ClapConfig | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        towers: tuple[str, ...] = TOWERS,
    ) -> "ClapModel":
        """Load laion_clap's own checkpoint file (e.g. 630k-audioset-fusion-best.pt, read with
        torch.load(weights_only=True)); the file holds no config, so `config` defaults to the one
        those checkpoints share (LAION_FUSED_CONFIG: RoBERTa-base, HTSAT-tiny with fusion). Keys are
        renamed as clap_laion.py describes and then checked like `from_pretrained`'s."""
        config = LAION_FUSED_CONFIG if config is None else config
        state = laion_to_hf(read_laion_checkpoint(path))
        items = [(key, (lambda value=value: value)) for key, value in state.items()]
        return cls._from_items(config, towers, dtype, device, f"LAION CLAP checkpoint {Path(path).name}",
                               lambda checks: select_weights(items, **checks))

    @classmethod
    def _from_items(cls, config: ClapConfig, towers: tuple[str, ...], dtype: torch.dtype,
                    device: torch.device | str, what: str, read) -> "ClapModel":
        with torch.device("meta"):
            model = cls(config, towers)
        expected = {_checkpoint_key(key): value for key, value in model.state_dict().items()}
        skipped = tuple(p for name in TOWERS if name not in towers for p in TOWER_PREFIXES[name])
        derived = _derived_buffers(config)
        state = read(dict(
            expected=expected, dtype=dtype, what=what, depth=4,
            # BatchNorm's training counter is not a weight.
            skip=lambda key: key.startswith(skipped) or key.endswith(".num_batches_tracked"),
            derived=lambda key: _derived_value(key, derived),
            hint=" (a fused model has enable_fusion: true)"))
        model.load_state_dict({_model_key(key): value for key, value in state.items()}, strict=True, assign=True)
        return model.to(device).eval()


def _checkpoint_key(model_key: str) -> str:
    """Our key -> transformers' key: the tower attribute is not part of the checkpoint's names."""
    tower, _, rest = model_key.partition(".")
    return rest if tower in TOWERS else model_key


def _model_key(checkpoint_key: str) -> str:
    for tower, prefixes in TOWER_PREFIXES.items():
        if checkpoint_key.startswith(prefixes):
            return f"{tower}.{checkpoint_key}"
    return checkpoint_key


def _derived_buffers(config: ClapConfig) -> dict[str, Tensor]:
    """Buffers transformers saves but this implementation computes: {key suffix or key: value}.
    A checkpoint may hold them or not; when it does, they must have these values."""
    positions = config.text.max_position_embeddings
    return {
        "text_model.embeddings.position_ids": torch.arange(positions)[None],
        "text_model.embeddings.token_type_ids": torch.zeros(1, positions, dtype=torch.long),
        ".relative_position_index": relative_position_index(config.audio.window_size),
    }


def _derived_value(key: str, derived: dict[str, Tensor]) -> Tensor | None:
    if key in derived:
        return derived[key]
    if key.endswith(".relative_position_index"):
        return derived[".relative_position_index"]
    return None

