"""The overhead benchmark: its help text, and a whole run in its tiny mode (tiny BERT from a config)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "overhead.py"
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
    # (plain forwards may now outnumber them: counterfactual tests and faithfulness run forwards only)
    assert "gradient" not in without["tokens"] and with_cb["tokens"]["gradient"] > 0 and with_cb["tokens"]["forward"] > 0
    m = report["modelled"]
    assert set(m["costs_s_per_token"]) == {"train", "gradient", "forward"}
    assert m["overhead"] == pytest.approx(m["check_s"] / m["fit_s"]) and m["overhead"] > 0

    o = report["overhead"]
    assert o["ratio"] == pytest.approx(with_cb["fit_s"] / without["fit_s"])
    assert o["pair_ratios"] == [pytest.approx(o["ratio"])]
    assert o["check_share_of_epoch"] == pytest.approx(o["check_total_s_mean"] / without["epoch_s"][0])
    assert len(report["load_average"]["start"]) == 3

    # one check on the trained model, split into parts by cProfile (nothing patched)
    profile = report["profile"]
    parts = profile["parts_s"]
    assert all(s >= -1e-6 for s in parts.values()), parts
    assert parts["Integrated Gradients (engine.attribute besides tokenising)"] > 0
    assert parts["RunDirectorySink.log_check"] > 0
    # the parts add up to the whole profiled check, which also timed itself (before its sinks ran)
    assert profile["check_wall_s"] == pytest.approx(sum(parts.values()))
    assert 0 < profile["timings_attribute_s"] < profile["timings_total_s"] < profile["check_wall_s"]
    # the passes seen by a hook on the embedding layer: the trapezoid rule's first pass is
    # 13 points for each of the 8 probes; the counterfactual predictions are forwards
    first = profile["rounds"][0]
    assert first["round"] == "first pass" and first["points"] == 8 * 13 and first["passes"] >= 1
    assert sum(r["passes"] for r in profile["rounds"]) == profile["passes"]["gradient"]
    assert sum(r["share_of_path_tokens"] for r in profile["rounds"]) == pytest.approx(1.0)
    # passes without gradients in a check are the counterfactual predictions' (labelled probes
    # need no forward of their own, and calibration ran at set-up)
    assert (profile["passes"]["forward"] > 0) == (parts["counterfactual predictions (engine.predict)"] > 0)
    assert 0 <= profile["probes_refined"] <= 8 and (profile["probes_refined"] > 0) == (len(profile["rounds"]) > 1)
    assert profile["finish_s"] == with_cb["hook_s"]["on_fit_end"] > 0

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
    assert "| first pass | " in table and "| whole check (profiled) |" in table


PRIVATE_USE = re.compile(r"\b(?:engine|monitor|adapter|discovery|tracker|rules|callback)\._[a-z]\w*|setattr\(")


@pytest.mark.parametrize("name", ["overhead.py", "overhead_workload.py", "overhead_profile.py", "speed.py"])
def test_benchmarks_measure_without_patching_the_package(name: str):
    """The benchmarks measure from the outside (hooks, cProfile): they neither set attributes on
    live objects nor reach into private ones, so an engine refactor cannot break them silently."""
    source = (SCRIPT.parent / name).read_text()
    assert not PRIVATE_USE.findall(source)


def test_overhead_budget_tiny_run_prints_every_arm_and_the_checks_that_ran(tmp_path: Path):
    script = SCRIPT.parent / "overhead_budget.py"
    args = [sys.executable, str(script), "--tiny", "--epochs", "3", "--out", str(tmp_path), "--name", "budget"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "budget.json").read_text())
    arms = [r["arm"] for r in report["runs"]]
    assert arms == arms[:4] + arms[:4][::-1] and len(set(arms)) == 4  # mirrored: drift hits every arm alike
    exact = [r for r in report["runs"] if r["arm"] == "every epoch, no budget"]
    assert all(r["checks"] == [0, 1, 2] for r in exact)
    for run in report["runs"]:
        if run["arm"] in ("defaults", "every epoch, max_overhead 0.05"):
            assert run["checks"][0] == 0 and run["checks"][-1] == 2  # a tiny check is over budget: first and last
    assert "recorded share" in done.stdout and "defaults:" in done.stdout
