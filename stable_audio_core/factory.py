"""Build a model from its config and load a checkpoint into it: the one entry point for loading."""

from __future__ import annotations

from pathlib import Path

import torch

from .acceleration import (choose_precision, compile_backbone, prepare_for_inference, use_bfloat16_matmuls,
                           use_int8_convolutions, use_int8_linears)
from .checkpoint import autoencoder_state, load_state_dict_strict, read_state_dict
from .config import ModelConfig, load_model_config
from .errors import CheckpointError, ConfigError, InputError
from .models.autoencoder import AudioAutoencoder, build_autoencoder
from .text.conditioners import CLAPTextConditioner, T5Conditioner, T5GemmaConditioner
from .models.hf_folder import CONFIG_FILE, read_json
from .models.stable_audio import StableAudioModel, backbone_type

# Checkpoint key prefixes (stable-audio-tools layout) -> submodule of StableAudioModel.
PREFIXES = {"model.model.": "backbone", "pretransform.model.": "autoencoder",
            "conditioner.conditioners.": "conditioner"}
TEXT_ENCODER_PREFIX = "text_encoders."  # ComfyUI's repackaged single file carries T5 here

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype '{dtype}'; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def build_model(config: str | Path | dict | ModelConfig) -> StableAudioModel:
    """A model with freshly initialised weights for `config`."""
    if not isinstance(config, ModelConfig):
        config = load_model_config(config)
    return StableAudioModel.from_config(config)


def split_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, dict], dict, list[str]]:
    """Split a full checkpoint into per-part dicts, the text-encoder weights and stray keys."""
    parts: dict[str, dict] = {name: {} for name in PREFIXES.values()}
    text_encoder, stray = {}, []
    for key, value in state_dict.items():
        for prefix, name in PREFIXES.items():
            if key.startswith(prefix):
                parts[name][key[len(prefix):]] = value
                break
        else:
            if key.startswith(TEXT_ENCODER_PREFIX):
                text_encoder[key[len(TEXT_ENCODER_PREFIX):]] = value
            else:
                stray.append(key)
    return parts, text_encoder, stray


def load_weights(model: StableAudioModel, state_dict: dict[str, torch.Tensor], what: str) -> dict:
    """Load a stable-audio-tools-layout state dict strictly; returns any text-encoder weights."""
    parts, text_encoder, stray = split_state_dict(state_dict)
    if stray:
        shown = ", ".join(sorted(stray)[:8])
        raise CheckpointError(
            f"{what} has {len(stray)} key(s) outside the stable-audio-tools layout "
            f"(model.model.*, pretransform.model.*, conditioner.conditioners.*): {shown}"
        )
    load_state_dict_strict(model.backbone, parts["backbone"], f"{what} [model.model.*]")
    if model.autoencoder is not None:
        load_state_dict_strict(model.autoencoder, parts["autoencoder"], f"{what} [pretransform.model.*]")
    elif parts["autoencoder"]:
        raise CheckpointError(f"{what} has VAE weights but the config has no pretransform")
    load_state_dict_strict(model.conditioner.conditioners, parts["conditioner"],
                           f"{what} [conditioner.conditioners.*]")
    return text_encoder


def load_autoencoder_weights(autoencoder: AudioAutoencoder, checkpoint: str | Path) -> None:
    """Load `checkpoint` strictly into `autoencoder`: an autoencoder checkpoint (``encoder.*``,
    ``decoder.*``, what VAE training exports) or a full model's ``pretransform.model.*``."""
    state = autoencoder_state(read_state_dict(checkpoint))
    load_state_dict_strict(autoencoder, state, f"{checkpoint} (pretransform)")


def load_autoencoder(model_config: str | Path | dict | ModelConfig,
                     checkpoint: str | Path | None = None) -> AudioAutoencoder:
    """The autoencoder alone, in eval mode without gradients (plain modules: call
    `prepare_for_inference` for the CPU swaps when it will only encode or decode), built from an autoencoder config
    (model_type "autoencoder", what VAE training writes) or a diffusion config's
    ``model.pretransform`` (a dict, a ModelConfig or the path of its JSON file), with the
    weights of `checkpoint` (see `load_autoencoder_weights`). Without a checkpoint the weights
    are freshly initialised."""
    if isinstance(model_config, ModelConfig):
        raw = model_config.raw
    elif isinstance(model_config, dict):
        raw = model_config
    else:
        raw = read_json(model_config, "model config")
    model = raw.get("model")
    if not isinstance(model, dict) or "sample_rate" not in raw:
        raise ConfigError("the model config needs 'sample_rate' and a 'model' section to build its autoencoder")
    if raw.get("model_type") == "autoencoder":
        pretransform = {"type": "autoencoder", "config": model}
    elif isinstance(model.get("pretransform"), dict):
        pretransform = model["pretransform"]
    else:
        raise ConfigError(f"the model config (model_type {raw.get('model_type')!r}) has no "
                          "autoencoder: give an autoencoder config or one with model.pretransform")
    autoencoder = build_autoencoder(pretransform, int(raw["sample_rate"]))
    if checkpoint is not None:
        load_autoencoder_weights(autoencoder, checkpoint)
    return autoencoder.eval().requires_grad_(False)


# Published t5-base encoder settings, for T5 weights embedded in a ComfyUI single-file checkpoint.
T5_BASE_CONFIG = {"model_type": "t5", "vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072,
                  "num_layers": 12, "num_heads": 12, "relative_attention_num_buckets": 32,
                  "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
                  "feed_forward_proj": "relu", "pad_token_id": 0, "eos_token_id": 1}


def _embedded_t5(weights: dict[str, torch.Tensor], folder: Path | None):
    """T5 weights stored as `<name>.transformer.<hf key>` (ComfyUI) -> a loaded T5Encoder."""
    from .text.t5 import T5Encoder
    stems = {key.split(".transformer.", 1)[0] for key in weights if ".transformer." in key}
    if len(stems) != 1:
        raise CheckpointError(f"cannot tell the T5 weights among text_encoders.* keys (found {sorted(stems)})")
    prefix = stems.pop() + ".transformer."
    hf = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    config_path = None if folder is None else Path(folder) / CONFIG_FILE
    raw = read_json(config_path, "T5 config") if config_path and config_path.is_file() else T5_BASE_CONFIG
    encoder = T5Encoder.from_config(raw)
    # The token embedding is tied: files store it as shared.weight, embed_tokens.weight or both.
    expected = encoder.state_dict()
    for name, twin in (("shared.weight", "encoder.embed_tokens.weight"),
                       ("encoder.embed_tokens.weight", "shared.weight")):
        if name in expected and name not in hf and twin in hf:
            hf[name] = hf[twin]
    hf = {k: v for k, v in hf.items() if k in expected or not k.endswith(("embed_tokens.weight", "shared.weight"))}
    load_state_dict_strict(encoder, hf, "the checkpoint's text_encoders.* (T5) weights")
    return encoder.eval().requires_grad_(False)


def attach_text_encoder(model: StableAudioModel, folder: str | Path | None,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        embedded: dict[str, torch.Tensor] | None = None) -> None:
    """Give every text conditioner its encoder: CLAP from a local Hugging Face CLAP folder; T5 from
    a local T5 folder, or from the weights embedded in the checkpoint (ComfyUI's single file) with
    the folder's tokenizer.json."""
    claps = [c for c in model.conditioner.conditioners.values() if isinstance(c, CLAPTextConditioner)]
    if claps and folder is not None:
        from .text.clap_encoder import ClapTextEncoder
        # stable-audio-tools keeps CLAP in float32 whatever the diffusion model's dtype.
        clap = ClapTextEncoder.from_folder(folder, device=device)
        for conditioner in claps:
            conditioner.attach_text_encoder(clap)
    t5s = [c for c in model.conditioner.conditioners.values() if isinstance(c, T5Conditioner)]
    if not t5s or (folder is None and not embedded):
        return
    from .text.t5_encoder import T5TextEncoder
    from .text.tokenizer import TextTokenizer
    if embedded:
        if folder is None:
            raise InputError(
                "the checkpoint carries T5 weights but no tokenizer: pass a folder holding the T5 "
                "tokenizer.json as text_encoder / --text-encoder"
            )
        t5 = _embedded_t5(embedded, folder).to(device=device, dtype=dtype)
        tokenizer = TextTokenizer.from_folder(folder, default_pad_token_id=t5.config.pad_token_id)
    else:
        shared = T5TextEncoder.from_folder(folder, dtype=dtype, device=device)
        t5, tokenizer = shared.model, shared.tokenizer
    for conditioner in t5s:  # one set of weights, each conditioner with its own max_length
        conditioner.attach_text_encoder(T5TextEncoder(tokenizer, t5, conditioner.max_length))


def t5gemma_folder(model: StableAudioModel, conditioner: T5GemmaConditioner,
                   folder: str | Path | None) -> Path | None:
    """Where a T5Gemma conditioner's encoder is: `folder` when given, else its config's
    model_path (relative to the model config's folder). None when neither names one."""
    if folder is not None:
        return Path(folder)
    if conditioner.model_path is None:
        return None
    path = Path(conditioner.model_path)
    base = model.config.base_dir
    return path if path.is_absolute() or base is None else base / path


def attach_t5gemma(model: StableAudioModel, folder: str | Path | None = None,
                   device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> None:
    """Give every T5Gemma conditioner its encoder (see `t5gemma_folder`), one per folder, in
    `dtype` (None: the stored dtype, as the reference loads it)."""
    from .text.t5gemma_encoder import T5GemmaTextEncoder
    loaded: dict[Path, T5GemmaTextEncoder] = {}
    for conditioner in model.conditioner.conditioners.values():
        if not isinstance(conditioner, T5GemmaConditioner):
            continue
        where = t5gemma_folder(model, conditioner, folder)
        if where is None:
            continue
        if where not in loaded:
            loaded[where] = T5GemmaTextEncoder.from_folder(where, dtype=dtype, device=device)
        shared = loaded[where]
        conditioner.attach_text_encoder(T5GemmaTextEncoder(shared.tokenizer, shared.model,
                                                           conditioner.max_length))


def load_model(config: str | Path | dict | ModelConfig, checkpoint: str | Path | None = None,
               text_encoder: str | Path | None = None, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = "float32",
               text_encoder_dtype: str | torch.dtype | None = None,
               matmul_dtype: str | torch.dtype | None = None, precision: str = "fp32",
               compile: bool = False, accelerations: dict[str, bool] | None = None) -> StableAudioModel:
    """Build the model of `config`, load `checkpoint` (strict), attach a T5 folder if needed.

    stable-audio-tools runs T5 in float16; pass text_encoder_dtype="float16" to reproduce its
    text features exactly (the default, the model dtype, is more accurate on the CPU). A T5Gemma
    (Stable Audio 3) runs in its stored dtype unless text_encoder_dtype says otherwise; its
    folder is `text_encoder` or the conditioner's model_path.
    The model comes back ready for inference (`acceleration.prepare_for_inference`: eval, no
    gradients, the CPU speed-ups swapped in). dtype="bfloat16" is the fast
    opt-in on GPUs and CPUs with native bfloat16. matmul_dtype="bfloat16" is the more accurate
    opt-in: only linear/convolution weights and their products in bfloat16, activations in
    `dtype` (acceleration.use_bfloat16_matmuls; tolerances in benchmarks/README.md).
    `precision` picks the CPU matmul path of a float32 model in one word: "fp32" (the default,
    equal to the reference), "bf16" (matmul_dtype="bfloat16"), "int8" (the large linears of the
    backbone and text encoders and the U-Net's convolutions in int8, acceleration.use_int8_linears
    and use_int8_convolutions) or "auto" (chosen from the
    CPU: acceleration.choose_precision); the path taken is recorded as `model.precision`.
    compile=True wraps the diffusion backbone in torch.compile (opt-in; slow first calls).
    `accelerations` switches prepare_for_inference's swaps (all on when not named).
    """
    dtype = parse_dtype(dtype)
    text_dtype = dtype if text_encoder_dtype is None else parse_dtype(text_encoder_dtype)
    if not isinstance(config, ModelConfig):
        config = load_model_config(config)
    path = choose_precision(precision, device, backbone=backbone_type(config))
    if path != "fp32" and dtype != torch.float32:
        if precision != "auto":
            raise InputError(f"precision {precision!r} applies to a float32 model; got dtype {dtype} "
                             "(use dtype float32, or precision fp32 with a reduced dtype)")
        path = "fp32"  # a reduced dtype is already the fast path asked for
    if path == "bf16":
        if matmul_dtype is not None and parse_dtype(matmul_dtype) != torch.bfloat16:
            raise InputError(f"precision 'bf16' contradicts matmul_dtype {matmul_dtype!r}; give one of them")
        matmul_dtype = torch.bfloat16
    elif path == "int8" and matmul_dtype is not None and parse_dtype(matmul_dtype) != dtype:
        raise InputError(f"precision 'int8' contradicts matmul_dtype {matmul_dtype!r}; give one of them")
    model = build_model(config)
    embedded = None
    if checkpoint is not None:
        embedded = load_weights(model, read_state_dict(checkpoint), str(checkpoint))
    model.to(device=device, dtype=dtype)
    switches = accelerations or {}
    prepare_for_inference(model, **switches)
    attach_text_encoder(model, text_encoder, device=device, dtype=text_dtype, embedded=embedded)
    attach_t5gemma(model, text_encoder, device=device,
                   dtype=None if text_encoder_dtype is None else parse_dtype(text_encoder_dtype))
    modules = [model]
    for conditioner in model.conditioner.conditioners.values():  # text encoders are not submodules
        encoder = getattr(getattr(conditioner, "text_encoder", None), "model", None)
        if isinstance(encoder, torch.nn.Module):
            prepare_for_inference(encoder, **switches)
            modules.append(encoder)
    if matmul_dtype is not None and parse_dtype(matmul_dtype) != dtype:
        for module in dict.fromkeys(modules):  # one shared T5 may serve several conditioners
            use_bfloat16_matmuls(module, parse_dtype(matmul_dtype))
    if path == "int8":
        for module in dict.fromkeys(modules):
            use_int8_linears(module)
        use_int8_convolutions(model.backbone)  # the U-Net's; the VAE's convolutions stay float32
    model.precision = path
    if compile:
        compile_backbone(model)
    return model
