"""Text conditioners: a prompt through a frozen text encoder (T5, CLAP's text tower, T5Gemma),
then the projection to the conditioning width; `(tokens [B, N, D], mask [B, N])` as every
conditioner returns, with stable-audio-tools' / stable-audio-3's state-dict keys."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError


class TextConditioner(nn.Module):
    """Text through a frozen encoder attached after construction, then `proj_out`.

    The encoder's weights live in their own Hugging Face folder, never in a stable-audio-tools
    checkpoint: only `proj_out` is (a Linear when the encoder's `width` differs from the
    model's conditioning width or project_out is set, else an Identity). A subclass names its
    encoder and says how wide an attached one is and how it turns texts into tokens.
    """

    # stable-audio-tools' T5 conditioner zeroes the padded tokens after the projection; its CLAP
    # conditioner keeps what the encoder left there.
    zero_padding = False

    def __init__(self, output_dim: int, width: int, project_out: bool):
        super().__init__()
        self.width = width
        self.proj_out = nn.Linear(width, output_dim) if (width != output_dim or project_out) else nn.Identity()
        self.text_encoder = None  # set by attach_text_encoder; kept out of the state dict

    def encoder_width(self, encoder) -> int:
        """How wide the tokens of `encoder` are, to compare with `width`."""
        raise NotImplementedError

    def width_error(self, width: int) -> Exception:
        """The error for an encoder `width` wide where `self.width` is expected."""
        raise NotImplementedError

    def missing_encoder_error(self) -> Exception:
        """The error for a forward call before an encoder was attached."""
        raise NotImplementedError

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (tokens Tensor[B, N, width], mask [B, N]) from the attached encoder."""
        raise NotImplementedError

    def attach_text_encoder(self, encoder) -> None:
        """Attach a text encoder (stable_audio_core.text); it is not a submodule."""
        width = self.encoder_width(encoder)
        if width != self.width:
            raise self.width_error(width)
        self.__dict__["text_encoder"] = encoder

    def forward(self, texts: list[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_encoder is None:
            raise self.missing_encoder_error()
        tokens, mask = self.encode(["" if t is None else str(t) for t in texts])
        tokens, mask = tokens.to(device), mask.to(device)
        if not isinstance(self.proj_out, nn.Identity):
            tokens = self.proj_out(tokens.to(self.proj_out.weight.dtype))
        if self.zero_padding:
            tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return tokens, mask


# What the error for a missing text encoder tells the user to pass.
_ENCODER_FOLDER_HINT = "(config.json, *.safetensors, tokenizer.json) as text_encoder / --text-encoder"


class T5Conditioner(TextConditioner):
    """Text through a frozen T5 encoder (`T5TextEncoder`, stable_audio_core.text.t5_encoder).

    The width comes from the T5's name; a local or custom T5 (a path as name) must be as wide as
    the conditioning, checked when the encoder is attached.
    """

    T5_WIDTHS = {
        "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
        "google/t5-v1_1-xl": 2048, "google/t5-v1_1-xxl": 4096, "google/flan-t5-small": 512,
        "google/flan-t5-base": 768, "google/flan-t5-large": 1024, "google/flan-t5-3b": 1024,
        "google/flan-t5-11b": 1024, "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096,
    }
    zero_padding = True

    def __init__(self, output_dim: int, t5_model_name: str = "t5-base", max_length: int = 128,
                 enable_grad: bool = False, project_out: bool = False):
        width = self.T5_WIDTHS.get(t5_model_name)
        if width is None:
            # The projection's shape cannot be known before the encoder is attached.
            if project_out:
                raise ConfigError(
                    f"t5 conditioner: t5_model_name '{t5_model_name}' is not a known T5 "
                    f"({sorted(self.T5_WIDTHS)}), so project_out cannot be sized; use a known name"
                )
            width = output_dim
        if enable_grad:
            raise ConfigError("t5 conditioner: enable_grad=true (fine-tuning T5) is not supported")
        super().__init__(output_dim, width, project_out)
        self.t5_model_name = t5_model_name
        self.max_length = int(max_length)

    def encoder_width(self, encoder) -> int:
        return encoder.dim

    def width_error(self, width: int) -> Exception:
        return ConfigError(
            f"the T5 encoder is {width} wide but this model's text conditioner expects "
            f"{self.width} ({self.t5_model_name}); pass the matching T5 folder"
        )

    def missing_encoder_error(self) -> Exception:
        return InputError(
            f"this model's text conditioner needs a T5 encoder ({self.t5_model_name}); pass the "
            f"folder of a local Hugging Face T5 model {_ENCODER_FOLDER_HINT}"
        )

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder.encode(texts)


class CLAPTextConditioner(TextConditioner):
    """Text through a frozen CLAP text tower (`ClapTextEncoder`, stable_audio_core.text.clap_encoder).

    With use_text_features, the tokens are one hidden layer of the text encoder (feature_layer_ix,
    -2 = penultimate; 77 tokens, padded positions kept as the encoder left them, as the reference
    does) and the mask marks real tokens. Otherwise a single token: the L2-normalised joint-space
    text embedding. The reference's clap_ckpt_path (a laion-clap file) is accepted but the
    weights come from the attached encoder. The reference fixes the widths at 768 (roberta-base)
    and 512 (joint space); the config keys `text_width` / `embedding_dim` (this project's
    extension, absent from stable-audio-tools configs) declare other CLAP sizes, such as the
    bundled default model's.
    """

    def __init__(self, output_dim: int, clap_ckpt_path: str | None = None, use_text_features: bool = False,
                 feature_layer_ix: int = -1, audio_model_type: str = "HTSAT-base", enable_fusion: bool = True,
                 project_out: bool = False, finetune: bool = False, *, text_width: int = 768,
                 embedding_dim: int = 512):
        if finetune:
            raise ConfigError("clap_text conditioner: finetune=true (training CLAP) is not supported")
        if not isinstance(feature_layer_ix, int) or isinstance(feature_layer_ix, bool):
            raise ConfigError(f"clap_text conditioner: feature_layer_ix must be an int, got {feature_layer_ix!r}")
        super().__init__(output_dim, text_width if use_text_features else embedding_dim, project_out)
        self.clap_ckpt_path = clap_ckpt_path
        self.use_text_features = bool(use_text_features)
        self.feature_layer_ix = feature_layer_ix

    def encoder_width(self, encoder) -> int:
        return encoder.hidden_size if self.use_text_features else encoder.projection_dim

    def width_error(self, width: int) -> Exception:
        what = "hidden size" if self.use_text_features else "projection dim"
        return InputError(
            f"the CLAP text encoder's {what} is {width}, but this clap_text conditioner expects "
            f"{self.width}; use the CLAP model the diffusion checkpoint was trained with"
        )

    def missing_encoder_error(self) -> Exception:
        return InputError(
            "this model's text conditioner needs a CLAP text encoder; pass the folder of a local "
            f"Hugging Face CLAP model {_ENCODER_FOLDER_HINT}"
        )

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_text_features:
            return self.text_encoder.encode(texts, layer_ix=self.feature_layer_ix)
        tokens = self.text_encoder.embed(texts).unsqueeze(1)
        return tokens, torch.ones(tokens.shape[0], 1)


PADDING_MODES = ("learned", "zero", "none")


class T5GemmaConditioner(TextConditioner):
    """Text through a frozen T5Gemma encoder (`T5GemmaTextEncoder`, stable_audio_core.text), as
    Stable Audio 3's conditioner: the encoder's last_hidden_state, `proj_out`, then the padded
    positions replaced by a learned `padding_embedding` ("learned"), zeroed ("zero") or kept
    ("none"). Returns (tokens [B, max_length, output_dim], mask [B, max_length] bool).

    The encoder comes from `model_path` (a local Hugging Face folder; a relative path is read
    against the model config's folder) or from the folder passed to `load_model`.
    """

    T5GEMMA_WIDTHS = {"google/t5gemma-b-b-ul2": 768}

    def __init__(self, output_dim: int, model_name: str = "google/t5gemma-b-b-ul2", max_length: int = 128,
                 enable_grad: bool = False, project_out: bool = False, padding_mode: str = "zero",
                 model_path: str | None = None, repo_id: str | None = None, subfolder: str | None = None):
        if model_name not in self.T5GEMMA_WIDTHS:
            raise ConfigError(f"t5gemma conditioner: model_name {model_name!r} is not one of "
                              f"{sorted(self.T5GEMMA_WIDTHS)}")
        if enable_grad:
            raise ConfigError("t5gemma conditioner: enable_grad=true (fine-tuning T5Gemma) is not supported")
        if padding_mode not in PADDING_MODES:
            raise ConfigError(f"t5gemma conditioner: padding_mode {padding_mode!r} is not one of {PADDING_MODES}")
        super().__init__(output_dim, self.T5GEMMA_WIDTHS[model_name], project_out)
        self.model_name = model_name
        self.max_length = int(max_length)
        self.padding_mode = padding_mode
        self.model_path, self.repo_id, self.subfolder = model_path, repo_id, subfolder
        if padding_mode == "learned":
            self.padding_embedding = nn.Parameter(torch.randn(output_dim) * 0.02)

    def encoder_width(self, encoder) -> int:
        return encoder.dim

    def width_error(self, width: int) -> Exception:
        return ConfigError(f"the T5Gemma encoder is {width} wide but this model's text conditioner "
                           f"expects {self.width} ({self.model_name}); pass the matching T5Gemma folder")

    def missing_encoder_error(self) -> Exception:
        return InputError(f"this model's text conditioner needs a T5Gemma encoder ({self.model_name}); "
                          f"pass the folder of a local Hugging Face T5Gemma model (config.json, "
                          f"*.safetensors, tokenizer.json) as text_encoder / --text-encoder, or set "
                          f"the conditioner's model_path")

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder.encode(texts)

    def forward(self, texts: list[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = super().forward(texts, device)
        mask = mask.bool()
        if self.padding_mode == "learned":
            # The stored dtype's tokens (bf16) promote to the embedding's dtype, as in the reference.
            tokens = torch.where(mask[..., None], tokens, self.padding_embedding)
        elif self.padding_mode == "zero":
            tokens = tokens * mask[..., None].to(tokens.dtype)
        return tokens, mask
