"""Check that a VAE checkpoint written by our training loads in stable-audio-tools 0.0.19.

Runs in the reference venv (imports stable_audio_core from this checkout):

    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/check_vae_export.py [--steps 4] [--full]

1. Trains a tiny Oobleck VAE for a few steps with our trainer (`training.trainer.train` on a few
   generated stereo clips) into a temporary folder.
2. Loads the newest checkpoint's `model.safetensors` + `model_config.json` into the reference's
   `create_model_from_config(...)` with `load_state_dict(strict=True)`, and into our loader
   (`factory.load_autoencoder`).
3. Compares the two models' encoder outputs (posterior mean and scale) and decodings.
--full: also builds our task on the Stable Audio Open VAE config and compares its export's keys
and shapes with the reference model's state dict (no training; about 1 GB of memory).
Prints a JSON report; exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from stable_audio_tools.models.factory import create_model_from_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stable_audio_core.checkpoint import RUN_CONFIG_FILE, RUN_MODEL_FILE  # noqa: E402
from stable_audio_core.factory import load_autoencoder  # noqa: E402
from stable_audio_core.training import state  # noqa: E402
from stable_audio_core.training.task import item_generators  # noqa: E402
from stable_audio_core.training.trainer import TrainerConfig, train  # noqa: E402
from stable_audio_core.training.vae_task import build_vae_task  # noqa: E402

SAMPLE_RATE = 16000
LAYERS = {"channels": 8, "c_mults": [1, 2, 2], "strides": [2, 2, 4], "use_snake": True}
TINY_CONFIG = {
    "model_type": "autoencoder", "sample_rate": SAMPLE_RATE, "sample_size": 1024, "audio_channels": 2,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 8, **LAYERS}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": 4,
                                                  "final_tanh": False, **LAYERS}},
        "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 16, "io_channels": 2,
    },
}  # fmt: skip
TINY_OPTIONS = {"discriminator": {"filters": 4, "n_ffts": [256, 128]},
                "spectral": {"fft_sizes": [512, 256, 128, 64, 32]}}  # fmt: skip
SAO_VAE_MODEL = {
    "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                              "strides": [2, 4, 4, 8, 8], "latent_dim": 128, "use_snake": True}},
    "decoder": {"type": "oobleck", "config": {"out_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                              "strides": [2, 4, 4, 8, 8], "latent_dim": 64, "use_snake": True,
                                              "final_tanh": False}},
    "bottleneck": {"type": "vae"}, "latent_dim": 64, "downsampling_ratio": 2048, "io_channels": 2,
}  # fmt: skip


class SineClips:
    """A few stereo sine-plus-noise clips, the trainer's dataset interface."""

    def __init__(self, count: int = 4, length: int = 1024):
        self.count, self.length = count, length

    def __len__(self) -> int:
        return self.count

    def get(self, index: int, seed: int) -> dict:
        t = torch.arange(self.length) / SAMPLE_RATE
        tone = 0.4 * torch.sin(2 * math.pi * (220 * (index + 1)) * t)
        noise = 0.02 * torch.randn(2, self.length, generator=torch.Generator().manual_seed(index))
        return {"audio": tone.expand(2, -1) + noise, "padding_mask": torch.ones(self.length, dtype=torch.bool)}

    def collate(self, items: list[dict], seeds: list[int]) -> dict:
        return {"audio": torch.stack([i["audio"] for i in items]),
                "padding_mask": torch.stack([i["padding_mask"] for i in items]),
                "seeds": torch.tensor(seeds, dtype=torch.int64)}  # fmt: skip


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def check_trained_checkpoint(steps: int, out_dir: Path) -> dict:
    task = build_vae_task(copy.deepcopy(TINY_CONFIG), TINY_OPTIONS)
    train(task, SineClips(), TrainerConfig(out_dir=out_dir, max_steps=steps, batch_size=2,
                                           checkpoint_every=steps, device="cpu"), progress=False)  # fmt: skip
    checkpoint = state.read_latest(out_dir)
    weights = load_file(str(checkpoint / RUN_MODEL_FILE))
    config = json.loads((checkpoint / RUN_CONFIG_FILE).read_text())

    reference = create_model_from_config(config).eval()
    reference.load_state_dict(weights, strict=True)
    ours = load_autoencoder(config, checkpoint / RUN_MODEL_FILE)

    audio = SineClips().collate([SineClips().get(i, 0) for i in range(2)], [0, 1])["audio"]
    with torch.no_grad():
        ref_pre = reference.encode(audio, skip_bottleneck=True)
        our_pre = ours.encoder(audio)
        ref_mean = ref_pre.chunk(2, dim=1)[0]
        ref_decoded = reference.decode(ref_mean)
        our_decoded = ours.decode(ours.encode(audio), chunked=False)
        # The same posterior draw (noise from our per-item generators) through both bottlenecks'
        # formula: mean + (softplus(scale) + 1e-4) * noise.
        generator = item_generators(torch.tensor([7]), "latent")[0]
        _, kl_ours = ours.bottleneck.encode_with_kl(our_pre[:1], generator)
        torch.manual_seed(0)
        _, info = reference.bottleneck.encode(ref_pre[:1], return_info=True)
    report = {
        "checkpoint": str(checkpoint.relative_to(out_dir)),
        "keys": len(weights),
        "weight_norm_pairs": sum(k.endswith(".weight_g") for k in weights),
        "strict_load_reference": True,
        "strict_load_ours": True,
        "encoder_output_max_abs_diff": max_diff(ref_pre, our_pre),
        "decoded_mean_max_abs_diff": max_diff(ref_decoded, our_decoded),
        "kl_abs_diff": abs(info["kl"].item() - kl_ours.item()),
    }
    report["ok"] = all(report[k] < 1e-4 for k in ("encoder_output_max_abs_diff", "decoded_mean_max_abs_diff",
                                                   "kl_abs_diff"))  # fmt: skip
    return report


def check_full_size_layout() -> dict:
    config = {"model_type": "autoencoder", "sample_rate": 44100, "sample_size": 65536, "audio_channels": 2,
              "model": copy.deepcopy(SAO_VAE_MODEL)}  # fmt: skip
    ours, _ = build_vae_task(copy.deepcopy(config), {"adversarial": 0.0, "feature_matching": 0.0}).export(None)
    reference = create_model_from_config(config).state_dict()
    same_keys = set(ours) == set(reference)
    same_shapes = same_keys and all(tuple(ours[k].shape) == tuple(reference[k].shape) for k in ours)
    return {"keys": len(ours), "reference_keys": len(reference), "same_keys": same_keys,
            "same_shapes": same_shapes, "parameters": sum(v.numel() for v in ours.values()),
            "ok": same_keys and same_shapes}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        report = {"trained": check_trained_checkpoint(args.steps, Path(folder))}
    if args.full:
        report["full_size_layout"] = check_full_size_layout()
    print(json.dumps(report, indent=1))
    sys.exit(0 if all(part["ok"] for part in report.values()) else 1)


if __name__ == "__main__":
    main()
