"""AttributionDriftCallback under DDP: two CPU processes (gloo) against one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning.pytorch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).parent / "jobs" / "_lightning_ddp_script.py"
DISTRIBUTED_ENV = {"LOCAL_RANK", "RANK", "GROUP_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                   "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"}


def train(out_dir: Path, devices: int) -> dict:
    """Run the script; output goes to a file, so a lingering rank cannot block reading it."""
    out_dir.mkdir(parents=True)
    # rank variables left by an earlier in-process distributed test would make Lightning think
    # the ranks were launched already, and rank zero would wait for a rank that never starts
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log_path = out_dir / "output.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(out_dir), str(devices)],
            cwd=out_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            try:  # the whole session: Lightning's launcher started the other rank
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert returncode == 0, f"exit {returncode} (None: timed out)\n" + log_path.read_text()[-4000:]
    return json.loads((out_dir / "runs" / "run" / "summary.json").read_text())


@pytest.mark.slow
def test_ddp_summary_equals_a_single_process_run(tmp_path):
    single = train(tmp_path / "single", 1)
    ddp = train(tmp_path / "ddp", 2)

    assert [(c["check_index"], c["step"], c["epoch"]) for c in ddp["checks"]] == [(0, 4, 0), (1, 8, 1)]
    assert [(c["step"], c["epoch"]) for c in ddp["checks"]] == [(c["step"], c["epoch"]) for c in single["checks"]]
    for d, s in zip(ddp["checks"], single["checks"]):
        assert [t["word"] for t in d["top_tokens"]] == [t["word"] for t in s["top_tokens"]]
        assert [t["mean_share"] for t in d["top_tokens"]] == pytest.approx(
            [t["mean_share"] for t in s["top_tokens"]], abs=1e-3
        )
        assert d["convergence"]["max_steps_used"] == s["convergence"]["max_steps_used"]
    assert [(a["rule"], a["token"], a["first_step"]) for a in ddp["alerts"]] == [
        (a["rule"], a["token"], a["first_step"]) for a in single["alerts"]
    ] == [("watch_token", "movie", 4)]

    # rank zero logged each check once, every probe present in probe order
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "runs" / "run" / "attributions.jsonl").read_text().splitlines()]
    assert [line["check_index"] for line in lines] == [0, 1]
    assert [a["probe_id"] for a in lines[0]["attributions"]] == ["p0", "p1", "p2", "p3", "p4"]
    assert ddp["status"] == "finished"

    # fail_on: every rank raised after fit, not only rank zero (only rank zero holds the alerts,
    # so only its message names them)
    assert sorted(p.name for p in (tmp_path / "ddp").glob("raised_rank*.txt")) == ["raised_rank0.txt", "raised_rank1.txt"]
    assert "watch_token" in (tmp_path / "ddp" / "raised_rank0.txt").read_text()
