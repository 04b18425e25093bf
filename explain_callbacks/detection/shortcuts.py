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

Every rate entering the score is the lower end of its Wilson interval for its count, and a
tested insertion that moves nothing caps the score (:mod:`.scoring`, :mod:`.evidence`). Every
unit the training data single out (its purity p-value passes the false-discovery control over
the check's whole family, ``evidence["purity_q_value"]``) gets its counterfactual test whatever
its attribution share, inserted where it sits in its training texts (start, end or inside,
``evidence["insertion_position"]``); edge tags, a text's first or last marks with punctuation
among them (``"start:from zorblax :"``), are candidates too. All tests of a check share one
call of ``predict_fn``.

The code is split by concern: :mod:`.candidates` (what is a candidate, attribution evidence),
:mod:`.purity` (training statistics judged), :mod:`.counterfactual` (the model's forwards),
:mod:`.scoring` (gate and bounded reliance), :mod:`.evidence` (bounds and false discoveries).

``evidence["purity_p_value"]`` says whether the word is purer than this data set's genuine
class words, however few its examples: a one-sided Fisher exact test of its same-label count
against that of the purest other well-measured word (``purity_reference``: the purest word in
at least ``REFERENCE_MIN_COUNT`` examples), so both counts' uncertainty is in it. Thirteen of
thirteen against a class word 74% pure in 187 examples: p = 0.02; a class word 87% pure in 77
against one 79% pure in 75 (the same generator): p = 0.12.
"""

from __future__ import annotations

import logging
from typing import Any, Hashable, Sequence

from explain_callbacks.attribution.records import Snapshot
from explain_callbacks.attribution.validation import positive_int, versioned_state
from explain_callbacks.attribution.words import text_words
from explain_callbacks.detection.alerts import json_safe
from explain_callbacks.detection.candidates import (
    NO_ATTRIBUTION,
    attribution_evidence,
    phrases_purer_than_words,
    training_only_units,
)
from explain_callbacks.detection.counterfactual import EFFECT_MAX_P, Forwards, PredictFn, run_counterfactuals
from explain_callbacks.detection.evidence import (
    CONFIDENCE,
    FDR_LEVEL,
    fdr_adjusted,
    testable,
    wilson_lower_bound,
    wilson_upper_bound,
)
from explain_callbacks.detection.purity import PURITY_GATE, PurityJudge
from explain_callbacks.detection.scoring import gate, reliance, reliance_parts, score
from explain_callbacks.detection.statistics import TrainingStatistics, as_label

__all__ = ["EFFECT_MAX_P", "PURITY_GATE", "ShortcutDiscovery", "fit_texts", "training_words", "wilson_lower_bound"]

logger = logging.getLogger(__name__)

# Units the training data single out (purity q-value at most FDR_LEVEL) are all tested, up to
# this many a check, the smallest q-values first.
SINGLED_OUT_MAX = 12


def training_words(text: str) -> set[str]:
    """The distinct lowercase words of one training text (as :mod:`.words` defines a word)."""
    return set(text_words(text))


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
    other evidence (and as many phrases and training-only units), plus every unit the training
    data single out (up to ``SINGLED_OUT_MAX``), on at most ``counterfactual_probes`` probes
    each per direction.
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
        self.last_family_size = 0
        self._statistics = statistics if statistics is not None else TrainingStatistics(max_examples, phrases=None, seed=seed)
        if training_texts is not None:
            fit_texts(self._statistics, list(training_texts), list(training_labels), "ShortcutDiscovery")

    @property
    def statistics(self) -> TrainingStatistics:
        return self._statistics

    @statistics.setter
    def statistics(self, value: TrainingStatistics) -> None:
        self._statistics = value

    @property
    def judge(self) -> PurityJudge:
        return PurityJudge(self._statistics, self.min_count, self.rarity_df)

    @property
    def has_training_data(self) -> bool:
        return self._statistics.has_data

    def word_statistics(self, word: str) -> dict[str, Any] | None:
        """Training statistics of one word (or phrase ``"a b"``, or edge tag
        ``"start:from x :"``), or ``None`` if it is below ``min_count``."""
        return self.judge.word_statistics(word)

    # ----------------------------------------------------------------------- ranking

    def rank(self, snapshot: Snapshot, predict_fn: PredictFn | None = None) -> list[dict[str, Any]]:
        """Ranked shortcut candidates of one check, highest score first.

        ``predict_fn(texts)`` runs the model for the counterfactuals and returns class ids, or
        class probabilities per text (then the insertion effect is measured too); without it
        they are skipped (``flip_rate_*`` are ``None``). Probes with a ``text_pair`` are not
        edited, since ``predict_fn`` takes single texts.
        """
        judge = self.judge
        trained = self.has_training_data
        per_word = attribution_evidence(snapshot, self.dominance_share, with_phrases=trained)
        forwards = Forwards()
        reference = judge.reference_purities() if trained else []
        reference_excess = judge.reference_excess(reference)
        rows = []
        for word, evidence in per_word.items():
            basis = ["attribution"]
            train = None
            if trained:
                train = judge.word_statistics(word)
                if train is None:
                    continue  # (nearly) absent from training data: cannot be a learned shortcut
                basis.append("training")
            elif " " in word:
                continue  # a phrase is a candidate only for being purer than its words
            label = self._class_id(train["purity_label"], snapshot) if train else evidence["supported_target"]
            rows.append({"word": word, "attribution": evidence, "train": train, "label": label,
                         "basis": basis, "flips": None, "reference_excess": reference_excess(word)})
        rows = phrases_purer_than_words(rows, judge, gate)
        outside = self._training_only_rows(judge, snapshot, set(per_word), reference_excess) if trained else []
        self._purity_family(rows + outside, reference)
        for row in rows:
            row["score"] = score(row)
        if predict_fn is not None and self.counterfactual_words:
            tested = self._to_test(rows, outside)
            self._test(tested, snapshot, predict_fn, forwards, judge)
            rows += [r for r in outside if r in tested]
        self.last_rank_forwards = forwards.n  # texts run through predict_fn (for benchmarks)
        rows = sorted((r for r in rows if r["score"] > 0), key=lambda r: -r["score"])
        if len(rows) > self.max_candidates:  # the kept ones and those tied with the last kept
            rows = [r for r in rows if r["score"] >= rows[self.max_candidates - 1]["score"]]
        candidates = [self._candidate(r, judge, forwards) for r in rows]
        # an equal score goes to the word that is purer than the data's class words
        candidates.sort(key=lambda c: (-c["score"], _or_one(c["evidence"].get("purity_q_value")), c["word"]))
        return candidates[: self.max_candidates]

    def _training_only_rows(self, judge: PurityJudge, snapshot: Snapshot, present: set[str],
                            reference_excess: Any) -> list[dict[str, Any]]:
        """Nearly pure training words no probe contains, and edge tags, whose purity gate opens:
        only the insertion test can speak for them (basis without "attribution")."""
        rows = []
        for unit in training_only_units(judge, present):
            train = judge.word_statistics(unit)
            if train is not None and judge.is_class_word_idiom(unit, train):
                continue
            label = self._class_id(train["purity_label"], snapshot) if train else None
            row = {"word": unit, "attribution": dict(NO_ATTRIBUTION), "train": train, "label": label,
                   "basis": ["training"], "flips": None, "outside": True,
                   "reference_excess": reference_excess(unit) if " " not in unit else None}
            if label is not None and gate(row) > 0:
                rows.append(row)
        return rows

    def _purity_family(self, rows: list[dict[str, Any]], reference: list[tuple[float, str, int, int]]) -> None:
        """Every unit the check considers gets its purity p-value against the data's purest other
        well-measured word, and the family's Benjamini-Hochberg adjusted value (``purity_q``)."""
        judged = []
        for row in rows:
            row["purity_reference"], row["purity_p"] = PurityJudge.purity_p_value(row["word"], row["train"], reference)
            if row["purity_p"] is not None:
                judged.append(row)
        can = testable([PurityJudge.min_purity_p_value(r["word"], r["train"], reference) for r in judged])
        family = [r for r, ok in zip(judged, can) if ok]
        for row, q in zip(family, fdr_adjusted([r["purity_p"] for r in family])):
            row["purity_q"] = q
        for row, ok in zip(judged, can):
            if not ok:  # its count cannot make it purer than the class words by any test
                row["purity_q"] = 1.0
        self.last_family_size = len(judged)
        for row in rows:
            row["family_size"] = len(judged)
            row["family_testable"] = len(family)

    def _to_test(self, rows: list[dict[str, Any]], outside: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The candidates a check tests: the most promising by the evidence so far (a closed
        purity gate scores 0 whatever the flips: not worth the forwards), as many phrases (their
        share is spread over their words) and training-only units, and every unit the training
        data single out, whatever its attribution share."""
        n = self.counterfactual_words
        promising = sorted(rows, key=lambda r: (-r["score"], -reliance(r, False), r["word"]))
        tested = [r for r in promising if reliance(r, False) > 0 and gate(r) > 0][:n]
        chosen = {id(r) for r in tested}
        phrases = sorted((r for r in rows if " " in r["word"] and gate(r) > 0 and id(r) not in chosen),
                         key=lambda r: (-gate(r), -r["train"]["train_count"], r["word"]))
        tested += phrases[:n]
        outside = sorted(outside, key=lambda r: (-gate(r), -r["train"]["purity_lower"], -r["train"]["train_count"],
                                                 r["word"]))
        tested += outside[:n]
        chosen = {id(r) for r in tested}
        singled = sorted((r for r in rows + outside if id(r) not in chosen and r.get("purity_q") is not None
                          and r["purity_q"] <= FDR_LEVEL and gate(r) > 0 and r["label"] is not None),
                         key=lambda r: (r["purity_q"], -r["train"]["train_count"], r["word"]))
        for row in singled[:SINGLED_OUT_MAX]:
            row["singled_out"] = True
        return tested + singled[:SINGLED_OUT_MAX]

    def _test(self, rows: list[dict[str, Any]], snapshot: Snapshot, predict_fn: PredictFn, forwards: Forwards,
              judge: PurityJudge) -> None:
        """Run the counterfactuals of ``rows`` in one batch, control the false discoveries over
        their insertion effects, and score them with what they found."""
        run_counterfactuals(rows, snapshot, predict_fn, forwards, judge, self.counterfactual_probes)
        effects = [r for r in rows if r["flips"] and r["flips"].get("effect_p") is not None]
        for row, q in zip(effects, fdr_adjusted([r["flips"]["effect_p"] for r in effects])):
            row["flips"]["effect_q"] = q
        for row in rows:
            if row["flips"] is not None:
                row["basis"].append("counterfactual")
            row["score"] = score(row)

    def _candidate(self, row: dict[str, Any], judge: PurityJudge, forwards: Forwards) -> dict[str, Any]:
        att, train, flips = row["attribution"], row["train"] or {}, row["flips"] or {}
        error = att.get("error_dominance") or {}
        parts = reliance_parts(row)
        n_ins = flips.get("n_insertion", 0)
        position, shares = judge.position(row["word"]) if train else ("inside", {"start": None, "end": None})
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
            "purity_reference": row.get("purity_reference"),
            "purity_p_value": row.get("purity_p"),
            "flip_rate_removal": flips.get("removal"),
            "flip_rate_insertion": flips.get("insertion"),
            "n_removal_probes": flips.get("n_removal", 0),
            "n_insertion_probes": n_ins,
            "insertion_effect": flips.get("effect"),
            "insertion_effect_p": flips.get("effect_p"),
            "n_effect_probes": flips.get("n_effect", 0),
            "control_words": flips.get("controls"),
            "basis": list(row["basis"]),
            # each figure's bound for its count, and what the family and the test rest on
            "confidence": CONFIDENCE,
            "dominance_lower": parts.get("dominance"),
            "wrong_prediction_dominance_lower": parts.get("wrong_prediction_dominance"),
            "flip_rate_removal_lower": parts.get("removal"),
            "flip_rate_insertion_lower": parts.get("insertion"),
            "flip_rate_insertion_upper": (wilson_upper_bound(flips["insertion"] * n_ins, n_ins)
                                          if flips.get("insertion") is not None else None),
            "control_flip_rate": flips.get("control_flip"),
            "insertion_effect_q": flips.get("effect_q"),
            "reliance_basis": max(parts, key=parts.get) if parts else None,
            "purity_gate": gate(row),
            # the score from overriding other classes' texts alone: what a unit the training data do
            # not single out is judged by (AlertRules.judged_score)
            "insertion_score": (gate(row) * parts["insertion"] if "insertion" in parts and not row.get("leaning")
                                else None),
            "purity_q_value": row.get("purity_q"),
            "fdr_level": FDR_LEVEL,
            "fdr_family_size": row.get("family_size", 0),
            "fdr_family_testable": row.get("family_testable", 0),
            "singled_out": bool(row.get("singled_out")),
            "insertion_position": flips.get("position", row.get("position")),
            "position_start_share": shares.get("start"),
            "position_end_share": shares.get("end"),
            "class_coverage": train.get("class_coverage"),
            "n_training_examples": self._statistics.n_examples if train else None,
            "forwards_this_check": forwards.n,
        }
        if " " in row["word"]:
            evidence["phrase"] = True
            if row.get("leaning"):  # the insertion effect is beyond these words
                evidence["leaning_words"] = list(row["leaning"])
            if row.get("through_phrase"):  # common words that lean only where the phrase is
                evidence["words_leaning_through_phrase"] = list(row["through_phrase"])
            evidence["common_words"] = bool(row.get("common_words"))
        if row["word"].startswith(("start:", "end:")):
            evidence["edge_tag"] = True
        if row.get("outside"):
            evidence["outside_probes"] = True  # in no probe: only the insertion flips speak for it
        return {"word": row["word"], "score": float(row["score"]), "evidence": json_safe(evidence)}

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

    def evidence_config(self) -> dict[str, Any]:
        """How the evidence is bounded and the false discoveries controlled (``summary.json``
        ``config["shortcut_evidence"]``)."""
        return {
            "confidence": CONFIDENCE,
            "rate_bound": "every rate entering a score at the lower end of its two-sided Wilson interval for its count",
            "fdr_level": FDR_LEVEL,
            "fdr_family": "the purity tests of every word, phrase, edge tag and outside-probe word a check considers "
                          "(those whose count can reach significance, Tarone), Benjamini-Hochberg; the insertion "
                          "effects of the units a check tests, Benjamini-Hochberg",
            "fdr_bound": f"with no unit purer than the data's purest other well-measured word, a check singles any "
                         f"out with probability at most {FDR_LEVEL}; the family and its counts are the same at every "
                         f"check once the training statistics are complete, so the bound holds for the run. A unit "
                         f"not singled out alerts only by its insertion flips' bound, which no error rate covers",
            "singled_out_max": SINGLED_OUT_MAX,
            "counterfactual_words": self.counterfactual_words,
            "counterfactual_probes": self.counterfactual_probes,
        }

    # ----------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Nothing changes between checks; the state is the training statistics (labels as
        given, so they must be JSON types themselves to go into a JSON file)."""
        return self._statistics.state_dict(self.min_count)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; an empty mapping keeps the current statistics."""
        if isinstance(state, dict) and not state:
            return
        versioned_state(state, 2, "ShortcutDiscovery")
        self._statistics.load_state_dict(state)


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


def _or_one(p_value: float | None) -> float:
    return 1.0 if p_value is None else p_value
