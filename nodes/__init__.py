"""The Stable Audio nodes: class keys (prefixed, so none clashes with a ComfyUI built-in) and
display names. Each node wraps one core call; see stable_audio_core for the work itself."""

from __future__ import annotations

from .audio_io import SaveAudio, TrimSilence
from .conditioning import CLAPEncode, SA3InpaintCondition, T5Encode, T5GemmaEncode, TimingCondition
from .latent_tools import LatentConcat, LatentCrop, LatentNoiseMask, LatentPad
from .loaders import LoadAudio, LoadCheckpoint, LoadLoRA
from .sampling import DPMSolverSampler, EmptyLatentAudio
from .training import TRAINING_NODES
from .vae import VAEDecode, VAEEncode

PREFIX = "StableAudio_"

_NODES = [
    (LoadCheckpoint, "Load Checkpoint"),
    (T5Encode, "T5 Text Encode"),
    (CLAPEncode, "CLAP Text Encode"),
    (T5GemmaEncode, "T5Gemma Text Encode"),
    (TimingCondition, "Timing Condition"),
    (EmptyLatentAudio, "Empty Latent Audio"),
    (DPMSolverSampler, "DPM-Solver++ Sampler"),
    (VAEEncode, "VAE Encode"),
    (VAEDecode, "VAE Decode"),
    (TrimSilence, "Trim Silence"),
    (SaveAudio, "Save Audio"),
    (LoadAudio, "Load Audio"),
    (LatentNoiseMask, "Noise Mask from Time Range"),
    (LatentCrop, "Latent Crop"),
    (LatentConcat, "Latent Concat"),
    (LatentPad, "Latent Pad"),
    (SA3InpaintCondition, "Inpaint / Extend Condition (SA3)"),
    (LoadLoRA, "Load LoRA (SA3)"),
    *TRAINING_NODES,
]

NODE_CLASS_MAPPINGS = {PREFIX + cls.__name__: cls for cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {PREFIX + cls.__name__: "Stable Audio · " + name for cls, name in _NODES}
