"""A candidate's score: its purity gate times the model's reliance on it, each figure of
reliance taken at the lower end of its interval for the probes behind it (:mod:`.evidence`).

Evidence against reliance lowers the score: where inserting the candidate into probes of other
classes was tested and its insertion effect is not significant, the score is capped at the
upper end of the insertion flip rate's interval (``0 of 6`` flips: at most 0.31). A genuine
class word removed from its own probes may change them; a shortcut also moves texts it is put
into.
"""

from __future__ import annotations

from typing import Any

from explain_callbacks.detection.counterfactual import EFFECT_MAX_P
from explain_callbacks.detection.evidence import wilson_lower_bound, wilson_upper_bound
from explain_callbacks.detection.purity import PURITY_GATE


def gate(row: dict[str, Any]) -> float:
    """How far the unit's purity above the prior speaks for a shortcut: none below
    ``PURITY_GATE``'s low end, fully from its high end. Where the data's purest well-measured
    class word stays below the low end (label noise), a word purer than it opens the gate from
    its level instead. Without training data a flat 0.5 (ranked, never alerted)."""
    if not row["train"]:
        return 0.5
    low, high = PURITY_GATE
    excess = row["train"]["purity_excess"]
    reference = row.get("reference_excess")
    if reference is not None and reference < low:
        low = reference
    return min(1.0, max(0.0, (excess - low) / (high - low)))


def effect_significant(flips: dict[str, Any]) -> bool:
    """Whether the insertion effect counts: its false-discovery adjusted p-value (over the
    candidates the check tested) at most ``EFFECT_MAX_P``; the raw one where no family was formed."""
    p = flips.get("effect_q", flips.get("effect_p"))
    return p is not None and p <= EFFECT_MAX_P


def reliance_parts(row: dict[str, Any], with_flips: bool = True) -> dict[str, float]:
    """Each figure of evidence for reliance, as the lower end of its interval for its count."""
    att = row["attribution"]
    n = att.get("n_probes") or 0
    parts = {"dominance": wilson_lower_bound(att["dominance"] * n, n)}
    error = att.get("error_dominance") or {}
    n_wrong = att.get("n_wrong_by_class") or {}
    key = str(row["label"]) if row["label"] is not None else max(error, key=error.get, default=None)
    if key is not None and error.get(key) is not None:
        count = int(n_wrong.get(key, att.get("n_wrong_probes") or 0))
        parts["wrong_prediction_dominance"] = wilson_lower_bound(error[key] * count, count)
    if with_flips:
        flips = row["flips"] or {}
        if flips.get("removal") is not None:
            parts["removal"] = wilson_lower_bound(flips["removal"] * flips["n_removal"], flips["n_removal"])
        if flips.get("insertion") is not None:
            low = wilson_lower_bound(flips["insertion"] * flips["n_insertion"], flips["n_insertion"])
            parts["insertion"] = max(0.0, low - (flips.get("control_flip") or 0.0))
        if flips.get("effect") is not None and effect_significant(flips):
            parts["insertion_effect"] = max(0.0, flips["effect"])
    return parts


def reliance(row: dict[str, Any], with_flips: bool = True) -> float:
    """The strongest bounded evidence that the model relies on the unit for ``row["label"]``,
    capped by the evidence against (see the module). For a phrase with a word that leans to its
    class, only the rise that inserting the phrase brings beyond inserting that word counts."""
    flips = row["flips"] or {}
    if row.get("leaning"):
        return max(0.0, flips["effect"]) if with_flips and effect_significant(flips) else 0.0
    parts = reliance_parts(row, with_flips)
    best = max(parts.values(), default=0.0)
    if with_flips and flips.get("insertion") is not None and not effect_significant(flips):
        best = min(best, wilson_upper_bound(flips["insertion"] * flips["n_insertion"], flips["n_insertion"]))
    return best


def score(row: dict[str, Any]) -> float:
    return gate(row) * reliance(row)
