"""``python -m explain_callbacks``: the same command line as ``explain-callbacks``."""

import sys

from explain_callbacks.run.cli import main

sys.exit(main())
