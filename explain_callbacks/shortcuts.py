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
   label changes their prediction.

Training texts are tokenised by lowercase ``\\w+`` (document frequency: a word counts once
per example); attributed words are lowercased and only whole ``\\w+`` words are candidates,
so punctuation and special tokens never are.

Score (0..1) = purity gate x reliance. The gate rises from 0 to 1 as the purity above the
prior (its Wilson lower end) goes from 0.5 to 0.8: genuine class words appear in the other class
too (negation, contrast) and stay below it, a planted word does not. Reliance is the strongest
of attribution dominance and the flip rates (a shortcut next to strong class words may take
little attribution share yet flip texts, or the reverse). Flips and dominance alone
never make a shortcut: inserting "awful" into a review flips it for a good reason. Without
training data the gate is a flat 0.5, so candidates are ranked but
:class:`~.alerts.AlertRules` raises no shortcut alert. Each candidate's ``evidence["basis"]``
lists what was present ("attribution", "training", "counterfactual").
"""

from __future__ import annotations

import math
import random
import re
import logging
from collections import Counter, defaultdict
from typing import Any, Callable, Hashable, Sequence

from scipy import stats

from .alerts import json_safe, word_pattern
from .drift import lowercase_word_shares
from .records import ProbeAttribution, Snapshot

logger = logging.getLogger(__name__)

PredictFn = Callable[[list[str]], Sequence[int]]

WORD_RE = re.compile(r"\w+")
PURITY_GATE = (0.5, 0.8)
# One-sided enough for a word in a few dozen examples; genuine words have hundreds.
PURITY_CONFIDENCE = 0.8  # purity above the prior: no shortcut evidence below, full above


def training_words(text: str) -> set[str]:
    """The distinct lowercase ``\\w+`` words of one training text."""
    return set(WORD_RE.findall(text.lower()))


def wilson_lower_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Lower end of the Wilson score interval for a proportion."""
    if trials <= 0:
        return 0.0
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low)


def _as_label(value: Any) -> Hashable:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (list, dict, set)):
        raise ValueError(
            f"ShortcutDiscovery: training labels must be single class labels, got {type(value).__name__} "
            f"({value!r:.60}); multi-label data is not supported."
        )
    return value


class ShortcutDiscovery:
    """Ranks probe words by how much they look like a shortcut the model learned.

    ``training_texts`` / ``training_labels``: the training data or a sample of it (both or
    neither; above ``max_examples`` a seeded random sample is kept). Without them only
    attribution and counterfactual evidence count, and the alert threshold is stricter.
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
    ):
        for name, value in (("min_count", min_count), ("max_candidates", max_candidates),
                            ("counterfactual_probes", counterfactual_probes), ("max_examples", max_examples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ShortcutDiscovery: {name} must be a positive integer, got {value!r}.")
        if isinstance(counterfactual_words, bool) or not isinstance(counterfactual_words, int) or counterfactual_words < 0:
            raise ValueError(
                f"ShortcutDiscovery: counterfactual_words must be an integer >= 0, got {counterfactual_words!r}."
            )
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
        self.n_examples = 0
        self.label_counts: Counter = Counter()
        self.word_labels: dict[str, Counter] = {}
        if training_texts is not None:
            self._fit(list(training_texts), list(training_labels), max_examples, seed)

    @property
    def has_training_data(self) -> bool:
        return self.n_examples > 0

    def _fit(self, texts: list[Any], labels: list[Any], max_examples: int, seed: int) -> None:
        if len(texts) != len(labels):
            raise ValueError(
                f"ShortcutDiscovery: {len(texts)} training texts but {len(labels)} labels; give one label per text."
            )
        if not texts:
            raise ValueError("ShortcutDiscovery: training_texts is empty; pass None to go without training data.")
        indices = list(range(len(texts)))
        if len(indices) > max_examples:
            indices = sorted(random.Random(seed).sample(indices, max_examples))
        word_labels: dict[str, Counter] = defaultdict(Counter)
        for i in indices:
            if not isinstance(texts[i], str):
                raise ValueError(
                    f"ShortcutDiscovery: training text {i} is a {type(texts[i]).__name__}, not a string."
                )
            label = _as_label(labels[i])
            self.label_counts[label] += 1
            for word in training_words(texts[i]):
                word_labels[word][label] += 1
        self.n_examples = len(indices)
        self.word_labels = {w: c for w, c in word_labels.items() if sum(c.values()) >= self.min_count}

    def word_statistics(self, word: str) -> dict[str, Any] | None:
        """Training statistics of one word, or ``None`` if it is below ``min_count``."""
        counts = self.word_labels.get(word.lower())
        if counts is None:
            return None
        count = sum(counts.values())
        label, top = max(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
        prior = self.label_counts[label] / self.n_examples
        purity_low = wilson_lower_bound(top, count, PURITY_CONFIDENCE)
        df = count / self.n_examples
        return {
            "train_count": count,
            "train_purity": top / count,
            "purity_label": label,
            "purity_lower": purity_low,
            "purity_excess": max(0.0, (purity_low - prior) / (1.0 - prior)) if prior < 1.0 else 0.0,
            "rarity": max(0.0, 1.0 - df / self.rarity_df),
        }

    # ----------------------------------------------------------------------- ranking

    def rank(self, snapshot: Snapshot, predict_fn: PredictFn | None = None) -> list[dict[str, Any]]:
        """Ranked shortcut candidates of one check, highest score first.

        ``predict_fn(texts) -> class ids`` runs the model for the counterfactuals; without it
        they are skipped (``flip_rate_*`` are ``None``). Probes with a ``text_pair`` are not
        edited, since ``predict_fn`` takes single texts.
        """
        per_word = self._attribution_evidence(snapshot)
        rows = []
        for word, evidence in per_word.items():
            basis = ["attribution"]
            train = None
            if self.has_training_data:
                train = self.word_statistics(word)
                if train is None:
                    continue  # (nearly) absent from training data: cannot be a learned shortcut
                basis.append("training")
            label = self._class_id(train["purity_label"], snapshot) if train else evidence["supported_target"]
            rows.append({"word": word, "attribution": evidence, "train": train, "label": label,
                         "basis": basis, "flips": None})
        for row in rows:
            row["score"] = self._score(row)
        if predict_fn is not None and self.counterfactual_words:
            # the most promising by the evidence so far (dominance alone without training data)
            # (a closed purity gate scores 0 whatever the flips: those words are not worth the forwards)
            by_promise = sorted(rows, key=lambda r: (-r["score"], -r["attribution"]["dominance"], r["word"]))
            tested = [r for r in by_promise if r["attribution"]["dominance"] > 0 and self._gate(r) > 0]
            tested = tested[: self.counterfactual_words]
            self._counterfactuals(tested, snapshot, predict_fn)
            for row in tested:
                if row["flips"] is not None:
                    row["basis"].append("counterfactual")
                row["score"] = self._score(row)
        rows = sorted((r for r in rows if r["score"] > 0), key=lambda r: (-r["score"], r["word"]))
        return [self._candidate(r) for r in rows[: self.max_candidates]]

    def _attribution_evidence(self, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
        shares: dict[str, list[float]] = defaultdict(list)
        top1: dict[str, int] = defaultdict(int)
        support: dict[str, Counter] = defaultdict(Counter)
        for attribution in snapshot.attributions:
            per_word = {w: s for w, s in lowercase_word_shares(attribution).items() if WORD_RE.fullmatch(w)}
            if not per_word:
                continue
            best = max(range(len(attribution.words)), key=lambda i: (attribution.word_shares[i], -i))
            for word, share in per_word.items():
                shares[word].append(share)
                if share > 0:
                    support[word][attribution.target] += share
            top1[attribution.words[best].lower()] += 1
        out = {}
        for word, values in shares.items():
            mean_share = sum(values) / len(values)
            top1_rate = top1.get(word, 0) / len(values)
            dominance = 0.5 * top1_rate + 0.5 * min(1.0, max(0.0, mean_share) / self.dominance_share)
            supported = max(support[word].items(), key=lambda kv: kv[1])[0] if support[word] else None
            out[word] = {"mean_share": mean_share, "top1_rate": top1_rate, "n_probes": len(values),
                         "dominance": dominance, "supported_target": supported}
        return out

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
        if not row["train"]:
            return 0.5
        low, high = PURITY_GATE
        return min(1.0, max(0.0, (row["train"]["purity_excess"] - low) / (high - low)))

    def _score(self, row: dict[str, Any]) -> float:
        gate = self._gate(row)
        flips = [f for f in ((row["flips"] or {}).get(k) for k in ("insertion", "removal")) if f is not None]
        return gate * max([row["attribution"]["dominance"], *flips])

    def _counterfactuals(self, rows: list[dict[str, Any]], snapshot: Snapshot, predict_fn: PredictFn) -> None:
        probes: dict[str, ProbeAttribution] = {}
        for attribution in snapshot.attributions:
            if attribution.text_pair is None:
                probes.setdefault(attribution.probe_id, attribution)
        texts = [a.text for a in probes.values()]
        if not texts or not rows:
            return
        predictions = _predict(predict_fn, texts)
        if predictions is None:
            logger.warning(
                "ShortcutDiscovery: predict_fn does not return one class id per text (multi-label or "
                "regression model?); counterfactual flips are skipped."
            )
            return
        original = dict(zip(probes, predictions))
        by_confidence = sorted(probes, key=lambda pid: -_margin(probes[pid]))
        variants: list[str] = []
        plans = []  # per row: (removal, insertion) lists of (variant index, probe id)
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
            insertion = []
            if label is not None:
                others = [pid for pid in by_confidence
                          if original[pid] != label and not pattern.search(probes[pid].text)]
                for pid in others[: min(self.counterfactual_probes, (len(others) + 1) // 2)]:
                    insertion.append((len(variants), pid))
                    variants.append(f"{row['word']} {probes[pid].text}")
            plans.append((removal, insertion))
        predicted = (_predict(predict_fn, variants) or []) if variants else []
        if len(predicted) != len(variants):
            return
        for row, (removal, insertion) in zip(rows, plans):
            removal_rate = (
                sum(predicted[i] != original[pid] for i, pid in removal) / len(removal) if removal else None
            )
            insertion_rate = (
                sum(predicted[i] == row["label"] for i, _ in insertion) / len(insertion) if insertion else None
            )
            if removal_rate is None and insertion_rate is None:
                continue
            row["flips"] = {"removal": removal_rate, "insertion": insertion_rate,
                            "n_removal": len(removal), "n_insertion": len(insertion)}

    @staticmethod
    def _candidate(row: dict[str, Any]) -> dict[str, Any]:
        att, train, flips = row["attribution"], row["train"] or {}, row["flips"] or {}
        evidence = {
            "mean_share": att["mean_share"],
            "top1_rate": att["top1_rate"],
            "n_probes": att["n_probes"],
            "dominance": att["dominance"],
            "train_count": train.get("train_count"),
            "train_purity": train.get("train_purity"),
            "purity_lower": train.get("purity_lower"),
            "purity_label": train.get("purity_label", row["label"]),
            "rarity": train.get("rarity"),
            "flip_rate_removal": flips.get("removal"),
            "flip_rate_insertion": flips.get("insertion"),
            "n_removal_probes": flips.get("n_removal", 0),
            "n_insertion_probes": flips.get("n_insertion", 0),
            "basis": list(row["basis"]),
        }
        return {"word": row["word"], "score": float(row["score"]), "evidence": json_safe(evidence)}

    # ----------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Nothing changes between checks; the state is the training statistics (labels as
        given, so they must be JSON types themselves to go into a JSON file)."""
        return {
            "version": 1,
            "n_examples": self.n_examples,
            "label_counts": [[label, n] for label, n in self.label_counts.items()],
            "word_labels": {w: [[label, n] for label, n in c.items()] for w, c in self.word_labels.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; an empty mapping keeps the current statistics."""
        if isinstance(state, dict) and not state:
            return
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError(
                "ShortcutDiscovery.load_state_dict: not a ShortcutDiscovery state (expected a mapping "
                "with version 1, as ShortcutDiscovery.state_dict() returns)."
            )
        self.n_examples = int(state.get("n_examples", 0))
        self.label_counts = Counter({_as_label(l): int(n) for l, n in state.get("label_counts", [])})
        self.word_labels = {
            w: Counter({_as_label(l): int(n) for l, n in pairs}) for w, pairs in state.get("word_labels", {}).items()
        }


def _margin(attribution: ProbeAttribution) -> float:
    """How confident the model was in its prediction: top logit minus the runner-up
    (``-inf`` when the record has no usable logits, so such probes come last)."""
    scores, prediction = attribution.scores, attribution.prediction
    if len(scores) < 2 or not isinstance(prediction, int) or not 0 <= prediction < len(scores):
        return -math.inf
    others = [s for i, s in enumerate(scores) if i != prediction]
    return float(scores[prediction]) - max(float(s) for s in others)


def _predict(predict_fn: PredictFn, texts: list[str]) -> list[int] | None:
    """Class ids for ``texts``; ``None`` when the model's outputs are not class ids."""
    out = list(predict_fn(texts))
    if len(out) != len(texts):
        raise ValueError(
            f"ShortcutDiscovery: predict_fn returned {len(out)} predictions for {len(texts)} texts; "
            "it must return one class id per text."
        )
    ids = []
    for p in out:
        p = p.item() if hasattr(p, "item") and getattr(p, "ndim", 0) == 0 else p
        if isinstance(p, float) and p.is_integer():
            p = int(p)
        if not isinstance(p, int):
            return None
        ids.append(int(p))
    return ids
