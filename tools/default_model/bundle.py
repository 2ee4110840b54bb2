"""Copy a trained default model into the package (stable_audio_core/default_model/).

    python tools/default_model/bundle.py --diffusion-run /work/runs/default-unet \
        --clap-run /work/runs/default-clap

Takes each run's latest checkpoint (a run folder's `latest`, or a checkpoint folder): the
diffusion model's model.safetensors (its exported weights: the EMA when the run kept one, with
the VAE and the conditioners) and the CLAP Hugging Face folder. With --vae-run, the VAE weights
come from that autoencoder run instead: its decoder, after a phase-2 fine-tune (encoder frozen,
so the latents the diffusion model learned stay the same; the script checks the encoders agree).
The config written is tools/default_model/model_config.json, checked against the one the
diffusion run trained with, and its decoder section against the VAE run's (which may be wider
than the one the diffusion model was trained beside: tools/default_model/widen_decoder.py). Prints the
sizes; refuses a bundle of 60 MB or more (the limit the repository keeps it under).

A new decoder alone goes into the model already bundled (its diffusion model and CLAP stay):

    python tools/default_model/bundle.py --vae-run /work/runs/default-vae-gan
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from stable_audio_core.default_model import DEFAULT_MODEL_DIR  # noqa: E402
from stable_audio_core.checkpoint import RUN_CONFIG_FILE, RUN_MODEL_FILE, config_beside, resolve_checkpoint  # noqa: E402

CLAP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
              "tokenizer_config.json")
LIMIT_BYTES = 60_000_000


def checkpoint_folder(run: Path) -> Path:
    return resolve_checkpoint(run).parent


def decoder_section(config: dict) -> dict:
    return config["model"]["pretransform"]["config"]["decoder"]


def without_decoder(config: dict, replaced_decoder: dict | None) -> tuple:
    """What of a model config the bundle must agree on: its model and window, the VAE decoder's
    section left out when a VAE run replaces the decoder (a phase-2 run may widen it; the
    diffusion model only sees the encoder's latents)."""
    model = json.loads(json.dumps(config.get("model")))
    if replaced_decoder is not None:
        del model["pretransform"]["config"]["decoder"]
    return model, config.get("sample_size")


def with_vae(weights: dict, vae: dict) -> dict:
    """The diffusion checkpoint's weights with its pretransform.model.* replaced by `vae`'s
    (encoder.* / decoder.*), which must have the same keys and the same encoder."""
    prefix = "pretransform.model."
    old = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if set(old) != set(vae):
        sys.exit(f"the VAE run's keys differ from the checkpoint's VAE: {sorted(set(old) ^ set(vae))[:5]}")
    changed = [k for k in old if k.startswith("encoder.") and not torch.equal(old[k], vae[k])]
    if changed:
        sys.exit(f"the VAE run's encoder differs from the one the latents came from ({changed[:3]}...): "
                 "use a phase-2 (frozen encoder) run")
    merged = {k: v for k, v in weights.items() if not k.startswith(prefix)}
    merged.update({prefix + k: v.contiguous() for k, v in vae.items()})
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusion-run", type=Path, default=None,
                        help="diffusion run (default: keep the bundled diffusion model; needs --vae-run)")
    parser.add_argument("--clap-run", type=Path, default=None, help="CLAP run (default: keep the bundled CLAP)")
    parser.add_argument("--vae-run", type=Path, default=None,
                        help="autoencoder run (phase 2) whose weights replace the checkpoint's VAE")
    parser.add_argument("--config", type=Path, default=ROOT / "tools" / "default_model" / "model_config.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args()
    if args.diffusion_run is None and args.vae_run is None:
        sys.exit("nothing to bundle: give --diffusion-run, --vae-run or both")
    # Without a run, a part comes from the bundle already in place (read before anything is written).
    diffusion = checkpoint_folder(args.diffusion_run) if args.diffusion_run else DEFAULT_MODEL_DIR
    clap = checkpoint_folder(args.clap_run) if args.clap_run else DEFAULT_MODEL_DIR / "clap"
    config = json.loads(args.config.read_text())
    trained = json.loads((diffusion / RUN_CONFIG_FILE).read_text())
    vae_decoder = None
    if args.vae_run is not None:
        vae_config = json.loads(config_beside(args.vae_run).read_text())
        vae_decoder = vae_config["model"]["decoder"]
        if decoder_section(config) != vae_decoder:
            sys.exit(f"{args.config}'s decoder differs from the one {args.vae_run} trained: {vae_decoder}")
    if without_decoder(trained, vae_decoder) != without_decoder(config, vae_decoder):
        sys.exit(f"{args.config} differs from the config {diffusion} was trained with")
    weights = load_file(diffusion / RUN_MODEL_FILE)
    if args.vae_run is not None:
        weights = with_vae(weights, load_file(resolve_checkpoint(args.vae_run)))
    clap_files = {name: (clap / name).read_bytes() for name in CLAP_FILES}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "clap").mkdir(exist_ok=True)
    save_file(weights, args.out / "model.safetensors")
    (args.out / "model_config.json").write_text(json.dumps(config, indent=1) + "\n")
    for name, data in clap_files.items():
        (args.out / "clap" / name).write_bytes(data)
    sizes = {str(p.relative_to(args.out)): p.stat().st_size for p in sorted(args.out.rglob("*")) if p.is_file()}
    for name, size in sizes.items():
        print(f"{size / 1e6:8.2f} MB  {name}")
    total = sum(sizes.values())
    print(f"{total / 1e6:8.2f} MB  in all (from {diffusion} and {clap})")
    if total >= LIMIT_BYTES:
        sys.exit(f"the bundle is {total / 1e6:.1f} MB, over the {LIMIT_BYTES / 1e6:.0f} MB limit")


if __name__ == "__main__":
    main()
