"""`python -m stable_audio_host ...`: the same as the `stable-audio-toolkit` command."""

import sys

from .cli import main

sys.exit(main())
