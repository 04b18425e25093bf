#!/usr/bin/env bash
# The whole test suite, in both supported environments, after the packaging check (scripts/check_wheel.sh):
#   .venv      transformers 4.57.x + Flair 0.15.1 + Lightning + W&B + TensorBoard
#   .venv-tf5  the newest transformers 5.x (no Flair)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
main_env
tf5_env

# Headless Chromium for the report's browser test (Debian's package; skipped if it cannot be had).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo ">> chromium could not be installed; the browser test will be skipped"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline WANDB_SILENT=true
status=0
echo ">> packaging: the wheel, installed alone, imports every integration and runs the CLI"
bash scripts/check_wheel.sh || status=$?
echo ">> tests: transformers 4.57 + Flair"
.venv/bin/python -m pytest -q "$@" || status=$?
echo ">> tests: transformers 5.x"
.venv-tf5/bin/python -m pytest -q "$@" || status=$?
exit $status
