"""Alert rules: when the model starts leaning on a token it should not.

Each rule turns a check into a set of firing conditions, each with a stable key. An alert
is raised once, when its key first fires; later checks update it in place (``last_step``,
``last_check``, ``evidence``), set ``active=False`` when the condition clears and back to
``True`` when it returns, never adding a second alert for the same key.

Rules (all severities can be changed with ``severities=``):

- ``watch_token`` (warning): a watched word or phrase (``"sent from my iphone"``, its words'
  shares summed) enters the top ``watch_top_k`` words with a share toward the target (at most
  half the words of a short probe) in at least ``watch_probe_fraction`` of the probes that
  contain it, or its mean share on those probes reaches ``watch_share``.
- ``invariance`` (warning): the two probes of an invariance pair get different predictions.
- ``shortcut`` (warning): a discovered shortcut candidate (:mod:`.shortcuts`) scores above
  the threshold its evidence allows (see :meth:`AlertRules.shortcut_threshold`).
- ``model_health`` (warning): the model's predictions on the probes collapsed: one class takes
  every probe (at least ``health_min_probes`` of them, while their labels hold two classes or
  more), or the accuracy on the labelled probes falls clearly below chance (``1/classes`` minus
  ``health_margin``) or ``health_max_drop`` below the best earlier check. See :func:`probe_health`.
- ``convergence`` (info): more than ``max_unconverged_fraction`` of the probes' integrals
  missed the relative-delta tolerance. It is about how far the attributions can be trusted,
  not about the model, hence only info: raise ``n_steps`` / ``max_steps`` to fix it.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from typing import Any, Iterable, Mapping, Sequence

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import Alert, ProbeAttribution, Snapshot, json_safe
from explain_callbacks.attribution.validation import is_int, positive_int, versioned_state
from explain_callbacks.attribution.words import is_word, word_spans

logger = logging.getLogger(__name__)

RULES = ("watch_token", "invariance", "shortcut", "model_health", "convergence")
DEFAULT_SEVERITIES = {"watch_token": "warning", "invariance": "warning", "shortcut": "warning",
                      "model_health": "warning", "convergence": "info"}
SEVERITIES = ("info", "warning", "error")
EVIDENCE_PROBES = 5  # probes listed in an alert's evidence


def word_pattern(word: str) -> re.Pattern[str]:
    """Case-insensitive whole-word match of ``word`` (or a phrase of words, any spacing) in running text."""
    parts = word.split() or [word]
    body = re.escape(parts[0])
    for before, part in zip(parts, parts[1:]):
        body += (r"\s+" if is_word(before) and is_word(part) else r"\s*") + re.escape(part)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _same_label(label: Any, attribution: ProbeAttribution) -> bool:
    """Whether a probe's gold ``label`` (a class name or id) is what the model predicted."""
    return str(label) in (str(attribution.prediction), str(attribution.prediction_name))


HEALTH_MIN_OTHER_CLASS_PROBES = 5


def probe_health(snapshot: Snapshot) -> dict[str, Any]:
    """How the model does on the probes at one check: ``n_probes``, ``prediction_counts`` (class
    name: probes predicted as it), ``n_labelled`` (probes with a label), ``label_counts``,
    ``n_correct`` and ``accuracy`` (``None`` without labelled probes). One entry per probe
    (a probe attributed for several targets counts once)."""
    seen: dict[str, ProbeAttribution] = {}
    for attribution in snapshot.attributions:
        seen.setdefault(attribution.probe_id, attribution)
    predictions: Counter = Counter()
    labels: Counter = Counter()
    correct = 0
    for attribution in seen.values():
        name = attribution.prediction_name if attribution.prediction_name is not None else attribution.prediction
        predictions[str(name)] += 1
        if attribution.label is not None and not isinstance(attribution.label, (list, dict)):
            labels[str(attribution.label)] += 1
            correct += _same_label(attribution.label, attribution)
    n_labelled = sum(labels.values())
    return {
        "n_probes": len(seen),
        "prediction_counts": dict(sorted(predictions.items(), key=lambda kv: (-kv[1], kv[0]))),
        "n_labelled": n_labelled,
        "label_counts": dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
        "n_correct": correct if n_labelled else None,
        "accuracy": correct / n_labelled if n_labelled else None,
    }


def _check_fraction(name: str, value: Any, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        (0.0 < value if low_open else 0.0 <= value) and value <= 1.0
    ):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"AlertRules: {name} must be a number in {interval}, got {value!r}.")
    return float(value)


class AlertRules:
    """The alert rules of one run, with their deduplicated alerts.

    ``min_checks``: a condition must hold at that many consecutive checks before its alert
    is raised (1 raises at the first check it holds).
    ``shortcut_min_score`` applies to candidates backed by both training-data statistics and
    counterfactual flips; ``shortcut_min_score_pure`` (lower) to such candidates that are
    significantly purer than the genuine class words of the training data: the chance of their
    same-label count if they were as mixed as the purest other well-measured word
    (``evidence["purity_p_value"]``) is at most ``pure_max_p`` (genuine words occur in
    negations and contrasts and are not that pure, and early reliance on such a word should
    not wait for it to dominate; a record without that figure falls back to its purity being
    at least ``pure_purity_lower`` at the lower end of its interval, which a phrase never takes);
    ``shortcut_min_score_partial`` (stricter) to candidates that have only one of the
    two; candidates with attribution evidence alone never alert, because
    genuine sentiment words dominate attributions in a clean run too. A label-pure training word
    that no probe contains is judged by its insertion flips alone, against ``shortcut_min_score``.
    Where the purity p-value exists, no candidate above ``pure_max_p`` alerts at all: in real
    reviews genuine words are often pure in a handful of examples ("unfunny" 19 of 19), and only
    the comparison with the data's well-measured class words tells them from a planted one.
    """

    def __init__(
        self,
        watch_tokens: Iterable[str] | str = (),
        watch_top_k: int = 5,
        watch_probe_fraction: float = 0.5,
        watch_share: float = 0.25,
        invariance_pairs: Iterable[Sequence[str]] = (),
        max_unconverged_fraction: float = 0.2,
        shortcut_min_score: float = 0.5,
        shortcut_min_score_partial: float = 0.65,
        shortcut_min_score_pure: float = 0.15,
        pure_purity_lower: float = 0.9,
        pure_max_p: float = 0.05,
        health_min_probes: int = 8,
        health_max_drop: float = 0.3,
        health_margin: float = 0.2,
        min_checks: int = 1,
        severities: Mapping[str, str] | None = None,
    ):
        if isinstance(watch_tokens, str):
            watch_tokens = (watch_tokens,)
        tokens: list[str] = []
        for token in watch_tokens:
            if not isinstance(token, str) or not token.strip():
                raise ValueError(
                    f"AlertRules: watch_tokens must be non-empty strings, got {token!r}."
                )
            # a phrase is matched word by word, as the attributions split it
            lowered = " ".join(token[a:b].lower() for a, b in word_spans(token))
            if lowered not in tokens:
                tokens.append(lowered)
        self.watch_tokens = tuple(tokens)
        self.watch_top_k = positive_int(watch_top_k, "watch_top_k", "AlertRules")
        self.watch_probe_fraction = _check_fraction("watch_probe_fraction", watch_probe_fraction, True)
        self.watch_share = _check_fraction("watch_share", watch_share, True)
        pairs: list[tuple[str, str]] = []
        for pair in invariance_pairs:
            if (
                isinstance(pair, str)
                or not isinstance(pair, Sequence)
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                raise ValueError(
                    f"AlertRules: each invariance pair must be two probe ids (strings such as "
                    f"('p0', 'p1')), got {pair!r}."
                )
            if pair[0] == pair[1]:
                raise ValueError(f"AlertRules: invariance pair {tuple(pair)!r} names the same probe twice.")
            pairs.append((pair[0], pair[1]))
        self.invariance_pairs = tuple(pairs)
        self.max_unconverged_fraction = _check_fraction("max_unconverged_fraction", max_unconverged_fraction)
        self.shortcut_min_score = _check_fraction("shortcut_min_score", shortcut_min_score, True)
        self.shortcut_min_score_partial = _check_fraction(
            "shortcut_min_score_partial", shortcut_min_score_partial, True
        )
        if self.shortcut_min_score_partial < self.shortcut_min_score:
            raise ValueError(
                "AlertRules: shortcut_min_score_partial is for candidates with less evidence and "
                f"must be at least shortcut_min_score ({self.shortcut_min_score}), got "
                f"{self.shortcut_min_score_partial}."
            )
        self.shortcut_min_score_pure = _check_fraction("shortcut_min_score_pure", shortcut_min_score_pure, True)
        if self.shortcut_min_score_pure > self.shortcut_min_score:
            raise ValueError(
                "AlertRules: shortcut_min_score_pure is for candidates with the strongest training "
                f"evidence and must be at most shortcut_min_score ({self.shortcut_min_score}), got "
                f"{self.shortcut_min_score_pure}."
            )
        self.pure_purity_lower = _check_fraction("pure_purity_lower", pure_purity_lower, True)
        self.pure_max_p = _check_fraction("pure_max_p", pure_max_p, True)
        self.health_min_probes = positive_int(health_min_probes, "health_min_probes", "AlertRules", minimum=2)
        self.health_max_drop = _check_fraction("health_max_drop", health_max_drop, True)
        self.health_margin = _check_fraction("health_margin", health_margin)
        self._best_accuracy: float | None = None
        self._predicted_several = False  # some earlier check spread its predictions over 2+ classes
        self._one_class_checks = 0  # consecutive checks (up to this one) that predicted one class
        self.min_checks = positive_int(min_checks, "min_checks", "AlertRules")
        self.severities = dict(DEFAULT_SEVERITIES)
        for rule, severity in (severities or {}).items():
            if rule not in RULES:
                raise ValueError(f"AlertRules: severities names unknown rule {rule!r}; rules are {RULES}.")
            if severity not in SEVERITIES:
                raise ValueError(
                    f"AlertRules: severity for {rule!r} must be one of {SEVERITIES}, got {severity!r}."
                )
            self.severities[rule] = severity
        self._alerts: dict[str, Alert] = {}
        self._streaks: dict[str, int] = {}

    # ----------------------------------------------------------------------- setup

    def validate(self, probes: ProbeSet) -> None:
        """Check the rules against the probe set, at setup (before any training step)."""
        ids = {p.id for p in probes}
        for a, b in self.invariance_pairs:
            for pid in (a, b):
                if pid not in ids:
                    known = ", ".join(sorted(ids)[:8]) + (", ..." if len(ids) > 8 else "")
                    raise ValueError(
                        f"AlertRules: invariance pair ({a!r}, {b!r}) names probe id {pid!r}, which "
                        f"is not in the probe set (ids: {known}). Give the probes explicit ids."
                    )
        for token in self.absent_watch_tokens(probes):
            logger.warning(
                "AlertRules: watch token %r occurs in no probe, so it can never fire; add probes "
                "that contain it.",
                token,
            )

    def absent_watch_tokens(self, probes: ProbeSet) -> list[str]:
        """The watched words and phrases that occur in no probe: they can never fire (a blind spot
        the summary records)."""
        absent = []
        for token in self.watch_tokens:
            pattern = word_pattern(token)
            if not any(pattern.search(p.text) or (p.text_pair and pattern.search(p.text_pair)) for p in probes):
                absent.append(token)
        return absent

    def shortcut_threshold(self, candidate: Mapping[str, Any]) -> float | None:
        """The score a candidate must reach, from the evidence behind it (``None``: never)."""
        basis = set((candidate.get("evidence") or {}).get("basis") or ())
        if "training" not in basis:
            return None  # without training statistics a genuine class word looks the same
        p_value = (candidate.get("evidence") or {}).get("purity_p_value")
        if p_value is not None and float(p_value) > self.pure_max_p:
            return None  # no purer than the data's own class words: a good class word, rare or not
        if "attribution" not in basis:  # a word no probe contains: its insertion flips alone
            return self.shortcut_min_score if "counterfactual" in basis else None
        if "counterfactual" in basis:
            evidence = candidate.get("evidence") or {}
            # a phrase takes the lower threshold only on the p-value (a pure phrase in a few
            # examples is chance), only when all its words are common ones (with a class word
            # in it, "a forgettable", it may be that word's idiom), and not with a word that
            # leans to its class ("a dull" is as pure as a planted phrase where the other uses
            # of "dull" are negated; a common word that leans only where the phrase is, "that" in
            # "and that is it", is no such word); negations, "not good", never get here: discovery rules them out
            phrase = evidence.get("phrase")
            if (not phrase or (evidence.get("purity_p_value") is not None and evidence.get("common_words")
                               and not evidence.get("leaning_words"))) and self._purer_than_class_words(evidence):
                return self.shortcut_min_score_pure
            return self.shortcut_min_score
        return self.shortcut_min_score_partial

    def meets_shortcut_threshold(self, candidate: Mapping[str, Any]) -> bool:
        """Whether a candidate's score reaches the threshold its evidence allows."""
        threshold = self.shortcut_threshold(candidate)
        return threshold is not None and float(candidate.get("score", 0.0)) >= threshold

    def lead_with_alerting(self, candidates: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The candidates whose score reaches their threshold first, each group by score as
        given: a pair at 0.39 against its 0.5 is no stronger lead than a word that is purer than
        the class words at 0.34 against 0.15. This is the order summary, show and report use."""
        return sorted(candidates, key=lambda c: not self.meets_shortcut_threshold(c))

    def _purer_than_class_words(self, evidence: Mapping[str, Any]) -> bool:
        """Whether the training data show the word purer than its genuine class words."""
        p_value = evidence.get("purity_p_value")
        if p_value is not None:
            return float(p_value) <= self.pure_max_p
        purity_lower = evidence.get("purity_lower")  # no well-measured words to compare with
        return purity_lower is not None and purity_lower >= self.pure_purity_lower

    # ----------------------------------------------------------------------- per check

    @property
    def alerts(self) -> list[Alert]:
        """Every alert so far, in the order they were first raised."""
        return list(self._alerts.values())

    def evaluate(self, snapshot: Snapshot, candidates: Sequence[Mapping[str, Any]] = ()) -> list[Alert]:
        """Apply every rule to one check; return the alerts raised for the first time.
        ``candidates`` are :meth:`ShortcutDiscovery.rank` rows."""
        firing: list[tuple[str, str, str, str | None, dict[str, Any]]] = []
        firing += self._watch_token(snapshot)
        firing += self._invariance(snapshot)
        firing += self._shortcut(candidates)
        firing += self._model_health(probe_health(snapshot))
        firing += self._convergence(snapshot)

        new: list[Alert] = []
        fired_keys = set()
        for rule, key, message, token, evidence in firing:
            fired_keys.add(key)
            self._streaks[key] = self._streaks.get(key, 0) + 1
            if self._streaks[key] < self.min_checks:
                continue
            evidence = json_safe(evidence)
            alert = self._alerts.get(key)
            if alert is None:
                alert = Alert(
                    rule=rule,
                    severity=self.severities[rule],
                    message=message,
                    key=key,
                    token=token,
                    first_step=snapshot.step,
                    first_epoch=snapshot.epoch,
                    first_check=snapshot.check_index,
                    evidence=evidence,
                )
                self._alerts[key] = alert
                new.append(alert)
            alert.message, alert.evidence, alert.token, alert.active = message, evidence, token, True
            alert.last_step, alert.last_epoch, alert.last_check = snapshot.step, snapshot.epoch, snapshot.check_index
        for key in list(self._streaks):
            if key not in fired_keys:
                del self._streaks[key]
        for key, alert in self._alerts.items():
            if key not in fired_keys:
                alert.active = False
        return new

    def _watch_token(self, snapshot: Snapshot):
        for token in self.watch_tokens:
            phrase = token.split(" ")
            rows = []
            for attribution in snapshot.attributions:
                rows += _watched_occurrence(attribution, phrase, self.watch_top_k)
            if not rows:
                continue
            in_top = sum(r["in_top"] for r in rows) / len(rows)
            mean_share = sum(r["share"] for r in rows) / len(rows)
            if in_top >= self.watch_probe_fraction or mean_share >= self.watch_share:
                rows.sort(key=lambda r: -r["share"])
                yield (
                    "watch_token",
                    f"watch_token:{token}",
                    f"watched token {token!r} is in the top {self.watch_top_k} words of "
                    f"{in_top:.0%} of the {len(rows)} probes containing it (mean share {mean_share:.2f}).",
                    token,
                    {"n_probes": len(rows), "top_k": self.watch_top_k, "top_k_fraction": in_top,
                     "mean_share": mean_share, "probes": rows[:EVIDENCE_PROBES]},
                )

    def _invariance(self, snapshot: Snapshot):
        by_id: dict[str, ProbeAttribution] = {}
        for attribution in snapshot.attributions:
            by_id.setdefault(attribution.probe_id, attribution)
        for a, b in self.invariance_pairs:
            first, second = by_id.get(a), by_id.get(b)
            if first is None or second is None or first.prediction == second.prediction:
                continue
            differing = _differing_words(first, second) + _differing_words(second, first)
            differing.sort(key=lambda d: -abs(d["share"]))
            yield (
                "invariance",
                f"invariance:{a}|{b}",
                f"probes {a!r} and {b!r} should get the same prediction but get "
                f"{first.prediction_name!r} and {second.prediction_name!r}.",
                differing[0]["word"] if differing else None,
                {"probes": {pid: {"prediction": att.prediction, "prediction_name": att.prediction_name,
                                  "target": att.target}
                            for pid, att in ((a, first), (b, second))},
                 "differing_words": differing},
            )

    def _shortcut(self, candidates: Sequence[Mapping[str, Any]]):
        for candidate in candidates:
            if not self.meets_shortcut_threshold(candidate):
                continue
            threshold, score = self.shortcut_threshold(candidate), float(candidate.get("score", 0.0))
            word = str(candidate["word"])
            yield (
                "shortcut",
                f"shortcut:{word}",
                f"the model may be using {word!r} as a shortcut (score {score:.2f}, threshold "
                f"{threshold:.2f}).",
                word,
                {**dict(candidate.get("evidence") or {}), "score": score, "threshold": threshold},
            )

    def _model_health(self, health: Mapping[str, Any]):
        """One class takes every probe, or the accuracy on labelled probes collapsed."""
        predictions, labels = health["prediction_counts"], health["label_counts"]
        n, accuracy = health["n_probes"], health["accuracy"]
        only = next(iter(predictions), None)
        # Probes of the classes the model never predicts: a model that tells classes apart misses
        # all of them by chance rarely only when they are several (each a coin flip: 0.5 ** 5 = 3%),
        # so on an imbalanced probe set a majority-only prediction with one miss is no collapse.
        others = health["n_labelled"] - labels.get(only, 0)
        one_class = (n >= self.health_min_probes and len(predictions) == 1 and len(labels) >= 2
                     and others >= HEALTH_MIN_OTHER_CLASS_PROBES)
        self._one_class_checks = self._one_class_checks + 1 if one_class else 0
        collapsed = self._predicted_several
        self._predicted_several = self._predicted_several or len(predictions) >= 2
        # A model often predicts one class before it has learned anything: that is a collapse
        # only after it had told classes apart, or when it still does so at the next check.
        if one_class and (collapsed or self._one_class_checks >= 2):
            yield (
                "model_health",
                "model_health:one_class",
                f"the model predicts {only!r} for all {n} probes, whose labels hold {len(labels)} classes "
                f"({others} probes of the others).",
                None,
                {"condition": "one_class", "n_other_class_probes": others, **health},
            )
        if accuracy is None or health["n_labelled"] < self.health_min_probes:
            return
        best, chance = self._best_accuracy, 1.0 / max(2, len(labels))
        self._best_accuracy = accuracy if best is None else max(best, accuracy)
        if best is not None and best - accuracy >= self.health_max_drop:
            reason = f"fell from {best:.0%} at an earlier check to {accuracy:.0%}"
        elif accuracy < chance - self.health_margin:
            reason = f"is {accuracy:.0%}, below chance ({chance:.0%})"
        else:
            return
        yield (
            "model_health",
            "model_health:accuracy",
            f"the accuracy on the {health['n_labelled']} labelled probes {reason}.",
            None,
            {"condition": "accuracy", "best_accuracy": best, "chance": chance, **health},
        )

    def _convergence(self, snapshot: Snapshot):
        total = len(snapshot.attributions)
        unconverged = [a for a in snapshot.attributions if not a.converged]
        if not total or len(unconverged) / total <= self.max_unconverged_fraction:
            return
        unconverged.sort(key=lambda a: -(a.rel_delta if a.rel_delta == a.rel_delta else math.inf))
        fraction = len(unconverged) / total
        yield (
            "convergence",
            "convergence",
            f"{fraction:.0%} of the probe attributions did not converge (limit "
            f"{self.max_unconverged_fraction:.0%}); raise n_steps or max_steps for trustworthy figures.",
            None,
            {"n_unconverged": len(unconverged), "n_probes": total, "fraction": fraction,
             "limit": self.max_unconverged_fraction,
             "worst": [{"probe_id": a.probe_id, "target": a.target, "rel_delta": a.rel_delta,
                        "n_steps": a.n_steps} for a in unconverged[:EVIDENCE_PROBES]]},
        )

    # ----------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "alerts": [a.to_dict() for a in self._alerts.values()],
                "streaks": dict(self._streaks), "best_accuracy": self._best_accuracy,
                "predicted_several": self._predicted_several, "one_class_checks": self._one_class_checks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; an empty mapping means no alerts yet."""
        state = versioned_state(state, 1, "AlertRules")
        alerts = [Alert.from_dict(a) for a in state.get("alerts", [])]
        self._alerts = {a.key: a for a in alerts}
        self._streaks = {str(k): int(v) for k, v in state.get("streaks", {}).items()}
        best = state.get("best_accuracy")
        self._best_accuracy = float(best) if is_int(best) or isinstance(best, float) else None
        self._predicted_several = state.get("predicted_several") is True
        one_class_checks = state.get("one_class_checks", 0)
        self._one_class_checks = one_class_checks if is_int(one_class_checks) else 0


def _watched_occurrence(attribution: ProbeAttribution, phrase: list[str], top_k: int) -> list[dict[str, Any]]:
    """The watched word or phrase in one probe: its share (occurrences summed), its best rank
    among the probe's words (a phrase counts as one word), and whether it is in the top
    ``top_k``. Only a share toward the target counts, and in a probe of few words the top is
    at most half of them: else a word of a five-word probe would always be "in the top 5"."""
    words = [w.lower() for w in attribution.words]
    shares = [float(s) for s in attribution.word_shares]
    n = len(phrase)
    starts = [i for i in range(len(words) - n + 1) if words[i : i + n] == phrase]
    if not starts:
        return []
    covered = {i + j for i in starts for j in range(n)}
    units = [sum(shares[i : i + n]) for i in starts]
    others = [s for i, s in enumerate(shares) if i not in covered]
    share = sum(units)
    rank = 1 + sum(s > max(units) for s in others)
    limit = min(top_k, max(1, (len(others) + 1) // 2))
    return [{"probe_id": attribution.probe_id, "target": attribution.target, "share": share, "rank": rank,
             "in_top": bool(max(units) > 0 and rank <= limit)}]


def _differing_words(one: ProbeAttribution, other: ProbeAttribution) -> list[dict[str, Any]]:
    """Words of ``one`` (lowercased, counted) beyond those ``other`` has, with their share in ``one``."""
    spare = Counter(w.lower() for w in other.words)
    shares: dict[str, float] = defaultdict(float)
    for word, share in zip(one.words, one.word_shares):
        lowered = word.lower()
        if spare[lowered] > 0:
            spare[lowered] -= 1
        else:
            shares[lowered] += float(share)
    return [{"word": w, "probe_id": one.probe_id, "share": s} for w, s in shares.items()]
