"""Builders and fixtures the tests share. Importing this package puts ``examples/`` on
``sys.path``: the tiny models (``tiny_models``) and the review generator (``synthetic_reviews``)
live there, beside the examples that use them, for the tests and the benchmarks alike."""

import sys
from pathlib import Path

EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)
