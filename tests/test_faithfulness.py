"""Comprehensiveness and sufficiency per check, against a hand computation with the model's own
forward on the tokenizer's output (not the package's masking or batching)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from tiny_models import sentiment_data, tiny_model, train_briefly

from explain_callbacks import AttributionEngine, AttributionMonitor
from explain_callbacks.attribution.faithfulness import FRACTIONS, evaluate_faithfulness, rationales
from explain_callbacks.options import MonitorOptions

TEXTS = ["the movie was really great and the acting was fun", "this film is bad", "a very very dull and boring plot"]


@pytest.fixture(scope="module")
def trained(bert_tok):
    model = tiny_model("bert", bert_tok, seed=0)
    texts, labels = sentiment_data(200, seed=0)
    train_briefly(model, bert_tok, texts, labels, steps=80)
    return model


def test_rationales_follow_ferret_percentages():
    # 4 words: only 50% gives a word (int(0.5 * 4) = 2); the negative second word never enters
    assert rationales([0.5, -0.2, 0.1, 0.3]) == [[0, 3]]
    scores = [0.05 * i for i in range(20)]  # 20 words, all positive except the first (0)
    assert rationales(scores) == [[19], [19, 18], [19, 18, 17, 16], list(range(19, 9, -1))]
    assert rationales([-1.0, -2.0] * 10) == []  # nothing positive: no rationale
    assert rationales([1.0, 0.0, 0.0, 0.0]) == [[0]]  # 50% = 2 words, one positive: still one


def _probability(model, ids, target):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
    return float(torch.softmax(logits[0].double(), -1)[target])


def test_against_the_models_own_forward(trained, bert_tok):
    engine = AttributionEngine(trained, bert_tok)
    attributions = engine.attribute([{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)])
    rng_before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    results = evaluate_faithfulness(engine.adapter, attributions)
    assert torch.equal(rng_before[0], torch.get_rng_state()) and rng_before[1] == random.getstate()
    assert np.array_equal(rng_before[2], np.random.get_state()[1])
    assert not trained.training
    for a, result in zip(attributions, results):
        enc = bert_tok(a.text)
        ids, word_of = enc["input_ids"], enc.word_ids()
        words = a.text.split()
        assert a.words == words
        scores = a.word_scores
        p_full = _probability(trained, ids, a.target)
        removed, kept, chosen, previous = [], [], [], None
        for fraction in FRACTIONS:
            k = int(fraction * len(words))
            top = [i for i in sorted(range(len(words)), key=lambda i: -scores[i])[:k] if scores[i] > 0]
            if not top or set(top) == previous:
                continue
            previous = set(top)
            chosen.append(top)
            without = [a.baseline_id if w is not None and w in top else t for t, w in zip(ids, word_of)]
            only = [a.baseline_id if w is not None and w not in top else t for t, w in zip(ids, word_of)]
            removed.append(p_full - _probability(trained, without, a.target))
            kept.append(p_full - _probability(trained, only, a.target))
        assert chosen, "every text here has a rationale"
        assert result["comprehensiveness"] == pytest.approx(np.mean(removed), abs=1e-5)
        assert result["sufficiency"] == pytest.approx(np.mean(kept), abs=1e-5)
        assert result["probability"] == pytest.approx(p_full, abs=1e-5)
        assert result["n_fractions"] == len(chosen) and result["forwards"] == 3 * len(chosen)
        assert result["random_comprehensiveness"] is not None
    # the random words are drawn per probe, the same at every call
    assert evaluate_faithfulness(engine.adapter, attributions) == results


def test_recorded_per_probe_per_check_and_in_the_sinks(trained, bert_tok, tmp_path):
    probes = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    monitor = AttributionMonitor(AttributionEngine(trained, bert_tok), probes, run_dir=tmp_path, run_name="f",
                                 verbose=False)
    result = monitor.check(step=1)
    monitor.finish()
    check = json.loads((tmp_path / "f" / "summary.json").read_text())["checks"][0]
    figures = check["faithfulness"]
    assert figures["n_probes"] == 3 and figures["comprehensiveness"] is not None
    assert figures["forwards_per_probe"] > 0 and "faithfulness_s" in check["timings"]
    snapshot = json.loads((tmp_path / "f" / "attributions.jsonl").read_text().splitlines()[0])
    assert all(a["faithfulness"]["comprehensiveness"] is not None for a in snapshot["attributions"])
    scalars = result.scalars()
    assert scalars["attribution/faithfulness/comprehensiveness"] == figures["comprehensiveness"]
    assert "attribution/faithfulness/fractions" not in scalars

    off = AttributionMonitor(AttributionEngine(trained, bert_tok), probes, run_dir=None, verbose=False,
                             faithfulness=False)
    quiet = off.check(step=1)
    assert quiet.faithfulness == {} and all(a.faithfulness is None for a in quiet.snapshot.attributions)
    assert not any(k.startswith("attribution/faithfulness") for k in quiet.scalars())
    assert off.config()["faithfulness"] is False


def test_off_switch_is_validated_at_construction():
    with pytest.raises(ValueError, match="faithfulness must be True or False"):
        MonitorOptions(probes=["a text"], faithfulness="no")
    assert MonitorOptions(probes=["a text"], faithfulness=False).faithfulness is False
