"""Probes are attributed up to the truncation training used (issue 17): ``max_length=`` is an
option of every integration (``MonitorOptions``), reaches the adapter, and is recorded in the
summary's config."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import tiny_model

from explain_callbacks.attribution.adapters import HuggingFaceAdapter
from explain_callbacks.monitor import AttributionMonitor
from explain_callbacks.options import MonitorOptions

LONG = "the movie was good and the plot was great and the acting was fun"


def test_max_length_truncates_as_the_model_was_trained(bert_tok):
    model = tiny_model("bert", bert_tok)
    options = MonitorOptions(max_length=6, run_dir=None, verbose=False, n_steps=4, max_steps=4)
    monitor = AttributionMonitor.from_options(options, model, bert_tok, [LONG, "bad plot"])
    assert monitor.config()["max_length"] == 6 and monitor.summary()["config"]["max_length"] == 6
    result = monitor.check(step=1, epoch=0)
    long = next(a for a in result.snapshot.attributions if a.text == LONG)
    assert long.truncated and len(long.tokens) == 6
    with torch.no_grad():  # the model's own forward on what training fed it (truncated to 6)
        logits = model(**bert_tok(LONG, truncation=True, max_length=6, return_tensors="pt")).logits[0]
    assert long.scores == pytest.approx(logits.tolist(), abs=1e-5)


def test_default_is_the_tokenizer_and_model_limit(bert_tok):
    options = MonitorOptions(run_dir=None, verbose=False, n_steps=4, max_steps=4)
    monitor = AttributionMonitor.from_options(options, tiny_model("bert", bert_tok), bert_tok, ["good film"])
    expected = HuggingFaceAdapter(tiny_model("bert", bert_tok), bert_tok).max_length
    assert monitor.config()["max_length"] == expected


def test_a_built_adapter_refuses_max_length_next_to_it(bert_tok):
    adapter = HuggingFaceAdapter(tiny_model("bert", bert_tok), bert_tok)
    with pytest.raises(ValueError, match="max_length= cannot be applied"):
        AttributionMonitor.from_options(MonitorOptions(max_length=6, run_dir=None), adapter, probes=["good film"])


def test_hf_trainer_callback_takes_max_length(tmp_path):
    pytest.importorskip("transformers")
    from helpers._tiny_trainer import make_trainer

    from explain_callbacks.integrations.transformers import AttributionDriftCallback

    callback = AttributionDriftCallback(probes=[LONG], run_dir=tmp_path / "runs", max_length=6, n_steps=4,
                                        max_steps=4, verbose=False)
    make_trainer(tmp_path, callbacks=[callback], n_train=8, num_train_epochs=1).train()
    summary = json.loads((callback.run_path / "summary.json").read_text())
    assert summary["config"]["max_length"] == 6


def test_lightning_callback_takes_max_length(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from helpers import _tiny_lightning as tiny

    from explain_callbacks.integrations.lightning import AttributionDriftCallback

    ltok = tiny.tokenizer(tmp_path)
    callback = AttributionDriftCallback(ltok, ["the movie was great and the plot was fun"], run_dir=tmp_path / "runs",
                                        max_length=5, n_steps=4, max_steps=4, verbose=False)
    trainer = tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=1)
    trainer.fit(tiny.module_classes(pl)[0](len(ltok)), tiny.loader(tiny.reviews(8), ltok))
    summary = json.loads((callback.monitor.run_path / "summary.json").read_text())
    assert summary["config"]["max_length"] == 5
    line = json.loads((callback.monitor.run_path / "attributions.jsonl").read_text().splitlines()[0])
    assert len(line["attributions"][0]["tokens"]) == 5 and line["attributions"][0]["truncated"]
