"""Run under ``torchrun --nproc_per_node 2`` (gloo, CPU): the bare ``AttributionMonitor`` on an
FSDP2-sharded model (FSDP1 for a case ending ``-fsdp1``) during training, against the same
training without it.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 tests/jobs/_fsdp_job.py OUT CASE [FAIL_RANK [late]]``
with ``PYTHONPATH=tests``. Writes ``OUT/rank{r}.json`` (each check's time and whether training
came out bit for bit the same), and from rank zero the weights at the first check and the
engine's state, for the test to attribute the same model unsharded. With ``FAIL_RANK`` that rank's
first check fails at its third batch; with ``late`` too, that rank comes to its first check later
than the agreement timeout (``LATE_TIMEOUT_S``) instead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from helpers._distributed import exit_after_all_ranks, report_a_hang
from helpers._sharded_models import ENGINE_OPTIONS, LAYER_CLASSES, PROBES, build, training_batches

from explain_callbacks import AttributionEngine, AttributionMonitor

STEPS, CHECK_STEPS = 4, (2, 4)
LATE_TIMEOUT_S = 3


def shard(model: torch.nn.Module, version: int = 2) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    if version == 1:

        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        layers = {type(m) for m in model.modules() if type(m).__name__ in LAYER_CLASSES}
        return FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy(layers), device_id=torch.device("cpu"),
                                        use_orig_params=True)
    for module in list(model.modules()):
        if type(module).__name__ in LAYER_CLASSES:
            fully_shard(module)
    fully_shard(model)
    return model


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every rank's shards together (a collective)."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}


def optimizer_state(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    out = []
    for state in opt.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                out.append((v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone())
    return out


def fail_at_third_batch(engine: AttributionEngine) -> None:
    calls = {"n": 0}
    batch = engine.adapter.batch

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure on this rank")
        return batch(*args, **kwargs)

    engine.adapter.batch = failing


def train(case: str, out: Path, rank: int, with_monitor: bool, fail_rank: int | None, late: bool = False) -> dict:
    tok, model = build(case.removesuffix("-fsdp1"), out / f"tok{rank}")
    model = shard(model, 1 if case.endswith("-fsdp1") else 2)
    monitor = None
    if with_monitor:
        engine = AttributionEngine(model, tok, sync_timeout_s=LATE_TIMEOUT_S if late else 60, **ENGINE_OPTIONS)
        monitor = AttributionMonitor(engine, PROBES, run_dir=out / "runs", run_name="run", verbose=False)
    torch.manual_seed(100 + rank)  # dropout: the same stream in both runs, unless a check moved it
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    timings = []
    for step, (enc, labels) in enumerate(training_batches(tok, rank, STEPS), start=1):
        model.train()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if monitor is not None and step in CHECK_STEPS:
            if fail_rank == rank and step == CHECK_STEPS[0] and late:
                time.sleep(3 * LATE_TIMEOUT_S)
            elif fail_rank == rank and step == CHECK_STEPS[0]:
                fail_at_third_batch(monitor.engine)
            started = time.perf_counter()
            monitor.check(step=step)
            timings.append(time.perf_counter() - started)
            if fail_rank == rank and step == CHECK_STEPS[0]:
                monitor.engine.adapter.batch = type(monitor.engine.adapter).batch.__get__(monitor.engine.adapter)
            if step == CHECK_STEPS[0]:
                state = full_state(model)
                if rank == 0:
                    torch.save(state, out / "state_at_first_check.pt")
    if monitor is not None:
        monitor.finish()
        if rank == 0:
            (out / "engine_state.json").write_text(json.dumps(monitor.engine.state_dict()))
    return {"weights": full_state(model), "optimizer": optimizer_state(opt), "check_s": timings,
            "failed_checks": monitor._failed_checks if monitor else []}


def main(out: Path, case: str, fail_rank: int | None, late: bool) -> None:
    report_a_hang(150)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    with_cb = train(case, out, rank, True, fail_rank, late)
    without = train(case, out, rank, False, None)
    same_weights = all(torch.equal(with_cb["weights"][k], v) for k, v in without["weights"].items())
    same_optimizer = len(with_cb["optimizer"]) == len(without["optimizer"]) and all(
        torch.equal(a, b) for a, b in zip(with_cb["optimizer"], without["optimizer"]))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "same_weights": same_weights, "same_optimizer": same_optimizer, "n_optimizer_tensors": len(without["optimizer"]),
        "check_s": with_cb["check_s"], "failed_checks": with_cb["failed_checks"],
    }))
    exit_after_all_ranks()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None, sys.argv[4:] == ["late"])
