"""Quick check of decoder checkpoints (a VAE run's, or a bundled model) on held-out lone melodies.

    python tools/default_model/check_decoder.py --data /work/data/synth-solo \
        runs/default-vae-dec8k/checkpoints/step-00006000 runs/default-vae-dec8k

The held-out lone-melody clips of --data (the last --per-instrument of each instrument, the first
--seconds of each) go through the encoder (posterior mean) and each decoder. Printed per decoder:
log-spectrum R^2 of the reconstructions (2048-point STFT, hop 512, up to 8 kHz; 1 = exact, 0 =
the mean spectrum), their multi-resolution STFT distance, and the CLAP zero-shot instrument
accuracy (the bundled CLAP, as evaluate.py's instrument part; chance 1/12). The first rows are the
real clips (zero-shot only) and the bundled decoder. Minutes on a CPU, where evaluate.py takes
half an hour: for following a decoder run, not for the model card's tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stable_audio_core.default_model import default_model_files  # noqa: E402
from stable_audio_core.checkpoint import config_beside  # noqa: E402
from stable_audio_core.evaluation.clap_score import ClapScorer  # noqa: E402
from stable_audio_core.evaluation.instruments import MELODY_INSTRUMENTS, solo_clips, zero_shot  # noqa: E402
from stable_audio_core.evaluation.latent_probe import frame_log_spectrum, r_squared, reconstruct  # noqa: E402
from stable_audio_core.training.losses import multiresolution_stft_distance  # noqa: E402
from stable_audio_core.factory import load_autoencoder  # noqa: E402


def load_decoder_checkpoint(path: Path, fallback_config: Path):
    """The autoencoder of a checkpoint, built from the config saved beside it (an autoencoder
    run's, or a diffusion model's pretransform: a widened decoder builds wide), else from
    `fallback_config`."""
    config_path = config_beside(path)
    config = json.loads((config_path if config_path.exists() else fallback_config).read_text())
    return load_autoencoder(config, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="*", help="VAE (or diffusion model) checkpoints: files, checkpoint folders or run folders (latest)")
    parser.add_argument("--data", type=Path, required=True, help="a rendered dataset with lone melodies")
    parser.add_argument("--per-instrument", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = default_model_files()
    autoencoder = load_autoencoder(json.loads(files.config.read_text()), files.checkpoint)
    bundled_encoder = {k: v.clone() for k, v in autoencoder.encoder.state_dict().items()}
    rate = autoencoder.sample_rate
    scorer = ClapScorer.from_folder(files.text_encoder)
    clips, labels = solo_clips([args.data], rate, splits=("held_out",))
    kept = [i for name in MELODY_INSTRUMENTS for i in [j for j, l in enumerate(labels) if l == name][-args.per_instrument:]]
    if not kept:
        sys.exit(f"no held-out lone melodies in {args.data}")
    clips = [clips[i][:, : int(args.seconds * rate)] for i in kept]
    labels = [labels[i] for i in kept]
    target = torch.cat([frame_log_spectrum(clip, 512, floor=1e-3) for clip in clips])
    real = zero_shot(scorer, scorer.audio_embeddings(clips, rate), labels, MELODY_INSTRUMENTS)
    print(f"{len(clips)} held-out clips of {len(set(labels))} instruments, {args.seconds:g} s each; "
          f"real clips: zero-shot {real['accuracy']:.3f} (chance {1 / len(MELODY_INSTRUMENTS):.3f})", flush=True)

    def measure(name: str) -> None:
        decoded = [reconstruct(autoencoder, clip) for clip in clips]
        r2 = r_squared(torch.cat([frame_log_spectrum(d, 512, floor=1e-3) for d in decoded]), target)
        distance = sum(multiresolution_stft_distance(d, c) for d, c in zip(decoded, clips)) / len(clips)
        accuracy = zero_shot(scorer, scorer.audio_embeddings(decoded, rate), labels, MELODY_INSTRUMENTS)["accuracy"]
        print(f"{name}: log-spectrum R^2 {r2:.3f}, STFT distance {distance:.3f}, zero-shot {accuracy:.3f}", flush=True)

    measure("bundled decoder")
    for path in args.checkpoints:
        autoencoder = load_decoder_checkpoint(path, files.config)  # a file, or a run / checkpoint folder
        if any(not torch.equal(v, bundled_encoder[k]) for k, v in autoencoder.encoder.state_dict().items()):
            print(f"{path}: its encoder differs from the bundled one (not a phase-2 run); skipped")
            continue
        measure(str(path))


if __name__ == "__main__":
    main()
