"""Run under ``torchrun --nproc_per_node 2`` (gloo, CPU): Lightning's ModelParallelStrategy with
``fully_shard`` (FSDP2) in ``configure_model``, and the callback checking in lockstep.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 tests/jobs/_lightning_fsdp2_job.py OUT``
with ``PYTHONPATH=tests``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
from helpers import _tiny_lightning as tiny
from helpers._distributed import exit_after_all_ranks, report_a_hang
from lightning.pytorch.strategies import ModelParallelStrategy

from explain_callbacks.integrations.lightning import AttributionDriftCallback

PROBES = [
    {"text": "the movie was great", "label": 1},
    {"text": "this film was awful", "label": 0},
    {"text": "really boring plot", "label": 0},
]


def main(out: Path) -> None:
    report_a_hang(150)
    out.mkdir(parents=True, exist_ok=True)
    tok = tiny.tokenizer(out)

    class Sharded(tiny.module_classes(pl)[0]):
        def configure_model(self) -> None:
            from torch.distributed.fsdp import fully_shard

            for layer in self.classifier.bert.encoder.layer:
                fully_shard(layer)
            fully_shard(self.classifier)

    pl.seed_everything(0)
    callback = AttributionDriftCallback(tok, PROBES, run_dir=out / "runs", run_name="run", n_steps=4, max_steps=32,
                                        every_n_steps=2, verbose=False)
    trainer = tiny.trainer(pl, out, callbacks=[callback], devices=2, max_epochs=2,
                           strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1))
    trainer.fit(Sharded(len(tok), dropout=0.0, lr=0.1, sgd=True), tiny.loader(tiny.reviews(16), tok, batch_size=4))
    exit_after_all_ranks()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
