"""A check on an FSDP-sharded model (FSDP2 ``fully_shard``; FSDP1 ``FullyShardedDataParallel``)
under torchrun: two CPU ranks (gloo).

The ranks run every probe in lockstep (``attribution.distributed``); their attributions must
equal the same weights attributed unsharded in this process, training must come out bit for bit
as without the monitor, and a check failing on one rank (or a rank arriving after the agreement
timeout) must end on both while training goes on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from helpers._distributed import torchrun  # noqa: E402
from helpers._sharded_models import ENGINE_OPTIONS, PROBES, build  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402,F401  (FSDP2 must exist)

from explain_callbacks import AttributionEngine  # noqa: E402

JOB = Path(__file__).parent / "jobs" / "_fsdp_job.py"


def run_job(out: Path, case: str, *extra: object) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "output.log"
    status = torchrun(JOB, [out, case, *extra], log, timeout=240)
    assert status == 0, f"exit {status} (None: timed out)\n" + log.read_text()[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def rel_l1(a, b) -> float:
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((a - b).abs().sum() / b.abs().sum().clamp_min(1e-30))


def assert_equals_unsharded(out: Path, case: str) -> None:
    tok, model = build(case.removesuffix("-fsdp1"), out / "tok_here")
    model.load_state_dict(torch.load(out / "state_at_first_check.pt"))
    engine = AttributionEngine(model, tok, **ENGINE_OPTIONS)
    engine.load_state_dict(json.loads((out / "engine_state.json").read_text()))  # its calibration, targets
    here = {a.probe_id: a for a in engine.attribute(PROBES)}
    first = json.loads((out / "runs" / "run" / "attributions.jsonl").read_text().splitlines()[0])
    sharded = first["attributions"]
    assert [a["probe_id"] for a in sharded] == [p["id"] for p in PROBES]
    assert len({a["n_steps"] for a in sharded}) > 1  # the probes needed different step counts
    for a in sharded:
        mine = here[a["probe_id"]]
        assert a["n_steps"] == mine.n_steps, a["probe_id"]
        assert rel_l1(a["token_scores"], mine.token_scores) <= 1e-5, a["probe_id"]
        assert a["converged"]


@pytest.mark.parametrize("case", ["bert", pytest.param("qwen2-lora", marks=pytest.mark.slow),
                                  pytest.param("bert-fsdp1", marks=pytest.mark.slow)])
def test_sharded_check_equals_unsharded_and_leaves_training_alone(tmp_path, case):
    if case.endswith("lora"):
        pytest.importorskip("peft")
    ranks = run_job(tmp_path, case)
    for r in ranks:
        assert r["failed_checks"] == []
        assert r["same_weights"] and r["same_optimizer"] and r["n_optimizer_tensors"] > 0
    summary = json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())
    assert [c["step"] for c in summary["checks"]] == [2, 4]
    assert summary["config"]["sharding"] == ("fsdp1" if case.endswith("fsdp1") else "fsdp2")
    assert summary["config"]["precision"] == "float32"
    assert summary["candidates"]  # discovery's counterfactual forwards ran, collectively
    assert_equals_unsharded(tmp_path, case)


def test_a_check_failing_on_one_rank_ends_on_every_rank_and_training_goes_on(tmp_path):
    rank0, rank1 = run_job(tmp_path, "bert", 1)
    assert rank1["failed_checks"] == ["step 2: RuntimeError: injected failure on this rank"]
    assert len(rank0["failed_checks"]) == 1 and "failed on rank 1" in rank0["failed_checks"][0]
    assert all(r["check_s"][0] < 30 for r in (rank0, rank1))  # ended at the next agreement, not a timeout
    for r in (rank0, rank1):
        assert r["same_weights"] and r["same_optimizer"]
    summary = json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())
    assert [c["step"] for c in summary["checks"]] == [4]  # the next check ran on both ranks
    assert summary["failed_checks"] == rank0["failed_checks"]


@pytest.mark.slow
def test_lightning_model_parallel_strategy_checks_the_fully_sharded_model(tmp_path):
    pytest.importorskip("lightning.pytorch")
    log = tmp_path / "output.log"
    status = torchrun(Path(__file__).parent / "jobs" / "_lightning_fsdp2_job.py", [tmp_path], log, timeout=240)
    assert status == 0, f"exit {status} (None: timed out)\n" + log.read_text()[-5000:]
    summary = json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())
    assert summary["failed_checks"] == [] and summary["config"]["sharding"] == "fsdp2"
    assert [c["step"] for c in summary["checks"]] == [2, 4]  # 16 reviews, 4 a rank a step: 2 steps an epoch


def test_a_rank_that_never_arrives_fails_the_check_on_the_others_within_the_timeout(tmp_path):
    rank0, rank1 = run_job(tmp_path, "bert", 1, "late")  # rank 1 comes 9 s late; the agreement waits 3 s
    assert rank0["check_s"][0] < 20  # the timeout, not a hang
    for r in (rank0, rank1):
        assert [m.split(":")[0] for m in r["failed_checks"]] == ["step 2", "step 4"]  # and later checks are off
        assert all("did not meet within 3 s" in m for m in r["failed_checks"])
        assert r["same_weights"] and r["same_optimizer"]  # training went on, unchanged


def test_the_trainer_callback_attributes_an_fsdp1_root_it_is_handed(tmp_path):
    """The Trainer hands callbacks the FSDP1-wrapped model under ``fsdp=`` (GPUs only: accelerate
    turns FSDP off on CPU); unwrapped to ``.module`` like DDP's, its forward skipped the root's
    gathering and set-up failed ('weight' must be 2-D)."""
    out = tmp_path
    log = out / "output.log"
    status = torchrun(Path(__file__).parent / "jobs" / "_trainer_fsdp1_event_job.py", [out], log, timeout=240)
    assert status == 0, f"exit {status} (None: timed out)\n" + log.read_text()[-5000:]
    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    for r in (rank0, rank1):
        assert r["attributes_the_root"] and r["sharding"] == "fsdp1" and r["failed_checks"] == []
    assert rank0["n_records"] == len(PROBES)
