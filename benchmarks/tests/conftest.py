"""The benchmarks' own tests: they import the benchmark scripts (``benchmarks/``) and the examples'
data (``examples/``), never ``tests/``; ``tests/`` never imports these."""

import sys
from pathlib import Path

for folder in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "examples"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
