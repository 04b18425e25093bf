"""The insertion effect, the small-count purity test and the pair share of shortcut discovery.

The insertion effect is measured on a real (tiny, briefly trained) BERT through the real engine:
the probability shift toward the word's label when it is inserted into every probe predicted
otherwise, beyond the shift that neutral control words at the same place cause. The purity test
and the pair share are judged on hand-built attribution records and training statistics.
"""

from __future__ import annotations

from functools import partial

import pytest
from helpers.attribution_records import attribution, snapshot
from scipy import stats
from test_shortcuts_tiny_bert import reviews  # sentiment words ~80% pure, a planted word in positives
from tiny_models import FILLER, NEGATIVE, POSITIVE, tiny_model, train_briefly

from explain_callbacks.attribution.engine import AttributionEngine
from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import Snapshot
from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.shortcuts import EFFECT_MAX_P, ShortcutDiscovery


@pytest.fixture(scope="module")
def trained(bert_tok):
    texts, labels = reviews(600, seed=1, planted_rate=0.12)
    model = train_briefly(tiny_model("bert", bert_tok), bert_tok, texts, labels, steps=150)
    engine = AttributionEngine(model, bert_tok, n_steps=16)
    probe_texts, _ = reviews(32, seed=7, planted_rate=0.24)
    check = Snapshot(0, 0, 0, engine.attribute(ProbeSet(probe_texts)))
    return texts, labels, engine, check


@pytest.mark.slow
def test_engine_probabilities_agree_with_its_class_ids(trained):
    _, _, engine, check = trained
    texts = [a.text for a in check.attributions]
    rows = engine.predict(texts, probabilities=True)
    assert all(len(r) == 2 and abs(sum(r) - 1.0) < 1e-9 for r in rows)
    assert [max(range(2), key=r.__getitem__) for r in rows] == engine.predict(texts)


@pytest.mark.slow
def test_insertion_effect_measured_on_every_probe_predicted_otherwise(trained):
    texts, labels, engine, check = trained
    discovery = ShortcutDiscovery(texts, labels)
    candidates = {c["word"]: c for c in discovery.rank(check, partial(engine.predict, probabilities=True))}
    planted = candidates["zorblax"]["evidence"]
    others = [a for a in check.attributions if a.prediction != 1 and "zorblax" not in a.text]
    # all the probes predicted otherwise, not only the most confident half the flips use
    assert planted["n_effect_probes"] == len(others) > planted["n_insertion_probes"]
    assert planted["insertion_effect"] > 0.3 and planted["insertion_effect_p"] <= EFFECT_MAX_P
    # the controls are frequent words as common in both classes as the priors
    assert planted["control_words"] and set(planted["control_words"]) <= set(FILLER)
    # a genuine class word moves probabilities too, without flipping confident probes: the
    # effect sees it where the flips do not, and the purity gate keeps it quiet
    genuine = [c for w, c in candidates.items() if w in POSITIVE + NEGATIVE
               and c["evidence"]["flip_rate_insertion"] == 0.0
               and (c["evidence"]["insertion_effect_p"] or 1.0) <= EFFECT_MAX_P]
    assert genuine and max(c["evidence"]["insertion_effect"] for c in genuine) > 0.1
    assert [a.token for a in AlertRules().evaluate(check, list(candidates.values()))] == ["zorblax"]


@pytest.mark.slow
def test_class_ids_alone_give_flips_but_no_effect(trained):
    texts, labels, engine, check = trained
    candidates = ShortcutDiscovery(texts, labels).rank(check, engine.predict)
    planted = next(c for c in candidates if c["word"] == "zorblax")["evidence"]
    assert planted["flip_rate_insertion"] is not None
    assert planted["insertion_effect"] is None and planted["n_effect_probes"] == 0


def _statistics(extra: list[tuple[str, int]]):
    """Training texts: genuine class words 74% pure in 200 examples each, plus ``extra``
    (text, label) rows."""
    texts, labels = [], []
    for i in range(200):
        label = i % 2
        word = ("great" if label else "awful") if i % 100 < 74 else ("awful" if label else "great")
        texts.append(f"the plot was {word}")
        labels.append(label)
    for text, label in extra:
        texts.append(text)
        labels.append(label)
    return texts, labels


def test_thirteen_pure_examples_are_purer_than_class_words_of_74_percent():
    texts, labels = _statistics([("the plot was zorblax", 1)] * 13)
    discovery = ShortcutDiscovery(texts, labels)
    probe = attribution("p0", ["the", "plot", "was", "zorblax"], [0.1, 0.1, 0.1, 0.7])
    (candidate,) = [c for c in discovery.rank(snapshot(0, [probe])) if c["word"] == "zorblax"]
    evidence = candidate["evidence"]
    assert evidence["purity_lower"] < 0.9  # the old fixed bound said: not pure enough
    counts = discovery.statistics.counts("great")
    top, total = max(counts.values()), sum(counts.values())
    assert evidence["purity_reference"] == pytest.approx(top / total) == pytest.approx(0.74)
    assert evidence["purity_p_value"] == pytest.approx(
        stats.fisher_exact([[13, 0], [top, total - top]], alternative="greater").pvalue)
    assert evidence["purity_p_value"] < 0.05
    rules = AlertRules()
    # judged alone (a family of one); in this check's family its adjusted value decides
    assert evidence["purity_q_value"] >= evidence["purity_p_value"] and evidence["fdr_family_size"] > 1
    with_flips = {**candidate, "evidence": {**evidence, "purity_q_value": None,
                                            "basis": ["attribution", "training", "counterfactual"]}}
    assert rules.shortcut_threshold(with_flips) == rules.shortcut_min_score_pure
    # as mixed as the class words: a class word, however pure its few examples, never alerts
    mixed = {**with_flips, "evidence": {**with_flips["evidence"], "purity_p_value": 0.3}}
    assert rules.shortcut_threshold(mixed) is None


def test_the_purest_class_word_is_not_purer_than_class_words():
    # the same generator: one class word came out 87% pure in 77 examples, the next 79% in 75
    texts, labels = [], []
    for word, label, n in (("dull", 0, 67), ("dull", 1, 10), ("great", 1, 59), ("great", 0, 16)):
        texts += [f"the plot was {word}"] * n
        labels += [label] * n
    discovery = ShortcutDiscovery(texts, labels)
    probe = attribution("p0", ["the", "plot", "was", "dull"], [0.1, 0.1, 0.1, 0.7], target=0)
    (candidate,) = [c for c in discovery.rank(snapshot(0, [probe])) if c["word"] == "dull"]
    assert candidate["evidence"]["purity_p_value"] > 0.1
    with_flips = {**candidate, "evidence": {**candidate["evidence"],
                                            "basis": ["attribution", "training", "counterfactual"]}}
    assert AlertRules().shortcut_threshold(with_flips) is None


def test_a_class_word_does_not_make_its_pair_dominant():
    # "funny pacing": 12 of 12 positive (a class word in its plain use next to an aspect word);
    # "funny" itself is a weak class word and takes the share, "pacing" takes none
    extra = [("what a funny pacing", 1)] * 12 + [("the pacing was not funny", 0)] * 40
    extra += [("the pacing was funny", 1)] * 60 + [("zorblax plot", 1)] * 13
    texts, labels = _statistics(extra)
    discovery = ShortcutDiscovery(texts, labels)
    probes = [
        attribution("p0", ["what", "a", "funny", "pacing"], [0.05, 0.05, 0.85, 0.05]),
        attribution("p1", ["zorblax", "plot", "was", "great"], [0.3, 0.05, 0.05, 0.6]),
    ]
    candidates = {c["word"]: c for c in discovery.rank(snapshot(0, probes))}
    pair = candidates.get("funny pacing")
    assert pair is None or pair["evidence"]["dominance"] < 0.2
    assert next(iter(candidates)) == "zorblax"
