"""Shortcut discovery against a real (tiny, briefly trained) BERT and the real engine.

The data follow the scenario the score is designed for: sentiment words about 80% pure, and
in the planted run a made-up word in 12% of the positive examples only.
"""

import random

import pytest
from tiny_models import FILLER, NEGATIVE, POSITIVE, bert_tokenizer, tiny_model, train_briefly

from explain_callbacks.attribution.engine import AttributionEngine
from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import Snapshot
from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.shortcuts import ShortcutDiscovery

pytestmark = pytest.mark.slow


def reviews(n, seed, planted_rate):
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4)
        for _ in range(3):
            same_side = rng.random() < 0.8
            words.append(rng.choice(POSITIVE if (label == 1) == same_side else NEGATIVE))
        if label == 1 and rng.random() < planted_rate:
            words.append("zorblax")
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module", params=[0.12, 0.0], ids=["planted", "clean"])
def trained_run(request, tmp_path_factory):
    planted_rate = request.param
    tokenizer = bert_tokenizer(tmp_path_factory.mktemp("vocab"))
    texts, labels = reviews(600, seed=1, planted_rate=planted_rate)
    model = train_briefly(tiny_model("bert", tokenizer), tokenizer, texts, labels, steps=150)
    engine = AttributionEngine(model, tokenizer, n_steps=16)
    probe_texts, _ = reviews(32, seed=7, planted_rate=2 * planted_rate)
    check = Snapshot(0, 0, 0, engine.attribute(ProbeSet(probe_texts)))
    return planted_rate, texts, labels, engine, check


@pytest.mark.parametrize("with_training_data", [True, False], ids=["training", "no-training"])
def test_planted_word_found_and_clean_run_quiet(trained_run, with_training_data):
    planted_rate, texts, labels, engine, check = trained_run
    discovery = ShortcutDiscovery(texts, labels) if with_training_data else ShortcutDiscovery()
    candidates = discovery.rank(check, engine.predict)
    alerted = [a.token for a in AlertRules().evaluate(check, candidates)]
    if planted_rate:
        assert candidates[0]["word"] == "zorblax"
        assert candidates[0]["evidence"]["flip_rate_insertion"] > 0.5
        # without training statistics a suspect is ranked but never alerted
        assert alerted == (["zorblax"] if with_training_data else [])
    else:
        assert max((c["score"] for c in candidates), default=0.0) < AlertRules().shortcut_min_score
        assert alerted == []
