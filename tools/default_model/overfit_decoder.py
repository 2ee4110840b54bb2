"""Can the bundled VAE's decoder render harmonics at all? Fit it alone to one clip and watch.

    python tools/default_model/overfit_decoder.py --data /work/data/synth-solo --instrument trumpet \
        --steps 800 --out overfit.png

Takes the first lone-melody clip of the instrument in the dataset, a crop of --samples from
--offset seconds, encodes it once with the frozen encoder (posterior mean) and trains only the
decoder on that crop with the VAE task's reconstruction loss (the reference's multi-resolution
sum/difference + left/right STFT loss), Adam, printing the loss and the log-spectrum R^2 of the
decoded crop (as evaluate.py's latent part: 1 = exact, 0 = the mean spectrum). The PNG shows the
real crop's spectrum beside the decoder's at the end. Harmonics appearing here, on one crop, say
the decoder can render them and the full dataset needs more steps; none appearing would point at
the decoder's width.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))

from stable_audio_core.default_model import default_model_files  # noqa: E402
from stable_audio_core.evaluation.instruments import solo_clips  # noqa: E402
from stable_audio_core.evaluation.latent_probe import frame_log_spectrum, plot_spectra, r_squared  # noqa: E402
from stable_audio_core.training.vae_task import build_vae_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a rendered dataset with lone melodies")
    parser.add_argument("--instrument", default="trumpet")
    parser.add_argument("--offset", type=float, default=1.0, help="seconds into the clip")
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("overfit.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = json.loads((ROOT / "default_model" / "vae_crops16k.json").read_text())
    task = build_vae_task(config, {"adversarial": 0, "feature_matching": 0, "phase": 2,
                                   "checkpoint": str(default_model_files().checkpoint)})  # fmt: skip
    autoencoder = task.autoencoder
    clips, labels = solo_clips([args.data], autoencoder.sample_rate, per_instrument=1)
    if args.instrument not in labels:
        sys.exit(f"no lone {args.instrument} melody in {args.data}; found {sorted(set(labels))}")
    start = int(args.offset * autoencoder.sample_rate)
    crop = clips[labels.index(args.instrument)][None, :, start:start + args.samples]
    with torch.no_grad():
        latents = autoencoder.bottleneck.encode(autoencoder.encoder(crop))

    def spectrum(audio: torch.Tensor) -> torch.Tensor:
        return frame_log_spectrum(audio[0], hop=256, floor=1e-3)

    target = spectrum(crop)
    optimizer = torch.optim.Adam(task.generator_parameters(), args.lr)
    started = time.time()
    for step in range(args.steps + 1):
        decoded = autoencoder.decoder(latents)
        loss, _ = task.stft_loss(crop, decoded)
        if step % 100 == 0 or step == args.steps:
            r2 = r_squared(spectrum(decoded.detach()), target)
            print(f"step {step}: loss {loss.item():.3f}, log-spectrum R^2 {r2:.3f} ({time.time() - started:.0f} s)",
                  flush=True)
        if step == args.steps:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    plot_spectra({"real": target, f"decoder after {args.steps} steps": spectrum(decoded.detach())}, args.out,
                 frame_label="STFT frame (hop 256)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
