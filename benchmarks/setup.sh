#!/usr/bin/env bash
# The benchmarks' own environment, .venv-bench: the main environment's pins plus
# transformers-interpret 0.10.0 for the speed comparison. It goes in with --no-deps because its
# metadata pins an old transformers; the one installed here works with it.
#   bash benchmarks/setup.sh && .venv-bench/bin/python benchmarks/speed.py
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
make_env .venv-bench constraints-flair.txt -e ".[all,test]"
.venv-bench/bin/python -m pip install -q --no-deps transformers-interpret==0.10.0
echo ">> .venv-bench ready: .venv-bench/bin/python benchmarks/speed.py [--full]"
