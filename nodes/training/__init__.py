"""The training pack: datasets, pre-encoding, training the VAE, CLAP and the diffusion model, and
evaluating generations with the paper's metrics (category "audio/stable audio/training"). Each
node wraps one core call from stable_audio_core.training or stable_audio_core.evaluation."""

from __future__ import annotations

from .dataset import TrainDataset, TrainPreEncode
from .evaluate import TrainEvaluate
from .train import TrainCLAP, TrainDiffusion, TrainLoadModel, TrainVAE

TRAINING_NODES = [
    (TrainDataset, "Training Dataset"),
    (TrainPreEncode, "Pre-encode Latents"),
    (TrainVAE, "Train VAE"),
    (TrainCLAP, "Train CLAP"),
    (TrainDiffusion, "Train Diffusion"),
    (TrainLoadModel, "Load Trained Model"),
    (TrainEvaluate, "Evaluate Generations"),
]
