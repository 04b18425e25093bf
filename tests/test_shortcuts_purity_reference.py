"""What a word's training purity is compared with: the data's well-measured class words.

In real reviews genuine words are often pure in a handful of examples ("unfunny" 19 of 19);
only the comparison with the purest well-measured class word tells them from a planted word.
A word seen with one label only in many examples is itself suspect and is never that yardstick,
so two planted words do not hide each other.
"""

from __future__ import annotations

import pytest
from helpers.attribution_records import attribution, snapshot

from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.shortcuts import ShortcutDiscovery

FULL_BASIS = ["attribution", "training", "counterfactual"]


def _class_words(purity_percent: int, n: int = 200) -> tuple[list[str], list[int]]:
    """``great``/``awful`` as class words ``purity_percent`` pure in ``n`` examples each."""
    texts, labels = [], []
    for i in range(2 * n):
        label = i % 2
        word = ("great" if label else "awful") if (i // 2) % 100 < purity_percent else ("awful" if label else "great")
        texts.append(f"the plot was {word}")
        labels.append(label)
    return texts, labels


def _candidates(texts, labels, probes):
    return {c["word"]: c for c in ShortcutDiscovery(texts, labels).rank(snapshot(0, probes))}


def _with_flips(candidate):
    return {**candidate, "evidence": {**candidate["evidence"], "basis": FULL_BASIS}}


def test_two_planted_words_do_not_hide_each_other():
    texts, labels = _class_words(74)
    texts += ["zorblax the plot"] * 60 + ["qwibble the plot"] * 60
    labels += [1] * 60 + [0] * 60
    probes = [attribution("p0", ["zorblax", "the", "plot"], [0.8, 0.1, 0.1]),
              attribution("p1", ["qwibble", "the", "plot"], [0.8, 0.1, 0.1], target=0)]
    candidates = _candidates(texts, labels, probes)
    rules = AlertRules()
    for word in ("zorblax", "qwibble"):
        evidence = candidates[word]["evidence"]
        # compared with the 74% class words, not with the other planted word (100%: p = 1)
        assert evidence["purity_reference"] < 0.8 and evidence["purity_p_value"] < 1e-6
        assert rules.shortcut_threshold(_with_flips(candidates[word])) == rules.shortcut_min_score_pure


def test_a_rare_pure_class_word_never_alerts_beside_purer_class_words():
    texts, labels = _class_words(92)
    texts += ["an unfunny plot"] * 19
    labels += [0] * 19
    probes = [attribution("p0", ["an", "unfunny", "plot"], [0.05, 0.9, 0.05], target=0)]
    candidate = _candidates(texts, labels, probes)["unfunny"]
    assert candidate["evidence"]["train_purity"] == 1.0 and candidate["evidence"]["purity_p_value"] > 0.05
    strong = {**_with_flips(candidate), "score": 1.0}
    assert AlertRules().shortcut_threshold(strong) is None
    assert AlertRules().evaluate(snapshot(0, probes), [strong]) == []


def test_an_equal_score_goes_to_the_word_purer_than_the_class_words():
    # both gates fully open, the same dominance: only the purity test tells them apart, and the
    # name order alone would put the rarer word first
    texts, labels = _class_words(74)
    texts += ["zorblax the plot"] * 60 + ["abysmal the plot"] * 25
    labels += [1] * 60 + [1] * 25
    probes = [attribution("p0", ["zorblax", "the", "plot"], [0.8, 0.1, 0.1]),
              attribution("p1", ["abysmal", "the", "plot"], [0.8, 0.1, 0.1])]
    ranked = list(_candidates(texts, labels, probes).values())
    assert ranked[0]["score"] == ranked[1]["score"]
    assert [c["word"] for c in ranked[:2]] == ["zorblax", "abysmal"]
    assert ranked[0]["evidence"]["purity_p_value"] < ranked[1]["evidence"]["purity_p_value"]


def test_a_class_word_in_its_plain_use_is_no_phrase():
    # clean data without label noise: "a moving" is 73 of 73 positive, "moving" 130 of 175
    # (outside the pair only 57 of 102: its negative uses are negated); judged outside the
    # pair, "moving" did not lean and "a moving" alerted in a clean benchmark run
    from synthetic_reviews import planted_reviews

    data = planted_reviews(2000, shortcut=None, label_noise=0.0, seed=0)
    discovery = ShortcutDiscovery(data.texts, data.labels)
    assert discovery.statistics.counts("a moving") == {1: 73}
    probe = attribution("p0", ["a", "moving", "film"], [0.3, 0.6, 0.1])
    assert "a moving" not in {c["word"] for c in discovery.rank(snapshot(0, [probe]))}
    # with a model: inserting "a moving" does no more than inserting "moving"
    negatives = [attribution(f"n{i}", ["the", "plot", "was", "dull"], [0.1, 0.1, 0.1, 0.7], target=0,
                             logits=[2.0, -2.0]) for i in range(6)]
    predict = lambda ts: [[0.2, 0.8] if "moving" in t else [0.9, 0.1] for t in ts]  # noqa: E731
    assert "a moving" not in {c["word"] for c in discovery.rank(snapshot(0, [probe, *negatives]), predict)}
    # "moving" is no common word: it may be a class word, so the phrase counts only by what
    # inserting it does beyond inserting "moving", here all of its effect
    predict = lambda ts: [[0.2, 0.8] if "a moving" in t else [0.9, 0.1] for t in ts]  # noqa: E731
    phrase, = discovery.rank(snapshot(0, [probe, *negatives]), predict)
    assert phrase["word"] == "a moving" and phrase["evidence"]["leaning_words"] == ["moving"]
    assert phrase["score"] == pytest.approx(0.7) and "words_leaning_through_phrase" not in phrase["evidence"]
    from explain_callbacks.detection.verdict import effect_sentence

    assert "beyond neutral control words and its own 'moving' inserted alone" in effect_sentence(phrase["evidence"])


def test_a_candidate_that_reaches_its_threshold_leads_one_that_does_not():
    pure_word = {"word": "zorblax", "score": 0.34,
                 "evidence": {"basis": FULL_BASIS, "purity_p_value": 0.02}}
    # a phrase without the comparison with class words never takes the lower threshold
    pair = {"word": "funny pacing", "score": 0.39,
            "evidence": {"basis": FULL_BASIS, "purity_lower": 0.95, "phrase": True}}
    quiet = {"word": "great", "score": 0.2, "evidence": {"basis": FULL_BASIS, "purity_p_value": 0.4}}
    rules = AlertRules()
    assert [rules.meets_shortcut_threshold(c) for c in (pure_word, pair, quiet)] == [True, False, False]
    assert [c["word"] for c in rules.lead_with_alerting([pair, quiet, pure_word])] == ["zorblax", "funny pacing", "great"]


def test_a_word_purer_than_the_class_words_opens_the_gate_from_their_level():
    """Label noise caps the genuine words of the benchmark's reviews below purity 0.8, and with
    them the fixed gate (purity excess 0.5 to 0.8) shut a planted word at purity 0.8 too: it led
    the candidates in 4 of 8 runs with measurable reliance. Opened from the purest class word's
    own excess, it ranks above the class words it outdoes (7 of 8), which stay at 0."""
    from synthetic_reviews import planted_reviews

    data = planted_reviews(2000, shortcut="zorblax", rate=0.2, purity=0.8, label_noise=0.2, seed=2)
    discovery = ShortcutDiscovery(data.texts, data.labels)
    planted, reference = discovery.word_statistics("zorblax"), discovery.word_statistics("brilliant")
    assert planted["train_purity"] == pytest.approx(296 / 382)  # 0.77, as pure as class words get here
    assert reference["purity_excess"] < planted["purity_excess"] < 0.5  # the fixed gate: shut
    probes = [attribution("p0", ["zorblax", "the", "plot"], [0.8, 0.1, 0.1]),
              attribution("p1", ["brilliant", "the", "plot"], [0.8, 0.1, 0.1])]
    ranked = discovery.rank(snapshot(0, probes))
    assert [c["word"] for c in ranked] == ["zorblax"]
    expected = (planted["purity_excess"] - reference["purity_excess"]) / (0.8 - reference["purity_excess"])
    assert ranked[0]["score"] == pytest.approx(expected * ranked[0]["evidence"]["dominance_lower"])
    assert 0.0 < ranked[0]["score"] < AlertRules().shortcut_min_score_pure  # ranked, not alerted
    # where the class words are purer than the fixed gate's low end, that end holds
    texts, labels = _class_words(90)
    for i in range(60):
        texts.append("the plot was zorblax")
        labels.append(1 if i % 5 else 0)
    ranked = ShortcutDiscovery(texts, labels).rank(snapshot(0, [attribution("p0", ["zorblax", "the"], [0.9, 0.1])]))
    assert ranked == []
