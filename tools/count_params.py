"""Print the parameter counts of a model config's diffusion backbone, built on the meta device.

    python tools/count_params.py                       # the paper's U-Net (907M)
    python tools/count_params.py path/to/model_config.json

Nothing is allocated: the backbone is built on torch's meta device, so a full-size config takes a
second and no memory. Prints the total and the share of each top-level part.
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
from stable_audio_core.models.stable_audio import BACKBONES  # noqa: E402

PAPER_UNET_CONFIG = REPO / "stable_audio_core" / "configs" / "stable_audio_paper_unet.json"


def backbone_parameter_counts(config_path: str | Path = PAPER_UNET_CONFIG) -> Counter:
    """{top-level submodule name: parameter count} of the config's diffusion backbone."""
    config = load_model_config(config_path)
    if config.diffusion_type not in BACKBONES:
        raise SystemExit(f"unknown diffusion type {config.diffusion_type!r}; known: {sorted(BACKBONES)}")
    with torch.device("meta"):
        backbone = BACKBONES[config.diffusion_type][0](config)
    counts: Counter = Counter()
    for name, parameter in backbone.named_parameters():
        counts[name.split(".")[0]] += parameter.numel()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(PAPER_UNET_CONFIG))
    args = parser.parse_args(argv)
    counts = backbone_parameter_counts(args.config)
    total = sum(counts.values())
    print(f"{args.config}")
    for name, count in counts.items():
        print(f"  {name:<20} {count:>14,}  {100 * count / total:5.1f}%")
    print(f"  {'total':<20} {total:>14,}  ({total / 1e6:.1f}M)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
