"""``python -m explain_callbacks``: the same command line as ``explain-callbacks``."""

import sys

from .cli import main

sys.exit(main())
