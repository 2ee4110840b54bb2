"""Loading nodes: the model (config + weights + text encoder) and audio files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..stable_audio_core import config as core_config
from ..stable_audio_core.audio.io import prepare_audio, read_audio
from ..stable_audio_core.default_model import DEFAULT_MODEL_NAME, default_model_files
from ..stable_audio_core.errors import InputError
from ..stable_audio_core.factory import load_model
from ..stable_audio_core.lora import model_with_loras
from . import files, hooks
from .datatypes import AUDIO, CATEGORY, MODEL, make_audio

BUNDLED_CONFIGS = Path(core_config.__file__).parent / "configs"
BUNDLED_PREFIX = "bundled/"
# Load Checkpoint's dtype choices that are float32 with a CPU matmul path (load_model's precision).
CPU_PATHS = {"float32 + int8 linears": "int8", "float32 + bfloat16 matmuls": "bf16", "cpu-adaptive": "auto"}


def _config_choices() -> list[str]:
    bundled = sorted(BUNDLED_PREFIX + p.name for p in BUNDLED_CONFIGS.glob("*.json"))
    return ["auto"] + bundled + files.list_files("checkpoints", files.CONFIG_SUFFIXES)


def _config_path(config: str, checkpoint: Path) -> Path:
    """'auto': <checkpoint stem>.json or model_config.json next to the checkpoint."""
    if config.startswith(BUNDLED_PREFIX):
        return BUNDLED_CONFIGS / config[len(BUNDLED_PREFIX):]
    if config != "auto":
        return files.resolve("checkpoints", config)
    candidates = [checkpoint.with_suffix(".json"), checkpoint.parent / "model_config.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"no model config found for {checkpoint.name} (looked for "
                     f"{[c.name for c in candidates]} beside it); choose one in 'config'")


class LoadCheckpoint:
    DESCRIPTION = ("Loads a Stable Audio model: a stable-audio-tools model_config.json and its "
                   ".safetensors weights from the checkpoints folder, plus the Hugging Face T5 folder "
                   "from text_encoders when the config has a T5 text conditioner.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The diffusion model, its VAE and conditioners, ready for the other "
                       "Stable Audio nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": ([DEFAULT_MODEL_NAME] + files.list_files("checkpoints", files.CHECKPOINT_SUFFIXES), {
                "default": DEFAULT_MODEL_NAME,
                "tooltip": "Model weights in stable-audio-tools' layout (e.g. Stable Audio Open "
                           "1.0's model.safetensors), from models/checkpoints. "
                           f"'{DEFAULT_MODEL_NAME}' is the small model that ships with the pack "
                           "(its own config and CLAP; no download)."}),
            "config": (_config_choices(), {"default": "auto", "tooltip":
                       "The model_config.json. 'auto' uses <checkpoint name>.json or "
                       "model_config.json beside the checkpoint; 'bundled/' configs ship with the pack."}),
            "text_encoder": (["none"] + files.list_model_folders("text_encoders"), {
                "default": "none", "tooltip": "Folder of a Hugging Face T5 or T5Gemma encoder "
                "(config.json, model.safetensors, tokenizer.json) under models/text_encoders; t5-base "
                "for Stable Audio Open, t5gemma-b-b-ul2 for Stable Audio 3. 'none' for models "
                "without one (or a Stable Audio 3 config whose model_path finds it)."}),
            "device": (["auto", "cpu", "cuda", "mps"], {
                "default": "auto", "tooltip": "Where the model runs; 'auto' is the host's device."}),
            "dtype": (["auto", "float32", "float16", "bfloat16"] + list(CPU_PATHS), {
                "default": "auto", "tooltip": "Weight precision; 'auto' is float32 on the CPU and "
                "float16 on a GPU. Use float32 if you get NaN errors. On the CPU, float32 with a "
                "faster matmul path: 'float32 + int8 linears' (and the U-Net's convolutions), "
                "'float32 + bfloat16 matmuls' (fast only on CPUs with native bfloat16) or "
                "'cpu-adaptive' (chosen from what the CPU has: bfloat16 where native, int8 on other "
                "AVX2 CPUs for the SAO DiT and the U-Net; float16 on a GPU). Tolerances: "
                "benchmarks/README.md."}),
        }}

    def load(self, ckpt_name, config, text_encoder, device, dtype):
        device = hooks.default_device() if device == "auto" else device
        precision = "fp32"
        if dtype == "cpu-adaptive" and not str(device).startswith("cpu"):
            dtype = "auto"  # on a GPU the fast path is the reduced dtype
        elif dtype in CPU_PATHS:
            dtype, precision = "float32", CPU_PATHS[dtype]
        if dtype == "auto":
            dtype = "float32" if str(device).startswith("cpu") else "float16"
        encoder = None if text_encoder == "none" else files.resolve("text_encoders", text_encoder)
        if ckpt_name == DEFAULT_MODEL_NAME:   # the bundled model brings its own config and CLAP
            bundled = default_model_files()
            checkpoint = bundled.checkpoint
            config_path = bundled.config if config == "auto" else _config_path(config, checkpoint)
            encoder = encoder or bundled.text_encoder
        else:
            checkpoint = files.resolve("checkpoints", ckpt_name)
            config_path = _config_path(config, checkpoint)
        model = load_model(config_path, checkpoint, text_encoder=encoder, device=device, dtype=dtype,
                           precision=precision)
        return (model,)


class LoadAudio:
    DESCRIPTION = ("Loads an audio file from the input folder (WAV, FLAC, OGG, MP3), with ComfyUI's "
                   "upload button and player. With a model connected the audio is resampled to "
                   "the model's rate and mono becomes stereo. ComfyUI's own Load Audio connects "
                   "to every Stable Audio node too.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (AUDIO,)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("ComfyUI AUDIO: waveform [1, C, T] and sample_rate.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            # audio_upload: the frontend adds ComfyUI's upload button; it needs the player widget,
            # which web/audio_player.js adds to this node ahead of the button.
            "audio": (files.list_files("input", files.AUDIO_SUFFIXES), {
                "audio_upload": True,
                "tooltip": "An audio file in the input folder; the upload button adds one."}),
        }, "optional": {
            "model": (MODEL, {"tooltip": "Resample to this model's sample rate and channel count."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, audio):
        try:
            files.resolve("input", audio)
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, audio, **_):
        try:
            return hashlib.sha256(files.resolve("input", audio).read_bytes()).hexdigest()
        except (InputError, OSError):
            return float("nan")

    def load(self, audio, model=None):
        waveform, rate = read_audio(files.resolve("input", audio))
        if model is None:
            return (make_audio(prepare_audio(waveform, rate, rate, max(2, waveform.shape[0])), rate),)
        waveform = prepare_audio(waveform, rate, model.sample_rate, model.audio_channels)
        return (make_audio(waveform, model.sample_rate),)


class LoadLoRA:
    DESCRIPTION = ("Adds a Stable Audio 3 LoRA (a stable-audio-3 .safetensors LoRA file from the loras "
                   "folder) to the model at a strength. Chain several to stack them; the input model "
                   "stays unchanged for the rest of the graph.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA stacked after the ones it already carries.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "A loaded Stable Audio 3 model (from Load Checkpoint or another Load LoRA)."}),
            "lora_name": (files.list_files("loras", files.LORA_SUFFIXES), {
                "tooltip": "A LoRA file (with its lora_config metadata, as stable-audio-3 saves them) "
                           "from models/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05, "tooltip":
                         "How strongly the LoRA acts: 1 as trained, 0 off, negative pushes away from it."}),
        }}

    def load(self, model, lora_name, strength):
        return (model_with_loras(model, [(files.resolve("loras", lora_name), float(strength))]),)
