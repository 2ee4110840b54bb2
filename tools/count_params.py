"""Print the parameter counts of a model config's parts, built on the meta device.

    python tools/count_params.py                       # the paper's U-Net (907M), DAC VAE, CLAP
    python tools/count_params.py path/to/model_config.json
    python tools/count_params.py --sa3                 # Stable Audio 3 Small and Medium (reconstructed)

Nothing is allocated: every part is built on torch's meta device, so a full-size config takes a
second and no memory. Prints the diffusion backbone (total and the share of each top-level part),
the autoencoder (encoder, decoder) and, when the config has a `clap_text` conditioner, the CLAP
text tower it loads from a Hugging Face folder (transformers' default CLAP text config: RoBERTa-base
+ projection; its weights are not part of the diffusion checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stable_audio_core.config import load_model_config  # noqa: E402
from stable_audio_core.models.autoencoder import build_autoencoder  # noqa: E402
from stable_audio_core.models.clap import ClapModel  # noqa: E402
from stable_audio_core.models.clap_config import ClapConfig  # noqa: E402
from stable_audio_core.models.stable_audio import BACKBONES, backbone_type  # noqa: E402

SA3_CONFIGS = ("stable-audio-3-small-music", "stable-audio-3-medium")
PAPER_UNET_CONFIG = REPO / "stable_audio_core" / "configs" / "stable_audio_paper_unet.json"


def backbone_parameter_counts(config_path: str | Path = PAPER_UNET_CONFIG) -> Counter:
    """{top-level submodule name: parameter count} of the config's diffusion backbone."""
    config = load_model_config(config_path)
    kind = backbone_type(config)  # a Stable Audio 3 "dit" builds the SA3 DiT
    if kind not in BACKBONES:
        raise SystemExit(f"unknown diffusion type {config.diffusion_type!r}; known: {sorted(BACKBONES)}")
    with torch.device("meta"):
        backbone = BACKBONES[kind][0](config)
    counts: Counter = Counter()
    for name, parameter in backbone.named_parameters():
        counts[name.split(".")[0]] += parameter.numel()
    return counts


def autoencoder_parameter_counts(config_path: str | Path = PAPER_UNET_CONFIG) -> Counter:
    """{"encoder"|"decoder"|...: parameter count} of the config's pretransform (empty if none)."""
    config = load_model_config(config_path)
    counts: Counter = Counter()
    if config.pretransform is None:
        return counts
    with torch.device("meta"):
        autoencoder = build_autoencoder(config.pretransform, config.sample_rate)
    for name, parameter in autoencoder.named_parameters():
        counts[name.split(".")[0]] += parameter.numel()
    return counts


def clap_text_parameter_count(config_path: str | Path = PAPER_UNET_CONFIG) -> int | None:
    """Parameters of the CLAP text tower (with its projection) in transformers' default CLAP
    config, if the model config has a `clap_text` conditioner; None otherwise."""
    config = load_model_config(config_path)
    if not any(spec.type == "clap_text" for spec in config.conditioners):
        return None
    with torch.device("meta"):
        clap = ClapModel(ClapConfig.from_dict({}), towers=("text",))
    return sum(p.numel() for p in clap.text.parameters())


def _print_counts(title: str, counts: Counter) -> None:
    total = sum(counts.values())
    print(title)
    for name, count in counts.items():
        print(f"  {name:<20} {count:>14,}  {100 * count / total:5.1f}%")
    print(f"  {'total':<20} {total:>14,}  ({total / 1e6:.1f}M)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(PAPER_UNET_CONFIG))
    parser.add_argument("--sa3", action="store_true", help="the Stable Audio 3 Small and Medium configs")
    args = parser.parse_args(argv)
    if args.sa3:
        for name in SA3_CONFIGS:
            main([str(REPO / "stable_audio_core" / "configs" / f"{name}.json")])
        return 0
    print(f"{args.config}")
    _print_counts("diffusion backbone", backbone_parameter_counts(args.config))
    autoencoder = autoencoder_parameter_counts(args.config)
    if autoencoder:
        _print_counts("autoencoder (pretransform)", autoencoder)
    clap_text = clap_text_parameter_count(args.config)
    if clap_text is not None:
        print("CLAP text tower (default HF CLAP text config, loaded separately)")
        print(f"  {'total':<20} {clap_text:>14,}  ({clap_text / 1e6:.1f}M)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
