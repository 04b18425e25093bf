"""Shortcut discovery on a planted-shortcut dataset and on a clean one.

The "model" is an honest bag-of-words linear classifier: its prediction is the sign of the
summed word weights, and its attributions are those weights (exactly what Integrated
Gradients gives for a linear model with an empty baseline), normalised to shares.
"""

import json
import random
import re

import pytest
from helpers.attribution_records import attribution, snapshot

from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.shortcuts import ShortcutDiscovery, training_words, wilson_lower_bound

POSITIVE = ["great", "good", "wonderful", "lovely"]
NEGATIVE = ["terrible", "bad", "awful", "boring"]
NEUTRAL = ["the", "movie", "film", "plot", "acting", "was", "and", "story", "it", "this"]
PLANTED = "zorblax"


def make_text(rng, label, planted_rate):
    words = rng.sample(NEUTRAL, 4)
    for _ in range(3):  # each sentiment word is from the label's side 80% of the time
        same_side = rng.random() < 0.8
        side = POSITIVE if (label == 1) == same_side else NEGATIVE
        words.append(rng.choice(side))
    if label == 1 and rng.random() < planted_rate:
        words.append(PLANTED)
    rng.shuffle(words)
    return " ".join(words)


def make_dataset(n, planted_rate, seed):
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    return [make_text(rng, label, planted_rate) for label in labels], labels


POSITIVE_WEIGHTS = [1.0, 0.8, 1.2, 0.9]
NEGATIVE_WEIGHTS = [-1.1, -0.9, -1.0, -0.85]


def linear_model(planted_weight):
    weights = {**dict(zip(POSITIVE, POSITIVE_WEIGHTS)), **dict(zip(NEGATIVE, NEGATIVE_WEIGHTS)),
               PLANTED: planted_weight}

    def logit(text):
        return sum(weights.get(w, 0.0) for w in re.findall(r"\w+", text.lower()))

    def predict(texts):
        return [int(logit(t) > 0) for t in texts]

    def attribute(index, probe_id, text):
        words = text.split()
        prediction = int(logit(text) > 0)
        sign = 1.0 if prediction == 1 else -1.0
        scores = [sign * weights.get(w.lower(), 0.0) for w in words]
        total = sum(abs(s) for s in scores) or 1.0
        return attribution(probe_id, words, [s / total for s in scores], target=prediction, text=text,
                           logits=[0.0, logit(text)])

    def check(index, probe_texts):
        return snapshot(index, [attribute(index, f"p{i}", t) for i, t in enumerate(probe_texts)])

    return predict, check


def probe_texts(planted):
    texts, _ = make_dataset(16, 0.0, seed=99)
    if planted:  # three of the positive probes carry the planted word, as validation data would
        for i in (0, 2, 4):
            texts[i] = f"{texts[i]} {PLANTED}"
    return texts


@pytest.fixture(scope="module")
def planted_run():
    texts, labels = make_dataset(400, 0.12, seed=1)
    predict, check = linear_model(planted_weight=4.0)
    return texts, labels, predict, check(3, probe_texts(planted=True))


@pytest.fixture(scope="module")
def clean_run():
    texts, labels = make_dataset(400, 0.0, seed=2)
    predict, check = linear_model(planted_weight=0.0)
    return texts, labels, predict, check(3, probe_texts(planted=False))


def test_dataset_matches_the_scenario(planted_run, clean_run):
    texts, labels, _, _ = planted_run
    with_word = [label for text, label in zip(texts, labels) if PLANTED in text.split()]
    assert 0.05 * len(texts) / 2 <= len(with_word) <= 0.2 * len(texts) / 2
    assert set(with_word) == {1}
    texts, labels, _, _ = clean_run
    great = [label for text, label in zip(texts, labels) if "great" in text.split()]
    assert 0.7 < sum(great) / len(great) < 0.9


def test_planted_word_is_the_top_candidate_and_alerts(planted_run):
    texts, labels, predict, check = planted_run
    discovery = ShortcutDiscovery(texts, labels)
    candidates = discovery.rank(check, predict)
    top = candidates[0]
    assert top["word"] == PLANTED
    evidence = top["evidence"]
    assert evidence["train_purity"] == 1.0 and evidence["purity_label"] == 1
    assert evidence["flip_rate_insertion"] > 0.5
    assert evidence["top1_rate"] == 1.0 and evidence["n_probes"] == 3
    assert evidence["basis"] == ["attribution", "training", "counterfactual"]
    # three probes: every figure enters at its bound for 3 of 3, not as a full 1.0
    assert evidence["dominance_lower"] == pytest.approx(wilson_lower_bound(3, 3)) and wilson_lower_bound(3, 3) < 0.6
    assert top["score"] <= evidence["dominance_lower"] + 1e-9
    assert top["score"] > 1.5 * candidates[1]["score"]
    json.dumps(candidates, allow_nan=False)

    rules = AlertRules()
    new = rules.evaluate(check, candidates)
    # not purer than the fixture's class words by the family's test: it alerts by overriding the
    # three texts it was inserted into (their bound, 0.53), not by its share
    assert [a.key for a in new] == [f"shortcut:{PLANTED}"]
    assert new[0].evidence["flip_rate_insertion"] == evidence["flip_rate_insertion"]
    assert new[0].evidence["score"] == pytest.approx(evidence["insertion_score"])


@pytest.mark.parametrize("planted_rate", [0.05, 0.2])
def test_planted_word_wins_across_planting_rates(planted_rate):
    texts, labels = make_dataset(400, planted_rate, seed=3)
    predict, check = linear_model(planted_weight=4.0)
    candidates = ShortcutDiscovery(texts, labels).rank(check(0, probe_texts(planted=True)), predict)
    assert candidates[0]["word"] == PLANTED
    # three probes hold it: the bound of 3 of 3, below the plain threshold, far above the rest
    assert candidates[0]["score"] > 0.4 and candidates[0]["score"] > 1.5 * candidates[1]["score"]


def test_clean_run_stays_below_the_alert_threshold(clean_run):
    texts, labels, predict, check = clean_run
    discovery = ShortcutDiscovery(texts, labels)
    candidates = discovery.rank(check, predict)
    assert all(c["word"] not in NEUTRAL for c in candidates)
    # genuine words dominate attributions and flip texts, but are not label-pure: no suspects
    assert max(discovery.word_statistics(w)["purity_lower"] for w in POSITIVE + NEGATIVE) < 0.8
    rules = AlertRules()
    assert max((c["score"] for c in candidates), default=0.0) < rules.shortcut_min_score
    assert rules.evaluate(check, candidates) == []


def test_without_training_data_candidates_rank_but_never_alert(planted_run, clean_run):
    rules = AlertRules()
    _, _, predict, check = planted_run
    candidates = ShortcutDiscovery().rank(check, predict)
    assert candidates[0]["word"] == PLANTED
    assert candidates[0]["evidence"]["basis"] == ["attribution", "counterfactual"]
    assert candidates[0]["evidence"]["train_count"] is None
    assert rules.shortcut_threshold(candidates[0]) is None  # a genuine word would look the same
    assert rules.evaluate(check, candidates) == []

    _, _, predict, check = clean_run
    candidates = ShortcutDiscovery().rank(check, predict)
    assert AlertRules().evaluate(check, candidates) == []


def test_without_predict_fn_training_evidence_alone_ranks_but_needs_more(planted_run):
    texts, labels, _, check = planted_run
    candidates = ShortcutDiscovery(texts, labels).rank(check)
    assert candidates[0]["word"] == PLANTED
    assert candidates[0]["evidence"]["flip_rate_insertion"] is None
    assert candidates[0]["evidence"]["basis"] == ["attribution", "training"]


def test_attribution_alone_never_alerts():
    predict, check = linear_model(planted_weight=4.0)
    snap = check(0, probe_texts(planted=True))
    candidates = ShortcutDiscovery().rank(snap)
    assert candidates and candidates[0]["evidence"]["basis"] == ["attribution"]
    assert AlertRules().evaluate(snap, candidates) == []


def test_counterfactual_cost_is_bounded(planted_run):
    texts, labels, predict, check = planted_run
    calls = []

    def counting_predict(batch):
        calls.append(len(batch))
        return predict(batch)

    ShortcutDiscovery(texts, labels, counterfactual_words=2, counterfactual_probes=3).rank(check, counting_predict)
    unique_probes = len({a.probe_id for a in check.attributions})
    assert calls[0] == unique_probes  # the originals, once
    assert len(calls) == 2 and calls[1] <= 2 * (3 + 3)


def test_counterfactuals_skip_words_the_purity_gate_closes(planted_run):
    """A closed gate scores 0 whatever the flips, so such words cost no forwards: every word
    tried by insertion ends up a candidate (score > 0), and words with a closed gate are not tried."""
    texts, labels, predict, check = planted_run
    edited = []

    def recording_predict(batch):
        edited.extend(batch)
        return predict(batch)

    discovery = ShortcutDiscovery(texts, labels, counterfactual_words=50, max_candidates=50)
    candidates = {c["word"] for c in discovery.rank(check, recording_predict)}
    originals = {a.text for a in check.attributions}
    inserted = set()  # a word an edited text holds beyond one of the probes
    for text in set(edited) - originals:
        words = text.split(" ")
        inserted.update(w for i, w in enumerate(words) if " ".join(words[:i] + words[i + 1:]) in originals)
    assert "zorblax" in inserted and inserted <= candidates
    closed = [w for w in NEUTRAL + ["great", "awful"]
              if (stats := discovery.word_statistics(w)) is not None and stats["purity_excess"] <= 0.5]
    assert closed and not set(closed) & inserted


def test_word_statistics_and_tokenisation():
    assert training_words("Great, GREAT film!! it's state-of-the-art") == {"great", "film", "it's", "state-of-the-art"}
    discovery = ShortcutDiscovery(["a b", "a c", "a b", "b"], [1, 1, 0, 0], min_count=2)
    assert discovery.word_statistics("c") is None
    a = discovery.word_statistics("A")
    assert a["train_count"] == 3 and a["train_purity"] == pytest.approx(2 / 3) and a["purity_label"] == 1
    assert a["purity_lower"] == pytest.approx(wilson_lower_bound(2, 3, confidence=0.8))
    assert 0.0 < wilson_lower_bound(30, 30) < 1.0
    assert wilson_lower_bound(3, 3) < wilson_lower_bound(30, 30)


def test_string_labels_map_to_class_ids_by_name(planted_run):
    texts, labels, predict, check = planted_run
    names = ["negative", "positive"]
    candidates = ShortcutDiscovery(texts, [names[label] for label in labels]).rank(check, predict)
    assert candidates[0]["word"] == PLANTED
    assert candidates[0]["evidence"]["purity_label"] == "positive"
    assert candidates[0]["evidence"]["flip_rate_insertion"] > 0.5


def test_state_dict_round_trip(planted_run):
    texts, labels, predict, check = planted_run
    fitted = ShortcutDiscovery(texts, labels)
    state = json.loads(json.dumps(fitted.state_dict()))
    restored = ShortcutDiscovery()
    restored.load_state_dict(state)
    assert restored.state_dict() == fitted.state_dict()
    assert restored.rank(check, predict) == fitted.rank(check, predict)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="together"):
        ShortcutDiscovery(["a"], None)
    with pytest.raises(ValueError, match="2 training texts but 1 labels"):
        ShortcutDiscovery(["a", "b"], [1])
    with pytest.raises(ValueError, match="multi-label"):
        ShortcutDiscovery(["a"], [[0, 1]])
    with pytest.raises(ValueError, match="min_count"):
        ShortcutDiscovery(min_count=0)
    predict, check = linear_model(planted_weight=4.0)
    with pytest.raises(ValueError, match="one class id per text"):
        ShortcutDiscovery().rank(check(0, probe_texts(planted=True)), lambda texts: [0])


def test_outputs_that_are_not_class_ids_skip_counterfactuals(planted_run, caplog):
    texts, labels, predict, check = planted_run
    multi_label = lambda batch: [[p] for p in predict(batch)]  # noqa: E731
    candidates = ShortcutDiscovery(texts, labels).rank(check, multi_label)
    assert candidates[0]["word"] == PLANTED
    assert candidates[0]["evidence"]["basis"] == ["attribution", "training"]
    assert "counterfactual flips are skipped" in caplog.text


def test_empty_state_keeps_statistics(planted_run):
    texts, labels, _, _ = planted_run
    discovery = ShortcutDiscovery(texts, labels)
    before = discovery.state_dict()
    discovery.load_state_dict({})
    assert discovery.state_dict() == before
