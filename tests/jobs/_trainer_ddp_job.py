"""Run under ``torchrun --nproc_per_node 2``: a CPU DDP Trainer run with the callback.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 tests/jobs/_trainer_ddp_job.py TMP_DIR`` with
``PYTHONPATH=tests`` (the helpers package).
"""

from __future__ import annotations

import sys
from pathlib import Path

from helpers._distributed import exit_after_all_ranks, report_a_hang
from helpers._tiny_trainer import make_trainer

from explain_callbacks.integrations.transformers import AttributionDriftCallback


def main(tmp: Path) -> None:
    report_a_hang()
    # stop_on_alert: every check asks rank zero whether to stop (a collective), though none alerts here
    cb = AttributionDriftCallback(run_dir=tmp / "runs", run_name="ddp", probe_sample_size=6, n_steps=4, max_steps=4,
                                  stop_on_alert=True)
    trainer = make_trainer(tmp, [cb], ddp_backend="gloo")
    trainer.train()
    if trainer.is_world_process_zero():
        print("RUN_PATH", cb.run_path, flush=True)
    exit_after_all_ranks()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
