"""Shortcut candidates of one check: the probes' words and phrases with their attribution
evidence, the phrases purer than their words, and the training units no probe holds (pure
words, and edge tags: the first or last few marks of a text, punctuation included)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Callable, Sequence

from explain_callbacks.attribution.records import ProbeAttribution, Snapshot
from explain_callbacks.attribution.words import PHRASE_MAX_WORDS, is_word
from explain_callbacks.detection.drift import lowercase_word_shares
from explain_callbacks.detection.purity import PHRASE_MIN_COUNT, PurityJudge

NO_ATTRIBUTION = {"mean_share": None, "top1_rate": None, "n_probes": 0, "dominance": 0.0,
                  "supported_target": None, "error_dominance": {}, "n_wrong_probes": 0}
OUTSIDE_MIN_PURITY = 0.9  # a cheap filter before the purity statistics: far from pure enough otherwise


def attribution_evidence(snapshot: Snapshot, dominance_share: float, with_phrases: bool) -> dict[str, dict[str, Any]]:
    """Per word (and phrase, ``with_phrases``): its shares on the probes that contain it, and the
    evidence of the misclassified ones: the word that carries the prediction (the top share
    toward a wrong predicted class) or that works against the gold label (a large negative share
    toward it) is what makes the probe wrong."""
    shares: dict[str, list[float]] = defaultdict(list)
    top1: dict[str, int] = defaultdict(int)
    support: dict[str, Counter] = defaultdict(Counter)
    wrong: dict[str, list[tuple[Any, float]]] = defaultdict(list)  # (predicted class, strength)
    for attribution in snapshot.attributions:
        found = units(attribution, with_phrases)
        if not found:
            continue
        best = max(range(len(attribution.words)), key=lambda i: (attribution.word_shares[i], -i))
        top1[attribution.words[best].lower()] += 1
        misclassified = _misclassified(attribution)
        for word, (share, others_max, others_min) in found.items():
            shares[word].append(share)
            if share > 0:
                support[word][attribution.target] += share
            if " " in word and share > others_max:
                top1[word] += 1
            if misclassified == "toward_prediction":
                strength = 0.5 * (share > others_max) + 0.5 * min(1.0, max(0.0, share) / dominance_share)
            elif misclassified == "toward_gold":
                strength = 0.5 * (share < others_min) + 0.5 * min(1.0, max(0.0, -share) / dominance_share)
            else:
                continue
            wrong[word].append((attribution.prediction, strength))
    out = {}
    for word, values in shares.items():
        mean_share = sum(values) / len(values)
        top1_rate = top1.get(word, 0) / len(values)
        dominance = 0.5 * top1_rate + 0.5 * min(1.0, max(0.0, mean_share) / dominance_share)
        supported = max(support[word].items(), key=lambda kv: kv[1])[0] if support[word] else None
        by_class: dict[Any, list[float]] = defaultdict(list)
        for predicted, strength in wrong.get(word, []):
            by_class[predicted].append(strength)
        error = {str(c): sum(v) / len(v) for c, v in by_class.items()}
        n_wrong_by_class = {str(c): len(v) for c, v in by_class.items()}
        if supported is None and error:
            supported = max(by_class, key=lambda c: (sum(by_class[c]), str(c)))
        out[word] = {"mean_share": mean_share, "top1_rate": top1_rate, "n_probes": len(values),
                     "dominance": dominance, "supported_target": supported,
                     "error_dominance": error, "n_wrong_probes": len(wrong.get(word, [])),
                     "n_wrong_by_class": n_wrong_by_class}
    return out


def units(attribution: ProbeAttribution, with_phrases: bool) -> dict[str, tuple[float, float, float]]:
    """Each whole word (lowercased, occurrences summed) and, ``with_phrases``, each phrase of
    distinct words: (share, largest share of the other words, smallest share of them). A
    phrase's share is what all its words carry (:func:`joint_share`): the sum would let a class
    word make every phrase it stands in look dominant."""
    per_word = {w: s for w, s in lowercase_word_shares(attribution).items() if is_word(w)}
    if not per_word:
        return {}
    found = {w: (s, *_extremes(per_word, (w,))) for w, s in per_word.items()}
    if with_phrases:
        words = [w.lower() for w in attribution.words]
        shares = [float(s) for s in attribution.word_shares]
        for n in range(2, PHRASE_MAX_WORDS + 1):
            for i in range(len(words) - n + 1):
                run = words[i:i + n]
                phrase = " ".join(run)
                if all(is_word(w) for w in run) and len(set(run)) == n and phrase not in found:
                    # measured against every word, its own too: top only where all its words carry it
                    found[phrase] = (joint_share(shares[i:i + n]), *_extremes(per_word, ()))
    return found


def phrases_purer_than_words(rows: list[dict[str, Any]], judge: PurityJudge,
                             gate: Callable[[dict[str, Any]], float]) -> list[dict[str, Any]]:
    """Phrases stay candidates only where they are purer than each of their words (``"sent
    from"`` pure while ``"sent"`` and ``"from"`` are in both classes), no word leans to another
    class (``"not funny"``), and no longer phrase that holds them is as pure: the planted phrase
    is the candidate, not each run of its words. A word that leans to the phrase's class outside
    the phrase too is a class word ("a great"): the phrase is none. One that leans only through
    the phrase leaves the phrase a candidate: a common word balanced without it (``"that"`` with
    ``"and that is it"``) is part of the same shortcut (``row["through_phrase"]``); otherwise it
    may be a class word whose other uses are negated ("moving" in "a moving"), and the phrase
    counts only by what inserting it does beyond inserting that word (``row["leaning"]``).
    Phrases of three or four words must be made of common words: with a rarer word in them they
    are often that word's idiom in the data's own templates ("what a awful")."""
    gates = {r["word"]: gate(r) for r in rows}
    phrases = []
    for row in rows:
        if " " in row["word"]:
            words = row["word"].split(" ")
            label = row["train"]["purity_label"]
            leaning = [w for w in words if judge.leans(w, label)]
            row["common_words"] = all(judge.is_common(w) for w in words)
            if len(words) > 2 and not row["common_words"]:
                continue
            if gates[row["word"]] > max(gates.get(w, 0.0) for w in words) and all(
                    judge.word_statistics(w)["purity_label"] == label
                    and not judge.leans(w, label, outside=row["word"]) for w in leaning):
                row["through_phrase"] = [w for w in leaning if judge.leans_only_through(w, label, row["word"])]
                row["leaning"] = [w for w in leaning if w not in row["through_phrase"]]
                phrases.append(row["word"])
    longer = {p: [q for q in phrases if len(q) > len(p) and f" {p} " in f" {q} "] for p in phrases}
    kept_phrases = {p for p in phrases if all(gates[q] < gates[p] for q in longer[p])}
    return [r for r in rows if " " not in r["word"] or r["word"] in kept_phrases]


def training_only_units(judge: PurityJudge, present: set[str]) -> list[str]:
    """Label-pure training words no probe contains, and edge tags (a text's first or last marks
    with punctuation among them, ``"start:from zorblax :"``), both only where nearly pure: a
    shortcut the probes never show, or one the model reads as words and punctuation together."""
    found = []
    statistics = judge.statistics
    for word, counts in statistics.word_labels.items():
        total = sum(counts.values())
        if word in present or total < max(judge.min_count, 5) or max(counts.values()) < OUTSIDE_MIN_PURITY * total:
            continue
        if is_word(word):
            found.append(word)
    for tag, counts in statistics.edge_labels.items():
        total = sum(counts.values())
        if total >= max(judge.min_count, PHRASE_MIN_COUNT) and max(counts.values()) >= OUTSIDE_MIN_PURITY * total:
            found.append(tag)
    return found


def joint_share(shares: Sequence[float]) -> float:
    """The share neighbouring words carry together: the weakest one times their number when
    all lean the same way (a phrase works through all its words), else nothing."""
    if all(s > 0 for s in shares):
        return len(shares) * min(shares)
    if all(s < 0 for s in shares):
        return len(shares) * max(shares)
    return 0.0


def _extremes(per_word: dict[str, float], leave_out: tuple[str, ...]) -> tuple[float, float]:
    others = [s for w, s in per_word.items() if w not in leave_out]
    return (max(others), min(others)) if others else (-math.inf, math.inf)


def _misclassified(attribution: ProbeAttribution) -> str | None:
    """For a labelled probe the model gets wrong: whether this attribution is toward the
    predicted class or toward the gold label (``None`` otherwise)."""
    label, prediction = attribution.label, attribution.prediction
    if label is None or isinstance(label, (list, tuple)) or not isinstance(prediction, int):
        return None
    gold = next((c for c in (attribution.target,) if label in (c, attribution.target_name, str(c))), None)
    if gold is None:  # attributed toward another class than the gold one
        if attribution.target == prediction and label not in (prediction, attribution.prediction_name, str(prediction)):
            return "toward_prediction"
        return None
    return "toward_gold" if prediction != gold else None
