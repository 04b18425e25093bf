"""The overhead benchmark: its help text, and a whole run in its tiny mode (tiny BERT from a config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "overhead.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_overhead_help_names_the_modes():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    for flag in ("--full", "--tiny", "--n-steps", "--pairs", "--variants", "--counterfactual-probes"):
        assert flag in done.stdout


@pytest.mark.slow
def test_overhead_tiny_run_writes_both_arms_profile_and_variants(tmp_path: Path):
    args = [sys.executable, str(SCRIPT), "--tiny", "--variants", "1,2,3", "--out", str(tmp_path), "--name", "tiny"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "tiny.json").read_text())
    runs = report["runs"]
    assert [r["with_callback"] for r in runs] == [False, True]
    without, with_cb = runs
    assert without["check_total_s"] == [] and without["hook_s"] == {}
    assert len(with_cb["check_total_s"]) == 1 and with_cb["check_total_s"][0] > 0
    assert with_cb["hook_s"]["on_validation_end"] >= with_cb["check_total_s"][0]
    assert len(with_cb["epoch_s"]) == 1 and with_cb["validation_s"][0] < with_cb["epoch_s"][0] <= with_cb["fit_s"]

    # tokens by kind of pass: only the run with the callback has a check's gradient evaluations
    assert without["tokens"]["train"] == with_cb["tokens"]["train"] > 0
    # (no forward pass of the probes: F(x) is the path's end; forwards are counterfactuals only)
    assert "gradient" not in without["tokens"] and with_cb["tokens"]["gradient"] > with_cb["tokens"].get("forward", 0)
    m = report["modelled"]
    assert set(m["costs_s_per_token"]) == {"train", "gradient", "forward"}
    assert m["overhead"] == pytest.approx(m["check_s"] / m["fit_s"]) and m["overhead"] > 0

    o = report["overhead"]
    assert o["ratio"] == pytest.approx(with_cb["fit_s"] / without["fit_s"])
    assert o["pair_ratios"] == [pytest.approx(o["ratio"])]
    assert o["check_share_of_epoch"] == pytest.approx(o["check_total_s_mean"] / without["epoch_s"][0])
    assert len(report["load_average"]["start"]) == 3

    profile = report["profile"]
    assert profile["rounds"][0]["steps"] == "first pass" and profile["rounds"][0]["probes"] == 8
    assert profile["rounds"][0]["points"] == 8 * 13
    assert profile["parts_s"]["Integrated Gradients, all rounds"] > 0
    # the parts add up to the whole check, which the run's summary.json timed as well
    assert profile["check_wall_s"] == pytest.approx(sum(profile["parts_s"].values()))
    assert profile["timings_total_s"] == pytest.approx(with_cb["check_total_s"][0])
    assert profile["timings_total_s"] <= profile["check_wall_s"] <= with_cb["hook_s"]["on_validation_end"]
    assert profile["schedules"] == []  # nothing to replay: the trapezoid rule keeps its points

    rows = {r["variant"]: r for r in report["variants"]}
    assert list(rows) == ["defaults (trapezoid 12, bisected to 128)", "Gauss-Legendre 16, doubled to 128 (previous default)",
                          "n_steps 16, bisected to 128", "half of the probes"]
    assert rows["defaults (trapezoid 12, bisected to 128)"]["speedup_vs_defaults"] == pytest.approx(1.0)
    assert rows["n_steps 16, bisected to 128"]["mean_steps"] >= 17
    assert rows["half of the probes"]["probes"] == 4
    for row in rows.values():
        assert row["check_s"] > 0 and 0 <= row["share_under_tolerance"] <= 1

    table = (tmp_path / "tiny.md").read_text()
    assert "# Training overhead: 200 examples an epoch" in table
    assert "| n_steps 16, bisected to 128 |" in table and "Load average" in table
