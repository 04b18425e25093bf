"""What the training statistics say about a word, phrase or edge tag: its purity above the prior,
whether it is purer than the data's own class words, where it sits in its texts, and which
words are neutral enough to serve as insertion controls."""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import Any, Hashable

from scipy import stats

from explain_callbacks.attribution.words import is_word
from explain_callbacks.detection.evidence import wilson_lower_bound
from explain_callbacks.detection.statistics import TrainingStatistics

PURITY_GATE = (0.5, 0.8)
# One-sided enough for a word in a few dozen examples; genuine words have hundreds.
PURITY_CONFIDENCE = 0.8  # purity above the prior: no shortcut evidence below, full above
PHRASE_MIN_COUNT = 10  # phrases are many: a pure one in a handful of examples is chance
# A word in at least this share of the training examples is a common word (a function word,
# not a class word: "it" is in 18% of real reviews, the class word "funny" in 14% of the
# synthetic ones, "awful" in 8%). A phrase of common words has no class word of its own.
COMMON_WORD_DF = 0.15
CLASS_WORD_EXCESS = 0.25  # a word this far above the prior is a class word: its phrases are none
# Class words are judged purity by purity: words in this many training examples are measured
# well enough to say how pure the genuine class words of this data set are.
REFERENCE_MIN_COUNT = 50
CONTROL_WORDS = 2
CONTROL_MIN_COUNT = 20
CONTROL_MAX_SKEW = 0.05  # a control's label shares differ from the priors by at most this
# A word or phrase sits "at the start" / "at the end" of its texts when it does so in at least
# this share of the examples holding it; the insertion test then puts it there.
FIXED_POSITION_SHARE = 0.5
EDGE_PREFIX = ("start:", "end:")


class PurityJudge:
    """Reads a :class:`~.statistics.TrainingStatistics` for discovery. ``min_count``: units in
    fewer training examples are no candidates; ``rarity_df``: the document frequency from which
    a word counts as common (rarity 0)."""

    def __init__(self, statistics: TrainingStatistics, min_count: int, rarity_df: float):
        self.statistics = statistics
        self.min_count = min_count
        self.rarity_df = rarity_df

    def counts(self, unit: str) -> Counter | None:
        if unit.startswith(EDGE_PREFIX):
            return self.statistics.edge_labels.get(unit) or None
        return self.statistics.counts(unit)

    def word_statistics(self, unit: str) -> dict[str, Any] | None:
        """Training statistics of one word, phrase ``"a b"`` or edge tag ``"start:from x :"``,
        or ``None`` below ``min_count``."""
        return self.of(unit, self.counts(unit))

    def of(self, unit: str, counts: Counter | None, label_counts: Counter | None = None) -> dict[str, Any] | None:
        """``counts`` judged against ``label_counts`` (default: every training example's)."""
        count = sum(counts.values()) if counts else 0
        several = " " in unit
        if count < (max(self.min_count, PHRASE_MIN_COUNT) if several else self.min_count):
            return None
        label_counts = self.statistics.label_counts if label_counts is None else label_counts
        n_examples = sum(label_counts.values())
        label, top = max(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
        prior = label_counts[label] / n_examples
        if several and not unit.startswith(EDGE_PREFIX):  # a phrase is measured above what its words predict
            prior = max(prior, self.expected_phrase_purity(unit, label, prior))
        purity_low = wilson_lower_bound(top, count, PURITY_CONFIDENCE)
        df = count / n_examples
        return {
            "train_count": count,
            "train_purity": top / count,
            "purity_label": label,
            "purity_lower": purity_low,
            "purity_excess": max(0.0, (purity_low - prior) / (1.0 - prior)) if prior < 1.0 else 0.0,
            "rarity": max(0.0, 1.0 - df / self.rarity_df),
            # the share of its class it covers: a planted artefact covers a fixed rate of one class
            "class_coverage": top / label_counts[label] if label_counts[label] else None,
        }

    def expected_phrase_purity(self, phrase: str, label: Hashable, prior: float) -> float:
        """The purity toward ``label`` that the phrase's words give when they are independent
        evidence (naive Bayes: the prior odds times each word's likelihood ratio). Two class
        words side by side ("great lovely") are purer than either, as expected; a planted phrase
        of common words ("sent from") is far purer than its words predict."""
        odds = prior / (1.0 - prior) if prior < 1.0 else math.inf
        expected = odds
        for word in phrase.split(" "):
            counts = self.statistics.counts(word) or Counter()
            total = sum(counts.values())
            word_purity = (counts.get(label, 0) + prior) / (total + 1.0)  # smoothed toward the prior
            word_odds = word_purity / (1.0 - word_purity) if word_purity < 1.0 else math.inf
            expected *= word_odds / odds if odds else 1.0
        return 1.0 if math.isinf(expected) else expected / (1.0 + expected)

    # ------------------------------------------------------------------ the data's class words
    def reference_purities(self) -> list[tuple[float, str, int, int]]:
        """The purest well-measured training words (at least ``REFERENCE_MIN_COUNT`` examples):
        (purity, word, same-label count, count), purest first; the first two are enough to
        compare any word with the purest other one. A word seen with one label only in that
        many examples is no yardstick of a genuine class word (those occur in negations,
        contrasts and mislabelled examples): it is itself suspect, and taking it would let two
        planted words hide each other."""
        found = []
        for word, counts in self.statistics.word_labels.items():
            total = sum(counts.values())
            if total >= REFERENCE_MIN_COUNT and " " not in word and is_word(word):
                top = max(counts.values())
                if top < total:
                    found.append((top / total, word, top, total))
        found.sort(key=lambda r: (-r[0], r[1]))
        return found[:2]

    def reference_excess(self, reference: list[tuple[float, str, int, int]]):
        """For a single word, the purity excess of the purest other well-measured word
        (:meth:`reference_purities`); ``None`` for phrases (measured against what their words
        predict, not against the class words) and without such a word."""
        excess = [(word, (self.word_statistics(word) or {}).get("purity_excess")) for _, word, _, _ in reference]

        def of(word: str) -> float | None:
            others = [e for w, e in excess if w != word]
            return others[0] if others and " " not in word else None
        return of

    @staticmethod
    def purity_p_value(unit: str, train: dict[str, Any] | None, reference: list[tuple[float, str, int, int]]
                       ) -> tuple[float | None, float | None]:
        """(purity of the purest other well-measured word, one-sided Fisher p-value that ``unit``
        is purer than it), ``(None, None)`` without one."""
        others = [(top, total) for _, word, top, total in reference if word != unit]
        if not others or not train:
            return None, None
        top, total = round(train["train_purity"] * train["train_count"]), train["train_count"]
        ref_top, ref_total = others[0]
        return ref_top / ref_total, fisher_greater(top, total, ref_top, ref_total)

    @staticmethod
    def min_purity_p_value(unit: str, train: dict[str, Any] | None, reference: list[tuple[float, str, int, int]]
                           ) -> float | None:
        """The smallest purity p-value ``unit``'s count allows: that of a unit pure in all its examples."""
        others = [(top, total) for _, word, top, total in reference if word != unit]
        if not others or not train:
            return None
        return fisher_greater(train["train_count"], train["train_count"], *others[0])

    # ------------------------------------------------------------------ words of phrases
    def is_common(self, word: str) -> bool:
        counts = self.statistics.counts(word)
        n = self.statistics.n_examples
        return bool(counts) and n > 0 and sum(counts.values()) / n >= COMMON_WORD_DF

    def outside(self, word: str, phrase: str) -> dict[str, Any] | None:
        """The word's statistics in the training examples without ``phrase``, judged against
        those examples' own label shares (a phrase in most of one class leaves few of it)."""
        inside = self.statistics.counts(phrase) or Counter()
        counts = Counter(self.statistics.counts(word) or {})
        counts.subtract(inside)  # both count once per example, and the word is in every phrase's
        label_counts = Counter(self.statistics.label_counts)
        label_counts.subtract(inside)
        return self.of(word, +counts, +label_counts)

    def leans(self, word: str, phrase_label: Any, outside: str | None = None) -> bool:
        """Whether a word of a phrase leans to a class in training: clearly to any, or at all to
        another class than the phrase's (a negation turns it: "not funny"). ``outside``: judge
        the word in the training examples without that phrase (:meth:`outside`)."""
        train = self.word_statistics(word) if outside is None else self.outside(word, outside)
        if train is None:
            return False
        limit = CLASS_WORD_EXCESS if train["purity_label"] == phrase_label else CLASS_WORD_EXCESS / 2.5
        return train["purity_excess"] >= limit

    def leans_only_through(self, word: str, phrase_label: Any, phrase: str) -> bool:
        """Whether a common word that leans to ``phrase_label`` is measured without the phrase
        (enough examples) and leans to no class there: a function word the phrase made lean."""
        return self.is_common(word) and self.outside(word, phrase) is not None and not self.leans(
            word, phrase_label, outside=phrase)

    def is_class_word_idiom(self, unit: str, train: dict[str, Any]) -> bool:
        """Whether an edge tag holds a word that leans to its class but is less pure than the
        tag: a class word's idiom at a sentence end ("end:was charming ."), pure only because the
        data's texts end that way. A tag whose purity one invented word carries ("start:from
        zorblax :", as pure as "zorblax") or made of common words stays a candidate."""
        if not unit.startswith(EDGE_PREFIX):
            return False
        label = train["purity_label"]
        for word in edge_text(unit).split(" "):
            if not is_word(word) or not self.leans(word, label):
                continue
            own = self.word_statistics(word)
            if own is not None and own["train_purity"] < train["train_purity"]:
                return True
        return False

    # ------------------------------------------------------------------ placement and controls
    def position(self, unit: str) -> tuple[str, dict[str, float]]:
        """Where the insertion test puts ``unit``: ``"start"``, ``"end"`` (where it sits in at
        least ``FIXED_POSITION_SHARE`` of its training texts; an edge tag where it was seen) or
        ``"inside"``, with the shares at the start and at the end."""
        if unit.startswith(EDGE_PREFIX):
            side = unit.split(":", 1)[0]
            return side, {"start": float(side == "start"), "end": float(side == "end")}
        shares = self.statistics.position(unit)
        side = max(("start", "end"), key=lambda s: (shares[s], s == "end"))
        return (side if shares[side] >= FIXED_POSITION_SHARE else "inside"), shares

    def control_words(self) -> list[str]:
        """Neutral words to insert for comparison: the most frequent training words whose label
        shares are those of the priors (within ``CONTROL_MAX_SKEW``), such as "the"."""
        n = self.statistics.n_examples
        if not n:
            return []
        priors = {label: count / n for label, count in self.statistics.label_counts.items()}
        found = []
        for word, counts in self.statistics.word_labels.items():
            total = sum(counts.values())
            if total < CONTROL_MIN_COUNT or " " in word or not is_word(word):
                continue
            if all(abs(counts.get(label, 0) / total - prior) <= CONTROL_MAX_SKEW for label, prior in priors.items()):
                found.append((-total, word))
        return [word for _, word in sorted(found)[:CONTROL_WORDS]]


@lru_cache(maxsize=4096)
def fisher_greater(top: int, total: int, ref_top: int, ref_total: int) -> float:
    """One-sided Fisher exact p-value that ``top`` of ``total`` is a larger share than ``ref_top`` of ``ref_total``."""
    return float(stats.fisher_exact([[top, total - top], [ref_top, ref_total - ref_top]],
                                    alternative="greater").pvalue)


def edge_text(unit: str) -> str:
    """The text an edge tag stands for (``"start:from zorblax :"`` -> ``"from zorblax :"``)."""
    return unit.split(":", 1)[1] if unit.startswith(EDGE_PREFIX) else unit
