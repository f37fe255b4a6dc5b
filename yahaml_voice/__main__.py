"""`python -m yahaml_voice ...` is the `yahaml-voice` command (SFU children start this way)."""

import sys

from .cli import main

sys.exit(main())
