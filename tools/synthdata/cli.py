"""Command line: `python tools/make_dataset.py --out DIR --count N --seed S [...]`."""

from __future__ import annotations

import argparse
import sys

from .dataset import generate_dataset
from .render import MissingToolsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make_dataset.py",
        description="Compose MIDI and render it with fluidsynth + FluidR3_GM (44.1 kHz stereo), plus "
                    "numpy sound effects, each clip with a caption and metadata. Deterministic from "
                    "--seed; resumable (clips already made are skipped).")
    parser.add_argument("--out", required=True,
                        help="output folder (audio/, midi/, manifest.jsonl, split.json)")
    parser.add_argument("--count", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, default=1234, help="dataset seed (default 1234)")
    parser.add_argument("--sfx-fraction", type=float, default=0.2,
                        help="share of sound effects (default 0.2)")
    parser.add_argument("--solo-fraction", type=float, default=0.0,
                        help="share of music clips that are one melody instrument alone, drawn evenly "
                             "from all melody instruments whatever the genre (default 0)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="shortest clip (default 1)")
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="longest clip, normally the model's window (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--held-out-fraction", type=float, default=0.05, help="held-out share (default 0.05)")
    parser.add_argument("--soundfont", default=None,
                        help="FluidR3_GM.sf2 path (default: $SYNTHDATA_SOUNDFONT, else "
                             "/usr/share/sounds/sf2/FluidR3_GM.sf2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        generate_dataset(args.out, args.count, args.seed, sfx_fraction=args.sfx_fraction,
                         min_seconds=args.min_seconds, max_seconds=args.max_seconds, workers=args.workers,
                         soundfont=args.soundfont, held_out_fraction=args.held_out_fraction,
                         solo_fraction=args.solo_fraction,
                         log=lambda line: print(line, flush=True))
    except MissingToolsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        parser.error(str(error))
    return 0
