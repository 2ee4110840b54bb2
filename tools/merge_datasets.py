"""Use several rendered datasets as one (for `stable-audio-toolkit train vae --data`): a manifest and a
split over all of them, the audio referenced in place.

    python tools/merge_datasets.py --out /work/data/synth-both /work/data/synth-v1 /work/data/synth-solo

Ids become "<folder name>-<id>"; see tools/synthdata/merge.py.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthdata.merge import MergeError, merge_datasets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="new folder for the merged manifest")
    parser.add_argument("datasets", type=Path, nargs="+", help="dataset folders made by make_dataset.py")
    args = parser.parse_args()
    try:
        counts = merge_datasets(args.datasets, args.out)
    except MergeError as exc:
        print(f"merge_datasets: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
