"""Evidence that knows its sample size, the false-discovery family, and tests of every singled-out
unit where it sits in the training texts (issue 23). Each test fails on the code before it: one
probe made a full score, 0 of 6 insertion flips did not lower it, a purity p-value of 0.03 was
judged alone among hundreds of tests, a pure word with a small share went untested, insertion
went between words whatever the training texts said, and a tag with punctuation was no candidate."""

from __future__ import annotations

import random

import pytest
from helpers.attribution_records import attribution, snapshot

from explain_callbacks.detection.alerts import AlertRules, HealthConfig, ShortcutThresholds, WatchConfig
from explain_callbacks.detection.evidence import fdr_adjusted, wilson_lower_bound, wilson_upper_bound
from explain_callbacks.detection.shortcuts import ShortcutDiscovery
from explain_callbacks.detection.statistics import TrainingStatistics

FILLERS = [f"w{i}" for i in range(40)]  # balanced words: the rest of the family


def corpus(n: int = 800, seed: int = 0, extra=None) -> tuple[list[str], list[int]]:
    """Balanced labels; balanced filler words; "great" about 88% positive and "awful" about 88%
    negative (the data's class words, in hundreds of examples); ``extra(i, label, words, rng)``
    may plant something."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLERS, 5)
        if rng.random() < 0.5:
            words.append("great" if (rng.random() < 0.88) == (label == 1) else "awful")
        if extra is not None:
            words = extra(i, label, words, rng)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def negatives(n: int, words=("w1", "w2", "w3", "awful")) -> list:
    return [attribution(f"n{i}", list(words), [0.1, 0.1, 0.1, 0.7], target=0, logits=[2.0, -2.0])
            for i in range(n)]


def test_one_probe_never_makes_a_full_score():
    texts, labels = corpus(extra=lambda i, label, words, rng: words + ["zorblax"] if label and i % 5 == 1 else words)
    discovery = ShortcutDiscovery(texts, labels)
    probe = attribution("p0", ["w1", "w2", "zorblax"], [0.1, 0.1, 0.8], target=1, logits=[-2.0, 2.0])
    predict = lambda ts: [1 if "zorblax" in t else 0 for t in ts]  # noqa: E731
    top = next(c for c in discovery.rank(snapshot(0, [probe]), predict) if c["word"] == "zorblax")
    evidence = top["evidence"]
    assert evidence["dominance"] == 1.0 and evidence["flip_rate_removal"] == 1.0  # the point estimates
    assert evidence["n_probes"] == 1 and evidence["n_removal_probes"] == 1
    assert evidence["dominance_lower"] == pytest.approx(wilson_lower_bound(1, 1))
    assert top["score"] <= wilson_lower_bound(1, 1) + 1e-9 < 0.3  # was 1.0


def test_insertion_that_moves_nothing_lowers_the_score():
    """The held-out 'love': removal flipped its one probe, inserting it flipped 0 of 6."""
    texts, labels = corpus(extra=lambda i, label, words, rng: words + ["love"] if label and i % 7 == 1 else words)
    discovery = ShortcutDiscovery(texts, labels)
    probe = attribution("p0", ["w1", "w2", "love"], [0.1, 0.1, 0.8], target=1, logits=[-2.0, 2.0])
    genuine = lambda ts: [1 if t == "w1 w2 love" else 0 for t in ts]  # noqa: E731  only its own probe
    love = next(c for c in discovery.rank(snapshot(0, [probe, *negatives(12)]), genuine) if c["word"] == "love")
    evidence = love["evidence"]
    assert evidence["flip_rate_insertion"] == 0.0 and evidence["n_insertion_probes"] == 6
    assert evidence["flip_rate_insertion_upper"] == pytest.approx(wilson_upper_bound(0, 6))
    assert love["score"] <= wilson_upper_bound(0, 6) + 1e-9
    assert AlertRules().evaluate(snapshot(0, [probe]), [love]) == []


def test_purity_is_judged_in_the_family_of_everything_the_check_tests():
    """29 of 29 against a class word 88% pure is p ~ 0.02 alone; among the check's 40-odd units
    its Benjamini-Hochberg value is far above 0.05, and the pure-word threshold does not apply."""
    texts, labels = corpus(extra=lambda i, label, words, rng: words + ["love"] if label and i % 7 == 1 else words)
    discovery = ShortcutDiscovery(texts, labels)
    probes = [attribution("p0", FILLERS[:20] + ["love"], [0.01] * 20 + [0.8], target=1, logits=[-2.0, 2.0]),
              attribution("p1", FILLERS[20:], [0.05] * 20, target=1, logits=[-2.0, 2.0])]
    love = next(c for c in discovery.rank(snapshot(0, probes)) if c["word"] == "love")
    evidence = love["evidence"]
    assert evidence["purity_p_value"] < 0.05 < evidence["purity_q_value"]
    assert evidence["fdr_family_size"] >= 40 and evidence["fdr_level"] == 0.05
    assert discovery.last_family_size == evidence["fdr_family_size"]
    with_flips = {**love, "evidence": {**evidence, "basis": ["attribution", "training", "counterfactual"]}}
    assert AlertRules().shortcut_threshold(with_flips) is None  # was the pure threshold, 0.15


def test_fdr_adjusted_is_benjamini_hochberg():
    assert fdr_adjusted([0.01, 0.04, 0.03, 0.9]) == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.9])
    assert fdr_adjusted([]) == []


def _topic_words(i, label, words, rng):
    """Six genuine topic words, each in every 8th example of its class; "zorblax" in a third of class 0."""
    topic = ["cup", "match", "goal", "league", "coach", "squad"] if label == 0 else []
    if topic:
        words = words + [topic[(i // 2) % 6]]
    if label == 0 and i % 3 == 0:
        words = words + ["zorblax"]
    return words


def test_a_singled_out_word_is_tested_whatever_its_share():
    """The held-out topic run: the tag's word was the purest and never tested, while as-pure genuine
    topic words took the counterfactual slots by their attribution share."""
    texts, labels = corpus(1200, extra=_topic_words)
    discovery = ShortcutDiscovery(texts, labels, counterfactual_words=2)
    topic = ["cup", "match", "goal", "league", "coach", "squad"]
    probes = [attribution(f"t{i}", ["w1", word, "zorblax"], [0.1, 0.85, 0.05], target=0, prediction=0,
                          logits=[2.0, -2.0]) for i, word in enumerate(topic)]
    probes += [attribution(f"p{i}", ["w4", "w5", "great"], [0.1, 0.1, 0.8], target=1, logits=[-2.0, 2.0])
               for i in range(12)]
    predict = lambda ts: [0 if "zorblax" in t else (0 if any(w in t.split() for w in topic) else 1)  # noqa: E731
                          for t in ts]
    ranked = discovery.rank(snapshot(0, probes), predict)
    zorblax = next(c for c in ranked if c["word"] == "zorblax")["evidence"]
    assert zorblax["purity_q_value"] <= 0.05 and zorblax["singled_out"]
    assert zorblax["n_insertion_probes"] > 0 and zorblax["flip_rate_insertion"] == 1.0
    assert discovery.last_rank_forwards > 0


def test_insertion_goes_where_the_unit_sits_in_training():
    """A model that reads a source word only in front of the text: inserting it between words
    moves nothing, inserting it in front (where every training text has it) flips every probe."""
    texts, labels = corpus(extra=lambda i, label, words, rng: ["zorblax"] + words if label == 0 and i % 4 == 0
                           else words)
    discovery = ShortcutDiscovery(texts, labels)
    assert discovery.statistics.position("zorblax") == {"start": 1.0, "end": 0.0}
    probe = attribution("n0", ["zorblax", "w1", "w2"], [0.5, 0.25, 0.25], target=0, logits=[2.0, -2.0])
    positives = [attribution(f"p{i}", ["w3", "w4", "great"], [0.1, 0.1, 0.8], target=1, logits=[-2.0, 2.0])
                 for i in range(16)]
    in_front = lambda ts: [0 if t.startswith("zorblax") else 1 for t in ts]  # noqa: E731
    zorblax = next(c for c in discovery.rank(snapshot(0, [probe, *positives]), in_front) if c["word"] == "zorblax")
    assert zorblax["evidence"]["insertion_position"] == "start"
    assert zorblax["evidence"]["flip_rate_insertion"] == 1.0 and zorblax["evidence"]["n_insertion_probes"] == 8


def test_a_tag_of_words_and_punctuation_is_a_candidate():
    """"From zorblax :" in front of a third of class 0, read by the model as a whole; no probe holds it."""
    texts, labels = corpus(extra=lambda i, label, words, rng: ["From", "zorblax", ":"] + words
                           if label == 0 and i % 3 == 0 else words)
    texts = [t.replace("zorblax :", "zorblax:") for t in texts]
    discovery = ShortcutDiscovery(texts, labels)
    assert discovery.word_statistics("start:from zorblax :")["train_purity"] == 1.0
    positives = [attribution(f"p{i}", ["w3", "w4", "great"], [0.1, 0.1, 0.8], target=1, logits=[-2.0, 2.0])
                 for i in range(16)]
    tagged = lambda ts: [0 if t.lower().startswith("from zorblax :") else 1 for t in ts]  # noqa: E731
    ranked = discovery.rank(snapshot(0, positives), tagged)
    tag = next(c for c in ranked if c["word"] == "start:from zorblax :")
    assert tag["evidence"]["edge_tag"] and tag["evidence"]["outside_probes"]
    assert tag["evidence"]["insertion_position"] == "start" and tag["evidence"]["flip_rate_insertion"] == 1.0
    assert AlertRules().evaluate(snapshot(0, positives), ranked)  # 8 of 8 flips: a warning


def test_every_candidate_of_a_check_shares_one_batch():
    texts, labels = corpus(1200, extra=_topic_words)
    discovery = ShortcutDiscovery(texts, labels)
    probes = [attribution(f"t{i}", ["w1", "cup", "zorblax"], [0.1, 0.8, 0.1], target=0, logits=[2.0, -2.0])
              for i in range(4)]
    probes += [attribution(f"p{i}", ["w4", "w5", "great"], [0.1, 0.1, 0.8], target=1, logits=[-2.0, 2.0])
               for i in range(8)]
    calls = []

    def predict(ts):
        calls.append(len(ts))
        return [0 if "zorblax" in t or "cup" in t else 1 for t in ts]

    discovery.rank(snapshot(0, probes), predict)
    assert len(calls) == 2  # the probes themselves, then every candidate's edits in one batch
    assert discovery.last_rank_forwards == sum(calls)


def test_statistics_keep_positions_and_edge_tags_through_a_checkpoint():
    statistics = TrainingStatistics(phrases={"from zorblax"})
    statistics.observe(texts=["From zorblax: the cup final.", "a great film, via zorblax."], labels=[0, 1],
                       distinct=False)
    assert statistics.position("from zorblax") == {"start": 1.0, "end": 0.0}
    assert statistics.edge_labels["start:from zorblax :"][0] == 1
    assert statistics.edge_labels["end:via zorblax ."][1] == 1
    restored = TrainingStatistics()
    restored.load_state_dict(statistics.state_dict())
    assert restored.state_dict() == statistics.state_dict()


def test_alert_rules_take_config_objects_and_the_flat_keywords_alike():
    flat = AlertRules(watch_top_k=3, shortcut_min_score=0.6, pure_max_p=0.01, health_min_probes=4)
    grouped = AlertRules(watch=WatchConfig(top_k=3), shortcut=ShortcutThresholds(min_score=0.6, pure_max_p=0.01),
                         health=HealthConfig(min_probes=4))
    for rules in (flat, grouped):
        assert (rules.watch_top_k, rules.shortcut_min_score, rules.pure_max_p, rules.health_min_probes) == (
            3, 0.6, 0.01, 4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'watch_topk'"):
        AlertRules(watch_topk=3)
    with pytest.raises(ValueError, match="shortcut_min_score_pure"):
        ShortcutThresholds(min_score_pure=0.7)
    with pytest.raises(ValueError, match="watch_top_k"):
        AlertRules(watch_top_k=0)


def test_units_whose_count_cannot_reach_significance_leave_the_family():
    """Tarone's rule: of tests whose best possible p-values are 1e-6, 1e-4, 0.02 and 0.3 (three
    examples), only those that can reach 0.05 / K for the smallest such K are the family."""
    from explain_callbacks.detection.evidence import testable

    assert testable([1e-6, 1e-4, 0.02, 0.3]) == [True, True, False, False]
    assert testable([0.3, 0.4]) == [False, False]
    assert testable([1e-6] * 5) == [True] * 5


def test_an_edge_tag_that_is_a_class_words_idiom_is_no_candidate():
    """Reviews that end "... was great ." are purer than "great" alone only because the data's
    sentences end that way: no tag. A tag whose purity its invented word carries stays one."""
    texts, labels = corpus(extra=lambda i, label, words, rng: words + ["was", "great", "."]
                           if label == 1 and i % 3 == 1 else words)
    discovery = ShortcutDiscovery(texts, labels)
    tag = "end:was great ."
    assert discovery.word_statistics(tag)["train_purity"] > discovery.word_statistics("great")["train_purity"]
    assert discovery.judge.is_class_word_idiom(tag, discovery.word_statistics(tag))
    texts, labels = corpus(extra=lambda i, label, words, rng: ["From", "zorblax", ":"] + words
                           if label == 0 and i % 3 == 0 else words)
    discovery = ShortcutDiscovery(texts, labels)
    tag = "start:from zorblax :"
    assert not discovery.judge.is_class_word_idiom(tag, discovery.word_statistics(tag))


def test_the_verdict_says_what_the_family_made_of_the_purity_test():
    from explain_callbacks.detection.verdict import training_sentence

    evidence = {"train_count": 29, "train_purity": 1.0, "purity_label": 1, "purity_reference": 0.864,
                "purity_p_value": 0.034, "purity_q_value": 0.61, "fdr_family_size": 412}
    text = training_sentence(evidence, ["negative", "positive"])
    assert "(29 of 29)" in text and "no purer than the purest well-measured class word" in text
    assert "0.61 after the false-discovery control over the 412 units the check judged" in text
