"""Counterfactual tests of shortcut candidates: the model's own forward on probes with the
candidate removed, or inserted where it sits in the training texts.

Every candidate a check tests goes into one list of edited texts, run through ``predict_fn`` in
one call (shared batches); the probes' own predictions and the control insertions are computed
once a check and shared by every candidate (``Forwards``, which also counts the texts run).
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from scipy import stats

from explain_callbacks.attribution.records import ProbeAttribution, Snapshot
from explain_callbacks.detection.alerts import word_pattern
from explain_callbacks.detection.purity import PurityJudge, edge_text

logger = logging.getLogger(__name__)

PredictFn = Callable[[list[str]], Sequence[Any]]  # class ids, or class probabilities per text

EFFECT_MAX_P = 0.05
EFFECT_MIN_PROBES = 4


@dataclass
class Forwards:
    """What one check's counterfactuals share: the probes' own predictions, the control words
    and their insertions, and ``n``, the texts run through ``predict_fn``."""

    original: Any = None
    controls: list[str] = field(default_factory=list)
    control_probs: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    n: int = 0
    started: bool = False


def run_counterfactuals(rows: list[dict[str, Any]], snapshot: Snapshot, predict_fn: PredictFn,
                        forwards: Forwards, judge: PurityJudge, max_probes: int) -> None:
    """Removal and insertion flips of each row's unit (at most ``max_probes`` probes per
    direction) and, when ``predict_fn`` gives class probabilities and the statistics give control
    words, its insertion effect and the controls' own flip rate, into ``row["flips"]``."""
    probes: dict[str, ProbeAttribution] = {}
    for attribution in snapshot.attributions:
        if attribution.text_pair is None:
            probes.setdefault(attribution.probe_id, attribution)
    if not probes or not rows:
        return
    if not forwards.started:
        forwards.started = True
        forwards.original = predict(predict_fn, [a.text for a in probes.values()])
        forwards.controls = judge.control_words()
        forwards.n += len(probes)
    if forwards.original is None:
        logger.warning(
            "ShortcutDiscovery: predict_fn does not return one class id per text (multi-label or "
            "regression model?); counterfactual flips are skipped."
        )
        return
    ids, probs = forwards.original
    original = dict(zip(probes, ids))
    controls = forwards.controls if probs is not None else []
    control_probs = forwards.control_probs
    by_confidence = sorted(probes, key=lambda pid: -margin(probes[pid]))
    variants: list[str] = []
    new_controls: list[tuple[str, str, str]] = []
    plans = []  # per row: removal and insertion lists of (variant index, probe id), flip probes, position
    for row in rows:
        text = edge_text(row["word"])
        pattern = word_pattern(text)
        label = row["label"]
        # a phrase judged beyond its class word goes between words: in front, a class word's phrase
        # reads as the data's own sentence opening ("a clumsy ..."), which the word alone does not
        fixed = judge.statistics.has_data and not row.get("leaning")
        position = row.setdefault("position", judge.position(row["word"])[0] if fixed else "inside")
        removal = []
        for pid, attribution in probes.items():
            if len(removal) < max_probes and pattern.search(attribution.text) and (
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
            n_flip = min(max_probes, (len(others) + 1) // 2)
            n_all = min(len(others), 2 * max_probes) if controls else n_flip
            for pid in others[:n_all]:
                insertion.append((len(variants), pid))
                variants.append(inserted(text, probes[pid].text, position))
                for control in controls + row.get("leaning", []):
                    key = (pid, control, position)
                    if key not in control_probs and key not in new_controls:
                        new_controls.append(key)
        plans.append((removal, insertion, n_flip, position))
    control_texts = [inserted(c, probes[pid].text, position) for pid, c, position in new_controls]
    result = predict(predict_fn, variants + control_texts) if variants or control_texts else ([], None)
    if result is None or len(result[0]) != len(variants) + len(control_texts):
        return
    predicted, predicted_probs = result
    forwards.n += len(variants) + len(control_texts)
    if predicted_probs is not None:
        for key, p in zip(new_controls, predicted_probs[len(variants):]):
            control_probs[key] = p
    for row, (removal, insertion, n_flip, position) in zip(rows, plans):
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
                        "n_removal": len(removal), "n_insertion": len(flip_probes), "position": position}
        if controls and predicted_probs is not None and insertion:
            leaning = row.get("leaning", [])
            row["flips"].update(insertion_effect(row["label"], [
                (predicted_probs[i], [control_probs[(pid, c, position)] for c in controls],
                 [control_probs[(pid, w, position)] for w in leaning]) for i, pid in insertion]))
            row["flips"]["controls"] = list(controls) + list(leaning)
            if flip_probes:  # how often inserting a neutral word there does the same
                hits = [argmax(control_probs[(pid, c, position)]) == row["label"]
                        for _, pid in flip_probes for c in controls]
                row["flips"]["control_flip"] = sum(hits) / len(hits)


def inserted(unit: str, text: str, position: str = "inside") -> str:
    """``text`` with ``unit`` in front (``"start"``), appended (``"end"``) or after one of its
    words, at a place fixed by the text (a hash, no random draw), so the unit and its controls go
    to the same place. The controls inserted at the same place show what any word there does (a
    tiny BERT that reads positions turns probes with "the" in front as often as with its planted
    word)."""
    if position == "start":
        return f"{unit} {text}"
    if position == "end":
        return f"{text} {unit}"
    words = text.split(" ")
    words.insert(1 + zlib.crc32(text.encode("utf-8")) % len(words), unit)
    return " ".join(words)


def insertion_effect(label: int, probes: list[tuple[Sequence[float], list[Sequence[float]], list[Sequence[float]]]]
                     ) -> dict[str, Any]:
    """Mean rise of ``label``'s probability with the unit inserted beyond the controls' (at the
    same place), over ``probes`` ((with the unit, [with each control], [with each leaning word
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


def argmax(probabilities: Sequence[float]) -> int:
    return max(range(len(probabilities)), key=lambda i: (probabilities[i], -i))


def margin(attribution: ProbeAttribution) -> float:
    """How confident the model was in its prediction: top logit minus the runner-up
    (``-inf`` when the record has no usable logits, so such probes come last)."""
    scores, prediction = attribution.scores, attribution.prediction
    if len(scores) < 2 or not isinstance(prediction, int) or not 0 <= prediction < len(scores):
        return -math.inf
    others = [s for i, s in enumerate(scores) if i != prediction]
    return float(scores[prediction]) - max(float(s) for s in others)


def predict(predict_fn: PredictFn, texts: list[str]) -> tuple[list[int], list[list[float]] | None] | None:
    """Class ids for ``texts`` and, when ``predict_fn`` returns class probabilities (one sequence
    of floats per text), those too; ``None`` when the model's outputs are neither."""
    out = list(predict_fn(texts))
    if len(out) != len(texts):
        raise ValueError(
            f"ShortcutDiscovery: predict_fn returned {len(out)} predictions for {len(texts)} texts; "
            "it must return one class id per text (or one row of class probabilities)."
        )
    if out and all(is_probabilities(p) for p in out):
        probs = [[float(x) for x in p] for p in out]
        return [argmax(p) for p in probs], probs
    ids = []
    for p in out:
        p = p.item() if hasattr(p, "item") and getattr(p, "ndim", 0) == 0 else p
        if isinstance(p, float) and p.is_integer():
            p = int(p)
        if not isinstance(p, int):
            return None
        ids.append(int(p))
    return ids, None


def is_probabilities(value: Any) -> bool:
    """A row of two or more class probabilities (floats summing to one), not a multi-label list of ids."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        return False
    if not all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in value):
        return False
    return abs(sum(value) - 1.0) < 1e-3
