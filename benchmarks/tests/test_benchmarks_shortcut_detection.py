"""The shortcut-detection benchmark end to end on two tiny-BERT runs: a planted word at 20%
purity 1 (the model relies on it and the callback must say so) and its matched clean run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "shortcut_detection.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_planted_word_alerted_and_clean_run_quiet(tmp_path: Path):
    args = [sys.executable, str(SCRIPT), "--no-minilm", "--seeds", "1", "--only", "r0.2-p1-s0,clean-s0",
            "--out", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "shortcut_detection.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert set(runs) == {"tiny-bert-r0.2-p1-s0", "tiny-bert-clean-s0"}
    planted, clean = runs["tiny-bert-r0.2-p1-s0"], runs["tiny-bert-clean-s0"]
    assert [c["check_index"] for c in planted["checks"]] == [0, 1, 2]  # one reliance record per check
    assert planted["n_probes_with_planted"] >= 8
    assert planted["checks"][-1]["reliance_drop"] > 0.5  # the tiny model learned the shortcut
    assert planted["alerted"] and planted["first_alert_check"] <= planted["first_reliance_check"]
    assert planted["precision_at_1_last"] > 0.5
    assert clean["warning_alerts"] == [] and clean["n_probes_with_planted"] == 0
    assert report["targets"]["clean_target_met"]
    table = (tmp_path / "shortcut_detection.md").read_text()
    assert "| tiny-bert | 20% | 1 | 1 | 1 | 1 (100%) | 1 / 1 |" in table
