"""Discovered shortcut candidates: words the model may lean on, found without a watch list.

A shortcut word has three signatures, and genuine class words share only the first:

1. *Attribution dominance*: on the probes that contain it, it takes a large share and is
   often the top word. Genuine sentiment words ("great") do this too, so it only scales
   the other evidence.
2. *Training-data purity*: nearly every training example that contains it has the same label
   (a planted "zorblax" 100%, "great" about 80%). Purity is judged by the lower end of its
   80% Wilson interval, so three pure examples do not look like thirty, and is measured above
   that label's prior.
3. *Counterfactual flips*: inserting it into probes the model confidently puts in another
   class flips them to its label (a shortcut overrides the rest of the text; a real word
   only tips borderline texts, which is why the insertion probes are the most confident
   half, by logit margin, of those predicted otherwise), and removing it from probes of its
   label changes their prediction. Flips are coarse: early on a shortcut moves the model's
   probabilities without flipping a confident text, so the *insertion effect* measures that:
   the mean rise of the probability of the word's label when it is inserted into every probe
   predicted otherwise (up to ``2 x counterfactual_probes``), minus the rise when neutral control
   words (frequent training words as common in every class as the priors, such as "the") are
   inserted at the same place. It counts where a one-sided paired t-test calls it significant
   (``EFFECT_MAX_P``); it needs ``predict_fn`` to return class probabilities.

Words are what :mod:`.words` calls a word, in training texts and attributions alike
(``don't`` and ``state-of-the-art`` are one word; input ids are decoded back to text first);
a word counts once per training example, attributed words are lowercased, and only whole
words are candidates, so punctuation and special tokens never are. The training statistics
(:class:`~.statistics.TrainingStatistics`) are the monitor's, filled by the integrations from
what the framework already holds; ``training_texts`` remain for custom set-ups.

Misclassified probes are evidence too: on a labelled probe the model gets wrong, the word that
takes the top share toward the wrong prediction, or a large negative share toward the gold
label, is what makes the probe wrong. That counts as reliance on the predicted class
(``wrong_prediction_dominance``), and such words get their counterfactual flips tested like
any other candidate; the purity gate still decides, so a good class word on a probe whose
label is hard stays quiet.

Phrases, runs of 2 to ``PHRASE_MAX_WORDS`` neighbouring words, are candidates too (with
training data) when they are purer than their words together predict (naive Bayes from each
word's purity): ``"sent from my iphone"`` in one class while each of its words is in both, not
``"great lovely"``. A phrase inside a longer one that is at least as pure gives way to it (the
planted "and that is it", not its "and that"). A phrase's share is the part all its words carry
(the smallest share times the number of words, when all lean the same way), so a class word
next to an aspect word ("funny pacing") does not dominate as a phrase. Label-pure
training words that no probe contains are tested by insertion alone (``outside_probes``).

Score (0..1) = purity gate x reliance. The gate rises from 0 to 1 as the purity above the
prior (its Wilson lower end) goes from 0.5 to 0.8: genuine class words appear in the other class
too (negation, contrast) and stay below it, a planted word does not. Where the data's purest
well-measured class word stays below 0.5 (label noise), a single word's gate rises from that
word's level instead, so a word purer than every class word is ranked above them. Reliance is the strongest
of attribution dominance, wrong-prediction dominance and the flip rates (a shortcut next to strong class words may take
little attribution share yet flip texts, or the reverse). Flips and dominance alone
never make a shortcut: inserting "awful" into a review flips it for a good reason. Without
training data the gate is a flat 0.5, so candidates are ranked but
:class:`~.alerts.AlertRules` raises no shortcut alert. Each candidate's ``evidence["basis"]``
lists what was present ("attribution", "training", "counterfactual").

``evidence["purity_p_value"]`` says whether the word is purer than this data set's genuine
class words, however few its examples: a one-sided Fisher exact test of its same-label count
against that of the purest other well-measured word (``purity_reference``: the purest word in
at least ``REFERENCE_MIN_COUNT`` examples), so both counts' uncertainty is in it. Thirteen of
thirteen against a class word 74% pure in 187 examples: p = 0.02; a class word 87% pure in 77
against one 79% pure in 75 (the same generator): p = 0.12.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter, defaultdict
from typing import Any, Callable, Hashable, Sequence

from scipy import stats

from explain_callbacks.attribution.records import ProbeAttribution, Snapshot
from explain_callbacks.attribution.validation import positive_int, versioned_state
from explain_callbacks.attribution.words import PHRASE_MAX_WORDS, is_word, text_words
from explain_callbacks.detection.alerts import json_safe, word_pattern
from explain_callbacks.detection.drift import lowercase_word_shares
from explain_callbacks.detection.statistics import TrainingStatistics, as_label

logger = logging.getLogger(__name__)

PredictFn = Callable[[list[str]], Sequence[Any]]  # class ids, or class probabilities per text

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
# The insertion effect: control words (frequent, as common in every class as the prior) inserted
# at the same place show what inserting any word does; the effect counts where a one-sided
# paired t-test over the probes finds it larger at this level.
CONTROL_WORDS = 2
CONTROL_MIN_COUNT = 20
CONTROL_MAX_SKEW = 0.05  # a control's label shares differ from the priors by at most this
EFFECT_MAX_P = 0.05
EFFECT_MIN_PROBES = 4


def training_words(text: str) -> set[str]:
    """The distinct lowercase words of one training text (as :mod:`.words` defines a word)."""
    return set(text_words(text))


def wilson_lower_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Lower end of the Wilson score interval for a proportion."""
    if trials <= 0:
        return 0.0
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low)


def _as_label(value: Any) -> Hashable:
    try:
        return as_label(value)
    except ValueError as err:
        raise ValueError(f"ShortcutDiscovery: {err}") from None


class ShortcutDiscovery:
    """Ranks probe words by how much they look like a shortcut the model learned.

    ``statistics``: the :class:`~.statistics.TrainingStatistics` to read (the monitor's, which
    the integrations fill); or ``training_texts`` / ``training_labels``: the training data or a
    sample of it (both or neither; above ``max_examples`` an even, hash-chosen sample is kept).
    Without statistics only attribution and counterfactual evidence count, and no alert fires.
    ``min_count``: words in fewer training examples are not candidates (too little evidence).
    ``rarity_df``: document frequency at which a word counts as common (rarity 0); below it
    rarity rises linearly to 1. ``dominance_share``: a mean share that counts as full
    dominance. Counterfactuals run on the top ``counterfactual_words`` candidates by the
    other evidence, on at most ``counterfactual_probes`` probes each per direction.
    """

    def __init__(
        self,
        training_texts: Sequence[str] | None = None,
        training_labels: Sequence[Any] | None = None,
        min_count: int = 3,
        max_candidates: int = 20,
        counterfactual_words: int = 5,
        counterfactual_probes: int = 8,
        rarity_df: float = 0.3,
        dominance_share: float = 0.5,
        max_examples: int = 50_000,
        seed: int = 0,
        statistics: TrainingStatistics | None = None,
    ):
        for name, value in (("min_count", min_count), ("max_candidates", max_candidates),
                            ("counterfactual_probes", counterfactual_probes), ("max_examples", max_examples)):
            positive_int(value, name, "ShortcutDiscovery")
        positive_int(counterfactual_words, "counterfactual_words", "ShortcutDiscovery", minimum=0)
        for name, value in (("rarity_df", rarity_df), ("dominance_share", dominance_share)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise ValueError(f"ShortcutDiscovery: {name} must be a number in (0, 1], got {value!r}.")
        if (training_texts is None) != (training_labels is None):
            raise ValueError(
                "ShortcutDiscovery: give training_texts and training_labels together (or neither); "
                "purity needs the label of every text."
            )
        self.min_count = min_count
        self.max_candidates = max_candidates
        self.counterfactual_words = counterfactual_words
        self.counterfactual_probes = counterfactual_probes
        self.rarity_df = float(rarity_df)
        self.dominance_share = float(dominance_share)
        self.last_rank_forwards = 0
        self.statistics = statistics if statistics is not None else TrainingStatistics(max_examples, phrases=None, seed=seed)
        if training_texts is not None:
            fit_texts(self.statistics, list(training_texts), list(training_labels), "ShortcutDiscovery")

    @property
    def has_training_data(self) -> bool:
        return self.statistics.has_data

    def word_statistics(self, word: str) -> dict[str, Any] | None:
        """Training statistics of one word (or phrase ``"a b"``), or ``None`` if it is below
        ``min_count``."""
        return self._statistics_of(word, self.statistics.counts(word))

    def _statistics_of(self, word: str, counts: Counter | None, label_counts: Counter | None = None
                       ) -> dict[str, Any] | None:
        """``counts`` judged against ``label_counts`` (default: every training example's)."""
        count = sum(counts.values()) if counts else 0
        if count < (max(self.min_count, PHRASE_MIN_COUNT) if " " in word else self.min_count):
            return None
        label_counts = self.statistics.label_counts if label_counts is None else label_counts
        n_examples = sum(label_counts.values())
        label, top = max(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
        prior = label_counts[label] / n_examples
        if " " in word:  # a phrase is measured above what its words predict together
            prior = max(prior, self._expected_phrase_purity(word, label, prior))
        purity_low = wilson_lower_bound(top, count, PURITY_CONFIDENCE)
        df = count / n_examples
        return {
            "train_count": count,
            "train_purity": top / count,
            "purity_label": label,
            "purity_lower": purity_low,
            "purity_excess": max(0.0, (purity_low - prior) / (1.0 - prior)) if prior < 1.0 else 0.0,
            "rarity": max(0.0, 1.0 - df / self.rarity_df),
        }

    def _expected_phrase_purity(self, phrase: str, label: Hashable, prior: float) -> float:
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

    # ----------------------------------------------------------------------- ranking

    def rank(self, snapshot: Snapshot, predict_fn: PredictFn | None = None) -> list[dict[str, Any]]:
        """Ranked shortcut candidates of one check, highest score first.

        ``predict_fn(texts)`` runs the model for the counterfactuals and returns class ids, or
        class probabilities per text (then the insertion effect is measured too); without it
        they are skipped (``flip_rate_*`` are ``None``). Probes with a ``text_pair`` are not
        edited, since ``predict_fn`` takes single texts.
        """
        per_word = self.attribution_evidence(snapshot)
        forwards: dict[str, Any] = {}  # the probes' own predictions and the controls', shared by every test
        reference = self._reference_purities() if self.has_training_data else []
        reference_excess = self._reference_excess(reference)
        rows = []
        for word, evidence in per_word.items():
            basis = ["attribution"]
            train = None
            if self.has_training_data:
                train = self.word_statistics(word)
                if train is None:
                    continue  # (nearly) absent from training data: cannot be a learned shortcut
                basis.append("training")
            elif " " in word:
                continue  # a phrase is a candidate only for being purer than its words
            label = self._class_id(train["purity_label"], snapshot) if train else evidence["supported_target"]
            rows.append({"word": word, "attribution": evidence, "train": train, "label": label,
                         "basis": basis, "flips": None, "reference_excess": reference_excess(word)})
        rows = self._phrases_purer_than_words(rows)
        for row in rows:
            row["score"] = self._score(row)
        if predict_fn is not None and self.counterfactual_words:
            # the most promising by the evidence so far (dominance alone without training data)
            # (a closed purity gate scores 0 whatever the flips: those words are not worth the forwards)
            by_promise = sorted(rows, key=lambda r: (-r["score"], -self._reliance(r, False), r["word"]))
            tested = [r for r in by_promise if self._reliance(r, False) > 0 and self._gate(r) > 0]
            tested = tested[: self.counterfactual_words]
            # a phrase purer than its words is rare, strong training evidence, but its share is
            # spread over its words: it gets its own slots, whatever its attribution
            chosen = {id(r) for r in tested}
            phrases = sorted((r for r in rows if " " in r["word"] and self._gate(r) > 0 and id(r) not in chosen),
                             key=lambda r: (-self._gate(r), -r["train"]["train_count"], r["word"]))
            self._test(tested + phrases[: self.counterfactual_words], snapshot, predict_fn, forwards)
        if predict_fn is not None and self.counterfactual_words and self.has_training_data:
            rows += self._outside_the_probes(snapshot, set(per_word), predict_fn, forwards, reference_excess)
        self.last_rank_forwards = forwards.get("n", 0)  # texts run through predict_fn (for benchmarks)
        rows = sorted((r for r in rows if r["score"] > 0), key=lambda r: -r["score"])
        if len(rows) > self.max_candidates:  # the kept ones and those tied with the last kept
            rows = [r for r in rows if r["score"] >= rows[self.max_candidates - 1]["score"]]
        candidates = [self._candidate(r, reference) for r in rows]
        # an equal score goes to the word that is purer than the data's class words
        candidates.sort(key=lambda c: (-c["score"], _or_one(c["evidence"].get("purity_p_value")), c["word"]))
        return candidates[: self.max_candidates]

    def _outside_the_probes(self, snapshot: Snapshot, present: set[str], predict_fn: PredictFn,
                            forwards: dict[str, Any], reference_excess: Callable[[str], float | None]
                            ) -> list[dict[str, Any]]:
        """The most label-pure training words that no probe contains, tested by inserting them
        into probes the model confidently puts in another class: a shortcut the probes never
        show can still flip them. Only that evidence backs them (basis without "attribution")."""
        rows = []
        for word, counts in self.statistics.word_labels.items():
            total = sum(counts.values())
            if word in present or total < max(self.min_count, 5) or max(counts.values()) < 0.9 * total:
                continue  # cheap filter first: far from pure enough to open the gate
            if not is_word(word):
                continue
            train = self.word_statistics(word)
            label = self._class_id(train["purity_label"], snapshot) if train else None
            row = {"word": word, "attribution": dict(_NO_ATTRIBUTION), "train": train, "label": label,
                   "basis": ["training"], "flips": None, "outside": True,
                   "reference_excess": reference_excess(word)}
            if label is not None and self._gate(row) > 0:
                rows.append(row)
        rows.sort(key=lambda r: (-self._gate(r), -r["train"]["purity_lower"], -r["train"]["train_count"], r["word"]))
        rows = rows[: self.counterfactual_words]
        self._test(rows, snapshot, predict_fn, forwards)
        return rows

    def _test(self, rows: list[dict[str, Any]], snapshot: Snapshot, predict_fn: PredictFn,
              forwards: dict[str, Any]) -> None:
        """Run the counterfactuals of ``rows`` and score them with what they found."""
        self._counterfactuals(rows, snapshot, predict_fn, forwards)
        for row in rows:
            if row["flips"] is not None:
                row["basis"].append("counterfactual")
            row["score"] = self._score(row)

    def _phrases_purer_than_words(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Phrases stay candidates only where they are purer than each of their words (``"sent
        from"`` pure while ``"sent"`` and ``"from"`` are in both classes), no word leans to
        another class (``"not funny"``: a negation is that pure genuinely), and no longer phrase
        that holds them is as pure: the planted phrase is the candidate, not each run of its
        words. A word that leans to the phrase's own class may be a class word in its plain use
        ("funny pacing", "a moving") or lean only because the phrase was planted (its common
        words). One that leans outside the phrase too is a class word ("a great"): the phrase is
        none. One that leans only through the phrase ("that" with "and that is it", "moving"
        with "a moving") leaves the phrase a candidate. If it is a common word, balanced in the
        many examples without the phrase ("that": 47% positive there, the prior 50%), its lean is
        the phrase's own doing, and the model's response to it alone part of the same shortcut
        (``row["through_phrase"]``): the phrase is judged like any candidate. Otherwise it may be
        a class word whose other uses are negated or too few to tell ("moving" in "a moving",
        "dull" in "a dull"), and the phrase counts only by what inserting it does beyond
        inserting that word (``row["leaning"]``, :meth:`_reliance`). Phrases of three
        or four words must be made of common words (``COMMON_WORD_DF``): with a rarer word in
        them they are often that word's idiom in the data's own templates ("what a awful", 23
        of 23 negative in synthetic reviews where "awful" is 62%)."""
        gates = {r["word"]: self._gate(r) for r in rows}
        phrases = []
        for row in rows:
            if " " in row["word"]:
                words = row["word"].split(" ")
                label = row["train"]["purity_label"]
                leaning = [w for w in words if self._leans(w, label)]
                row["common_words"] = all(self._is_common(w) for w in words)
                if len(words) > 2 and not row["common_words"]:
                    continue  # a rarer word's idiom ("what a awful"): the word or a pair speaks for it
                if gates[row["word"]] > max(gates.get(w, 0.0) for w in words) and all(
                        self.word_statistics(w)["purity_label"] == label
                        and not self._leans(w, label, outside=row["word"]) for w in leaning):
                    row["through_phrase"] = [w for w in leaning if self._leans_only_through(w, label, row["word"])]
                    row["leaning"] = [w for w in leaning if w not in row["through_phrase"]]
                    phrases.append(row["word"])
        longer = {p: [q for q in phrases if len(q) > len(p) and f" {p} " in f" {q} "] for p in phrases}
        kept_phrases = {p for p in phrases if all(gates[q] < gates[p] for q in longer[p])}
        return [r for r in rows if " " not in r["word"] or r["word"] in kept_phrases]

    def _is_common(self, word: str) -> bool:
        counts = self.statistics.counts(word)
        n = self.statistics.n_examples
        return bool(counts) and n > 0 and sum(counts.values()) / n >= COMMON_WORD_DF

    def _leans_only_through(self, word: str, phrase_label: Any, phrase: str) -> bool:
        """Whether a common word that leans to ``phrase_label`` is measured without the phrase
        (enough examples) and leans to no class there: a function word the phrase made lean."""
        return self._is_common(word) and self._outside(word, phrase) is not None and not self._leans(
            word, phrase_label, outside=phrase)

    def _outside(self, word: str, phrase: str) -> dict[str, Any] | None:
        """The word's statistics in the training examples without ``phrase``, judged against
        those examples' own label shares (a phrase in most of one class leaves few of it)."""
        inside = self.statistics.counts(phrase) or Counter()
        counts = Counter(self.statistics.counts(word) or {})
        counts.subtract(inside)  # both count once per example, and the word is in every phrase's
        label_counts = Counter(self.statistics.label_counts)
        label_counts.subtract(inside)
        return self._statistics_of(word, +counts, +label_counts)

    def _leans(self, word: str, phrase_label: Any, outside: str | None = None) -> bool:
        """Whether a word of a phrase leans to a class in training: clearly to any, or at all to
        another class than the phrase's (a negation turns it: "not funny"). Measured overall,
        phrase included: outside "a moving" the word "moving" is only 56% positive in the
        benchmark's clean data (its negative uses are negated), so "a moving" looks purer than
        its words although it is a class word in its plain use. A planted phrase of common words
        can make its own words lean too ("that" 66% positive with "and that is it" in 20% of the
        positive reviews, 47% without): a common word balanced without the phrase
        (:meth:`_leans_only_through`) or the model's response tells the two apart.
        ``outside``: judge the word in the training examples without that phrase
        (:meth:`_outside`)."""
        train = self.word_statistics(word) if outside is None else self._outside(word, outside)
        if train is None:
            return False
        limit = CLASS_WORD_EXCESS if train["purity_label"] == phrase_label else CLASS_WORD_EXCESS / 2.5
        return train["purity_excess"] >= limit

    def attribution_evidence(self, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
        """Per word (and phrase, with training data): its shares on the probes that
        contain it, and the evidence of the misclassified ones: the word that carries the
        prediction (the top share toward a wrong predicted class) or that works against the gold
        label (a large negative share toward it) is what makes the probe wrong. Every probe word
        is here, whatever its purity gate; :meth:`rank` keeps the candidates."""
        shares: dict[str, list[float]] = defaultdict(list)
        top1: dict[str, int] = defaultdict(int)
        support: dict[str, Counter] = defaultdict(Counter)
        wrong: dict[str, list[tuple[Any, float]]] = defaultdict(list)  # (predicted class, strength)
        for attribution in snapshot.attributions:
            units = self._units(attribution)
            if not units:
                continue
            best = max(range(len(attribution.words)), key=lambda i: (attribution.word_shares[i], -i))
            top1[attribution.words[best].lower()] += 1
            misclassified = _misclassified(attribution)
            for word, (share, others_max, others_min) in units.items():
                shares[word].append(share)
                if share > 0:
                    support[word][attribution.target] += share
                if " " in word and share > others_max:
                    top1[word] += 1
                if misclassified == "toward_prediction":
                    strength = 0.5 * (share > others_max) + 0.5 * min(1.0, max(0.0, share) / self.dominance_share)
                elif misclassified == "toward_gold":
                    strength = 0.5 * (share < others_min) + 0.5 * min(1.0, max(0.0, -share) / self.dominance_share)
                else:
                    continue
                wrong[word].append((attribution.prediction, strength))
        out = {}
        for word, values in shares.items():
            mean_share = sum(values) / len(values)
            top1_rate = top1.get(word, 0) / len(values)
            dominance = 0.5 * top1_rate + 0.5 * min(1.0, max(0.0, mean_share) / self.dominance_share)
            supported = max(support[word].items(), key=lambda kv: kv[1])[0] if support[word] else None
            by_class: dict[Any, list[float]] = defaultdict(list)
            for predicted, strength in wrong.get(word, []):
                by_class[predicted].append(strength)
            error = {str(c): sum(v) / len(v) for c, v in by_class.items()}
            if supported is None and error:
                supported = max(by_class, key=lambda c: (sum(by_class[c]), str(c)))
            out[word] = {"mean_share": mean_share, "top1_rate": top1_rate, "n_probes": len(values),
                         "dominance": dominance, "supported_target": supported,
                         "error_dominance": error, "n_wrong_probes": len(wrong.get(word, []))}
        return out

    def _units(self, attribution: ProbeAttribution) -> dict[str, tuple[float, float, float]]:
        """Each whole word (lowercased, occurrences summed) and, with training data, each
        phrase of distinct words: (share, largest share of the other words, smallest share of them).
        A phrase's share is what all its words carry (:func:`_joint_share`): the sum would let a
        class word make every phrase it stands in look dominant."""
        per_word = {w: s for w, s in lowercase_word_shares(attribution).items() if is_word(w)}
        if not per_word:
            return {}
        units = {w: (s, *_extremes(per_word, (w,))) for w, s in per_word.items()}
        if self.has_training_data:
            words = [w.lower() for w in attribution.words]
            shares = [float(s) for s in attribution.word_shares]
            for n in range(2, PHRASE_MAX_WORDS + 1):
                for i in range(len(words) - n + 1):
                    run = words[i:i + n]
                    phrase = " ".join(run)
                    if all(is_word(w) for w in run) and len(set(run)) == n and phrase not in units:
                        # measured against every word, its own too: top only where all its words carry it
                        units[phrase] = (_joint_share(shares[i:i + n]), *_extremes(per_word, ()))
        return units

    def _reliance(self, row: dict[str, Any], with_flips: bool = True) -> float:
        """The strongest evidence that the model relies on the word for ``row["label"]``. For a
        phrase with a word that leans to its class, only the rise that inserting the phrase
        brings beyond inserting that word (and the controls) counts: its share, flips and the
        rest it may owe to the class word."""
        if row.get("leaning"):
            flips = row["flips"] or {}
            significant = with_flips and flips.get("effect_p") is not None and flips["effect_p"] <= EFFECT_MAX_P
            return max(0.0, flips["effect"]) if significant else 0.0
        att = row["attribution"]
        error = att.get("error_dominance") or {}
        wrong = error.get(str(row["label"])) if row["label"] is not None else max(error.values(), default=None)
        evidence = [att["dominance"], wrong or 0.0]
        if with_flips:
            flips = row["flips"] or {}
            evidence += [f for f in (flips.get(k) for k in ("insertion", "removal")) if f is not None]
            if flips.get("effect_p") is not None and flips["effect_p"] <= EFFECT_MAX_P:
                evidence.append(max(0.0, flips["effect"]))
        return max(evidence)

    @staticmethod
    def _class_id(label: Any, snapshot: Snapshot) -> int | None:
        """The class id of a training label: itself if an integer, else matched by class name."""
        if isinstance(label, int):
            return int(label)
        for attribution in snapshot.attributions:
            if attribution.target_name == label:
                return attribution.target
            if attribution.prediction_name == label and isinstance(attribution.prediction, int):
                return attribution.prediction
        return None

    @staticmethod
    def _gate(row: dict[str, Any]) -> float:
        """How far the word's purity above the prior speaks for a shortcut: none below
        ``PURITY_GATE``'s low end, fully from its high end. Where the data's purest well-measured
        class word stays below the low end (label noise caps genuine words at ~0.76 in the
        benchmark's reviews), a word purer than it opens the gate from its level instead: a
        planted word at purity 0.8 is then ranked above the class words it outdoes."""
        if not row["train"]:
            return 0.5
        low, high = PURITY_GATE
        excess = row["train"]["purity_excess"]
        reference = row.get("reference_excess")
        if reference is not None and reference < low:
            low = reference
        return min(1.0, max(0.0, (excess - low) / (high - low)))

    def _reference_excess(self, reference: list[tuple[float, str, int, int]]) -> Callable[[str], float | None]:
        """For a single word, the purity excess of the purest other well-measured word
        (:meth:`_reference_purities`); ``None`` for phrases (measured against what their words
        predict, not against the class words) and without such a word."""
        excess = [(word, (self.word_statistics(word) or {}).get("purity_excess")) for _, word, _, _ in reference]

        def of(word: str) -> float | None:
            others = [e for w, e in excess if w != word]
            return others[0] if others and " " not in word else None
        return of

    def _score(self, row: dict[str, Any]) -> float:
        return self._gate(row) * self._reliance(row)

    def _counterfactuals(self, rows: list[dict[str, Any]], snapshot: Snapshot, predict_fn: PredictFn,
                         forwards: dict[str, Any]) -> None:
        """Removal and insertion flips of each row's word and, when ``predict_fn`` gives class
        probabilities and the statistics give control words, its insertion effect. ``forwards``
        keeps the probes' own predictions and the control insertions between calls of one check."""
        probes: dict[str, ProbeAttribution] = {}
        for attribution in snapshot.attributions:
            if attribution.text_pair is None:
                probes.setdefault(attribution.probe_id, attribution)
        if not probes or not rows:
            return
        if "original" not in forwards:
            forwards["original"] = _predict(predict_fn, [a.text for a in probes.values()])
            forwards["controls"] = self._control_words()
            forwards["control_probs"] = {}  # (probe id, control word) -> class probabilities
            forwards["n"] = len(probes)
        if forwards["original"] is None:
            logger.warning(
                "ShortcutDiscovery: predict_fn does not return one class id per text (multi-label or "
                "regression model?); counterfactual flips are skipped."
            )
            return
        ids, probs = forwards["original"]
        original = dict(zip(probes, ids))
        controls = forwards["controls"] if probs is not None else []
        control_probs = forwards["control_probs"]
        by_confidence = sorted(probes, key=lambda pid: -_margin(probes[pid]))
        variants: list[str] = []
        new_controls: list[tuple[str, str]] = []
        plans = []  # per row: removal and insertion lists of (variant index, probe id), flip probes
        for row in rows:
            pattern = word_pattern(row["word"])
            label = row["label"]
            removal = []
            for pid, attribution in probes.items():
                if len(removal) < self.counterfactual_probes and pattern.search(attribution.text) and (
                    label is None or original[pid] == label
                ):
                    edited = " ".join(pattern.sub(" ", attribution.text).split())
                    if edited:
                        removal.append((len(variants), pid))
                        variants.append(edited)
            insertion, n_flip = [], 0
            if label is not None:
                others = [pid for pid in by_confidence
                          if original[pid] != label and not pattern.search(probes[pid].text)]
                # flips on the most confident half; the effect on all of them (bounded)
                n_flip = min(self.counterfactual_probes, (len(others) + 1) // 2)
                n_all = min(len(others), 2 * self.counterfactual_probes) if controls else n_flip
                for pid in others[:n_all]:
                    insertion.append((len(variants), pid))
                    variants.append(_inserted(row["word"], probes[pid].text))
                    for control in controls + row.get("leaning", []):
                        if (pid, control) not in control_probs and (pid, control) not in new_controls:
                            new_controls.append((pid, control))
            plans.append((removal, insertion, n_flip))
        control_texts = [_inserted(c, probes[pid].text) for pid, c in new_controls]
        result = _predict(predict_fn, variants + control_texts) if variants or control_texts else ([], None)
        if result is None or len(result[0]) != len(variants) + len(control_texts):
            return
        predicted, predicted_probs = result
        forwards["n"] += len(variants) + len(control_texts)
        if predicted_probs is not None:
            for key, p in zip(new_controls, predicted_probs[len(variants):]):
                control_probs[key] = p
        for row, (removal, insertion, n_flip) in zip(rows, plans):
            removal_rate = (
                sum(predicted[i] != original[pid] for i, pid in removal) / len(removal) if removal else None
            )
            flip_probes = insertion[:n_flip]
            insertion_rate = (
                sum(predicted[i] == row["label"] for i, _ in flip_probes) / len(flip_probes) if flip_probes else None
            )
            if removal_rate is None and insertion_rate is None:
                continue
            row["flips"] = {"removal": removal_rate, "insertion": insertion_rate,
                            "n_removal": len(removal), "n_insertion": len(flip_probes)}
            if controls and predicted_probs is not None and insertion:
                leaning = row.get("leaning", [])
                row["flips"].update(_insertion_effect(row["label"], [
                    (predicted_probs[i], [control_probs[(pid, c)] for c in controls],
                     [control_probs[(pid, w)] for w in leaning]) for i, pid in insertion]))
                row["flips"]["controls"] = list(controls) + list(leaning)

    def _control_words(self) -> list[str]:
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

    def _reference_purities(self) -> list[tuple[float, str, int, int]]:
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

    def _candidate(self, row: dict[str, Any], reference: list[tuple[float, str]]) -> dict[str, Any]:
        att, train, flips = row["attribution"], row["train"] or {}, row["flips"] or {}
        others = [(top, total) for _, word, top, total in reference if word != row["word"]]
        purity_reference = others[0][0] / others[0][1] if others and train else None
        purity_p = None
        if purity_reference is not None:  # purer than the purest other well-measured word?
            top, total = round(train["train_purity"] * train["train_count"]), train["train_count"]
            (ref_top, ref_total), = others[:1]
            purity_p = float(stats.fisher_exact([[top, total - top], [ref_top, ref_total - ref_top]],
                                                alternative="greater").pvalue)
        error = att.get("error_dominance") or {}
        evidence = {
            "mean_share": att["mean_share"],
            "top1_rate": att["top1_rate"],
            "n_probes": att["n_probes"],
            "dominance": att["dominance"],
            "wrong_prediction_dominance": error.get(str(row["label"])) if row["label"] is not None else None,
            "n_wrong_probes": att.get("n_wrong_probes", 0),
            "train_count": train.get("train_count"),
            "train_purity": train.get("train_purity"),
            "purity_lower": train.get("purity_lower"),
            "purity_label": train.get("purity_label", row["label"]),
            "rarity": train.get("rarity"),
            "purity_reference": purity_reference,
            "purity_p_value": purity_p,
            "flip_rate_removal": flips.get("removal"),
            "flip_rate_insertion": flips.get("insertion"),
            "n_removal_probes": flips.get("n_removal", 0),
            "n_insertion_probes": flips.get("n_insertion", 0),
            "insertion_effect": flips.get("effect"),
            "insertion_effect_p": flips.get("effect_p"),
            "n_effect_probes": flips.get("n_effect", 0),
            "control_words": flips.get("controls"),
            "basis": list(row["basis"]),
        }
        if " " in row["word"]:
            evidence["phrase"] = True
            if row.get("leaning"):  # the insertion effect is beyond these words
                evidence["leaning_words"] = list(row["leaning"])
            if row.get("through_phrase"):  # common words that lean only where the phrase is
                evidence["words_leaning_through_phrase"] = list(row["through_phrase"])
            evidence["common_words"] = bool(row.get("common_words"))
        if row.get("outside"):
            evidence["outside_probes"] = True  # in no probe: only the insertion flips speak for it
        return {"word": row["word"], "score": float(row["score"]), "evidence": json_safe(evidence)}

    # ----------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Nothing changes between checks; the state is the training statistics (labels as
        given, so they must be JSON types themselves to go into a JSON file)."""
        return self.statistics.state_dict(self.min_count)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; an empty mapping keeps the current statistics."""
        if isinstance(state, dict) and not state:
            return
        versioned_state(state, 2, "ShortcutDiscovery")
        self.statistics.load_state_dict(state)


_NO_ATTRIBUTION = {"mean_share": None, "top1_rate": None, "n_probes": 0, "dominance": 0.0,
                   "supported_target": None, "error_dominance": {}, "n_wrong_probes": 0}


def fit_texts(statistics: TrainingStatistics, texts: list[Any], labels: list[Any], who: str) -> None:
    """Count a complete list of training texts (every rank holds the same list)."""
    if len(texts) != len(labels):
        raise ValueError(f"{who}: {len(texts)} training texts but {len(labels)} labels; give one label per text.")
    if not texts:
        raise ValueError(f"{who}: training_texts is empty; pass None to go without training data.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{who}: training text {i} is a {type(text).__name__}, not a string.")
    labels = [_as_label(label) for label in labels]
    statistics.expect(len(texts))
    statistics.observe(texts=texts, labels=labels, distinct=False)
    statistics.complete = True
    statistics.mark_replicated()


def _joint_share(shares: Sequence[float]) -> float:
    """The share neighbouring words carry together: the weakest one times their number when
    all lean the same way (a phrase works through all its words), else nothing."""
    if all(s > 0 for s in shares):
        return len(shares) * min(shares)
    if all(s < 0 for s in shares):
        return len(shares) * max(shares)
    return 0.0


def _inserted(word: str, text: str) -> str:
    """``text`` with ``word`` after one of its words, at a place fixed by the text (a hash, no
    random draw), so the word and its controls go to the same place. Never at the front: a model
    that reads positions can react to any word there (a tiny BERT turned negative probes
    positive with "the" as often as with its planted word)."""
    words = text.split(" ")
    words.insert(1 + zlib.crc32(text.encode("utf-8")) % len(words), word)
    return " ".join(words)


def _insertion_effect(label: int, probes: list[tuple[Sequence[float], list[Sequence[float]], list[Sequence[float]]]]
                      ) -> dict[str, Any]:
    """Mean rise of ``label``'s probability with the word inserted beyond the controls' (at the
    same place), over ``probes`` ((with the word, [with each control], [with each leaning word
    of a phrase])), and the one-sided paired t-test's p-value (``None`` with fewer than
    ``EFFECT_MIN_PROBES`` probes). A phrase's rise is measured beyond the larger of the
    controls' mean and its strongest leaning word's."""
    diffs = []
    for with_word, with_controls, with_leaning in probes:
        if not 0 <= label < len(with_word):
            return {}
        baseline = sum(float(c[label]) for c in with_controls) / len(with_controls)
        baseline = max([baseline] + [float(w[label]) for w in with_leaning])
        diffs.append(float(with_word[label]) - baseline)
    mean = sum(diffs) / len(diffs)
    p_value = None
    if len(diffs) >= EFFECT_MIN_PROBES:
        spread = max(diffs) - min(diffs)
        if spread <= 1e-12:  # every probe moved alike: significant exactly when it rose
            p_value = 0.0 if mean > 0 else 1.0
        else:
            p_value = float(stats.ttest_1samp(diffs, 0.0, alternative="greater").pvalue)
    return {"effect": mean, "effect_p": p_value, "n_effect": len(diffs)}


def _extremes(per_word: dict[str, float], leave_out: tuple[str, ...]) -> tuple[float, float]:
    others = [s for w, s in per_word.items() if w not in leave_out]
    return (max(others), min(others)) if others else (-math.inf, math.inf)


def _or_one(p_value: float | None) -> float:
    return 1.0 if p_value is None else p_value


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


def _margin(attribution: ProbeAttribution) -> float:
    """How confident the model was in its prediction: top logit minus the runner-up
    (``-inf`` when the record has no usable logits, so such probes come last)."""
    scores, prediction = attribution.scores, attribution.prediction
    if len(scores) < 2 or not isinstance(prediction, int) or not 0 <= prediction < len(scores):
        return -math.inf
    others = [s for i, s in enumerate(scores) if i != prediction]
    return float(scores[prediction]) - max(float(s) for s in others)


def _predict(predict_fn: PredictFn, texts: list[str]) -> tuple[list[int], list[list[float]] | None] | None:
    """Class ids for ``texts`` and, when ``predict_fn`` returns class probabilities (one sequence
    of floats per text), those too; ``None`` when the model's outputs are neither."""
    out = list(predict_fn(texts))
    if len(out) != len(texts):
        raise ValueError(
            f"ShortcutDiscovery: predict_fn returned {len(out)} predictions for {len(texts)} texts; "
            "it must return one class id per text (or one row of class probabilities)."
        )
    if out and all(_is_probabilities(p) for p in out):
        probs = [[float(x) for x in p] for p in out]
        return [max(range(len(p)), key=lambda i: (p[i], -i)) for p in probs], probs
    ids = []
    for p in out:
        p = p.item() if hasattr(p, "item") and getattr(p, "ndim", 0) == 0 else p
        if isinstance(p, float) and p.is_integer():
            p = int(p)
        if not isinstance(p, int):
            return None
        ids.append(int(p))
    return ids, None


def _is_probabilities(value: Any) -> bool:
    """A row of two or more class probabilities (floats summing to one), not a multi-label list of ids."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        return False
    if not all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in value):
        return False
    return abs(sum(value) - 1.0) < 1e-3
