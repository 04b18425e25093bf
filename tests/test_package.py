"""The public surface, and a core that imports no training framework."""

from __future__ import annotations

import subprocess
import sys

import explain_callbacks


def test_public_names():
    for name in ("ProbeSet", "AttributionEngine", "AttributionMonitor", "AttributionAlertError", "ProbeAttribution"):
        assert hasattr(explain_callbacks, name), name


def test_core_imports_no_training_framework():
    code = (
        "import sys, explain_callbacks, explain_callbacks.cli, explain_callbacks.report, explain_callbacks.options, "
        "explain_callbacks.sinks.run_dir, explain_callbacks.sinks.tensorboard, explain_callbacks.sinks.wandb\n"
        "banned = ('lightning', 'pytorch_lightning', 'flair', 'wandb', 'transformers.trainer', 'tensorboard')\n"
        "print(' '.join(m for m in banned if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
