"""How much a figure of shortcut evidence can be trusted, for the number of probes or examples
behind it, and the false-discovery control over everything one check tests.

Every rate that enters a candidate's score enters as the lower end of its Wilson interval
(``CONFIDENCE``, two-sided: the one-sided 95% bound) for the count behind it: a removal flip of
the one probe that holds a word is ``1 of 1``, whose lower end is 0.27, not a full score of 1.0. A mean of per-probe
strengths in [0, 1] (dominance) is bounded the same way, with the strengths' sum as successes.

The purity p-values of every word, phrase, edge tag and outside-probe word a check considers
are one family, and so are the insertion-effect p-values of the candidates it tests: each is
judged by its Benjamini-Hochberg adjusted value (:func:`fdr_adjusted`, scipy's
``false_discovery_control``) at ``FDR_LEVEL``. The purity tests are discrete (Fisher's exact
test): those that could not reach significance even at full purity leave the family first
(:func:`testable`, Tarone's rule as Gilbert 2005 uses it for the false discovery rate). The purity family is fixed over a run (the probe
set is fixed, and the training statistics are complete from the first check on in every
integration that reads the train dataset), so later checks retest the same hypotheses on the
same counts and add no discoveries of their own.
"""

from __future__ import annotations

import math
from typing import Sequence

from scipy import stats

# two-sided Wilson interval of every rate entering a score: its lower end is the one-sided 95% bound
CONFIDENCE = 0.90
FDR_LEVEL = 0.05  # Benjamini-Hochberg level over a check's family of tests


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(successes: float, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``successes`` in ``trials`` (successes may be a sum of
    per-trial strengths in [0, 1]); ``(0, 1)`` without trials."""
    if trials <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = min(1.0, max(0.0, successes / trials))
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_lower_bound(successes: float, trials: int, confidence: float = CONFIDENCE) -> float:
    """Lower end of the Wilson score interval for a proportion."""
    return wilson_interval(successes, trials, confidence)[0]


def wilson_upper_bound(successes: float, trials: int, confidence: float = CONFIDENCE) -> float:
    """Upper end of the Wilson score interval for a proportion."""
    return wilson_interval(successes, trials, confidence)[1]


def rate_lower(rate: float | None, n: int) -> float | None:
    """The lower bound of a measured rate over ``n`` probes (``None`` stays ``None``)."""
    return None if rate is None else wilson_lower_bound(rate * n, n)


def testable(min_p_values: Sequence[float], level: float = FDR_LEVEL) -> list[bool]:
    """Which hypotheses of a family of discrete tests can be rejected at all (Tarone 1990, for
    the false discovery rate Gilbert 2005): the smallest ``K`` such that at most ``K`` of them can
    reach a p-value of ``level / K`` (``min_p_values``: the smallest p-value each test can give,
    for a word in 12 examples the p-value of 12 of 12); those are the family that Benjamini-
    Hochberg then controls. A word in three training examples can never be purer than the
    data's class words by a test, and leaving it in the family would only dilute the others."""
    m = len(min_p_values)
    ordered = sorted(min_p_values)
    for k in range(1, m + 1):
        # how many tests can reach level / k
        if sum(1 for p in ordered if p <= level / k) <= k:
            return [p <= level / k for p in min_p_values]
    return [True] * m


def fdr_adjusted(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values) of one family, in the given order."""
    if not p_values:
        return []
    return [float(q) for q in stats.false_discovery_control([min(1.0, max(0.0, p)) for p in p_values],
                                                            method="bh")]
