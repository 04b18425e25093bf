"""Run under ``torchrun --nproc_per_node 2`` (gloo, CPU): the Hugging Face callback handed an
FSDP1-wrapped model, as the Trainer hands it with ``fsdp=`` on GPUs (accelerate turns FSDP off on
CPU, so the Trainer cannot make this call here; the event is sent as the Trainer sends it).

Usage: ``python -m torch.distributed.run --nproc_per_node 2 tests/jobs/_trainer_fsdp1_event_job.py OUT``
with ``PYTHONPATH=tests``. Writes ``OUT/rank{r}.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from helpers._distributed import exit_after_all_ranks, report_a_hang
from helpers._sharded_models import ENGINE_OPTIONS, PROBES, build
from jobs._fsdp_job import shard
from transformers import TrainerControl, TrainerState, TrainingArguments

from explain_callbacks.integrations.transformers import AttributionDriftCallback


def main(out: Path) -> None:
    report_a_hang(150)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    tok, model = build("bert", out / f"tok{rank}")
    wrapped = shard(model, version=1)
    options = {k: v for k, v in ENGINE_OPTIONS.items() if k != "abs_tolerance"}
    callback = AttributionDriftCallback(tokenizer=tok, probes=PROBES, run_dir=out / "runs", run_name="run",
                                        verbose=False, **options)
    args = TrainingArguments(output_dir=str(out / "trainer"), use_cpu=True, report_to="none", eval_strategy="epoch")
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=wrapped, processing_class=tok)
    result = callback.monitor.check(step=1)
    callback.monitor.finish()
    (out / f"rank{rank}.json").write_text(json.dumps({
        "attributes_the_root": callback.monitor.engine.adapter.model is wrapped,
        "sharding": callback.monitor.config()["sharding"],
        "failed_checks": callback.monitor.summary()["failed_checks"],
        "n_records": len(result.snapshot.attributions) if result is not None else None,
    }))
    exit_after_all_ranks()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
