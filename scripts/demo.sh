#!/usr/bin/env bash
# The main job: fine-tune all-MiniLM-L6-v2 on reviews with a planted shortcut word, watching
# attributions as it trains. Leaves explain_runs/shortcut-demo/ with report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
main_env
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python examples/shortcut_demo.py "$@"
