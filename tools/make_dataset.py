"""Make the captioned synthetic dataset (MIDI rendered with fluidsynth + FluidR3_GM, and sound effects).

    python tools/make_dataset.py --out DIR --count N --seed S [--sfx-fraction F]
                                 [--min-seconds A --max-seconds B] [--workers W]

Needs `apt-get install fluidsynth fluid-soundfont-gm` and `pip install mido` (installs nothing
itself). Writes DIR/audio/<id>.wav + <id>.json, DIR/midi/<id>.mid, DIR/manifest.jsonl,
DIR/split.json, DIR/dataset.json; see tools/synthdata/__init__.py for the contract.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthdata.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
