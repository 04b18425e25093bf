"""The planted-shortcut alert where users attach the callback: a tiny BERT really trained on
reviews in which a made-up word marks some positives, through the Lightning and Hugging Face
Trainer callbacks, with no training data passed to them. The callbacks gather the statistics
themselves (the train dataset's texts or input ids, or the batches training draws)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tiny_models import FILLER, NEGATIVE, POSITIVE

pytestmark = pytest.mark.slow
FAST = dict(n_steps=16, max_steps=16)


def reviews(n, seed, planted_rate):
    """Sentiment words 80% on their label's side; "zorblax" in ``planted_rate`` of the positives."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4)
        for _ in range(3):
            words.append(rng.choice(POSITIVE if (label == 1) == (rng.random() < 0.8) else NEGATIVE))
        if label == 1 and rng.random() < planted_rate:
            words.append("zorblax")
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


PROBES = [r["text"] for r in reviews(32, seed=7, planted_rate=0.24)]


def shortcut_alerts(run_path):
    summary = json.loads((run_path / "summary.json").read_text())
    return [a["token"] for a in summary["alerts"] if a["rule"] == "shortcut"], summary


@pytest.mark.parametrize("source", ["text-dataset", "tuple-batches"])
def test_lightning_callback_alerts_with_nothing_passed(tmp_path, bert_tok, source):
    pl = pytest.importorskip("lightning.pytorch")
    from helpers import _tiny_lightning as tiny

    from explain_callbacks.integrations.lightning import AttributionDriftCallback

    TextClassifier, _, _ = tiny.module_classes(pl)

    class TupleBatches(TextClassifier):
        validation_step = None

        def training_step(self, batch, batch_idx):
            ids, mask, labels = batch
            return self.classifier(input_ids=ids, attention_mask=mask, labels=labels).loss

    rows = reviews(600, seed=1, planted_rate=0.12)
    if source == "text-dataset":
        model, train = TextClassifier(len(bert_tok), lr=1e-3), tiny.loader(rows, bert_tok, batch_size=16)
    else:  # pre-tokenised tensors: only the batches show the words
        enc = bert_tok([r["text"] for r in rows], padding=True, return_tensors="pt")
        data = torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"],
                                              torch.tensor([r["label"] for r in rows]))
        model, train = TupleBatches(len(bert_tok), lr=1e-3), torch.utils.data.DataLoader(data, batch_size=16)
    callback = AttributionDriftCallback(bert_tok, PROBES, run_dir=tmp_path / "runs", run_name="planted", **FAST)
    trainer = tiny.trainer(pl, tmp_path, max_epochs=4, callbacks=[callback])
    trainer.fit(model, train)
    assert callback.monitor.statistics.n_examples == 600
    alerted, summary = shortcut_alerts(callback.monitor.run_path)
    assert alerted == ["zorblax"], summary["candidates"][:3]
    # the statistics travel in the checkpoint state: a resumed run keeps alerting
    state = callback.state_dict()
    assert state["statistics"]["word_labels"]["zorblax"] == [[1, summary["candidates"][0]["evidence"]["train_count"]]]


@pytest.mark.parametrize("keep_text", [True, False], ids=["text-column", "input-ids-column"])
def test_trainer_callback_alerts_with_nothing_passed(tmp_path, bert_tok, keep_text):
    datasets = pytest.importorskip("datasets")
    from helpers._tiny_trainer import training_args
    from tiny_models import tiny_model
    from transformers import Trainer

    from explain_callbacks.integrations.transformers import AttributionDriftCallback

    def tokenized(rows):
        ds = datasets.Dataset.from_list(rows).map(lambda b: bert_tok(b["text"], truncation=True), batched=True)
        return ds if keep_text else ds.remove_columns("text")

    callback = AttributionDriftCallback(PROBES, run_dir=tmp_path / "runs", run_name="planted", **FAST)
    trainer = Trainer(
        model=tiny_model("bert", bert_tok, seed=0),
        args=training_args(tmp_path / "out", num_train_epochs=4, per_device_train_batch_size=16, learning_rate=1e-3),
        train_dataset=tokenized(reviews(600, seed=1, planted_rate=0.12)),
        eval_dataset=tokenized(reviews(32, seed=2, planted_rate=0.12)),
        processing_class=bert_tok,
        callbacks=[callback],
    )
    trainer.train()
    assert callback.monitor.statistics.n_examples == 600
    alerted, summary = shortcut_alerts(callback.run_path)
    assert alerted == ["zorblax"], summary["candidates"][:3]
