"""Train the tiny classifier with the callback, on one process or with DDP on CPU (gloo).

Run by tests/test_lightning_ddp.py as ``python tests/jobs/_lightning_ddp_script.py OUT_DIR DEVICES``;
Lightning's DDP launcher starts the second rank by running this script again. Each rank that
sees AttributionAlertError after fit writes ``raised_rank<N>.txt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package

import lightning.pytorch as pl  # noqa: E402
from helpers import _tiny_lightning as tiny  # noqa: E402
from helpers._distributed import report_a_hang  # noqa: E402

from explain_callbacks.detection.alerts import AlertRules  # noqa: E402
from explain_callbacks.integrations.lightning import AttributionDriftCallback  # noqa: E402
from explain_callbacks.monitor import AttributionAlertError  # noqa: E402

# five labelled probes (fixed targets): the two ranks get uneven shares
PROBES = [
    {"text": "the movie was great", "label": 1},
    {"text": "this film was awful", "label": 0},
    {"text": "really boring plot", "label": 0},
    {"text": "quite fun acting", "label": 1},
    {"text": "the story was good", "label": 1},
]
GLOBAL_BATCH = 8


def main(out_dir: Path, devices: int) -> None:
    report_a_hang()
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = tiny.tokenizer(out_dir)
    pl.seed_everything(0)
    model = tiny.module_classes(pl)[0](len(tok), dropout=0.0, lr=0.1, sgd=True)
    callback = AttributionDriftCallback(
        tok, PROBES, run_dir=out_dir / "runs", run_name="run", n_steps=8, max_steps=32, fail_on="warning",
        rules=AlertRules(watch_tokens=["movie"], watch_top_k=50),
    )
    trainer = tiny.trainer(
        pl, out_dir, callbacks=[callback], devices=devices, strategy="ddp" if devices > 1 else "auto",
        use_distributed_sampler=False,
    )
    # Each optimizer step sees the same 8 reviews either way: one batch of 8, or 4 on each rank
    # (unshuffled: Lightning's own DDP sampler would shuffle).
    train = tiny.loader(tiny.reviews(32), tok, batch_size=GLOBAL_BATCH // devices)
    if devices > 1:
        sampler = DistributedSampler(train.dataset, devices, int(os.environ.get("LOCAL_RANK", 0)), shuffle=False)
        train = DataLoader(train.dataset, GLOBAL_BATCH // devices, sampler=sampler, collate_fn=train.collate_fn)
    try:
        trainer.fit(model, train, tiny.loader(tiny.reviews(8, seed=1), tok))
    except AttributionAlertError as err:
        (out_dir / f"raised_rank{trainer.global_rank}.txt").write_text(str(err))
    # Left to interpreter exit, gloo's threads can abort the process (SIGABRT) after a clean run.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
