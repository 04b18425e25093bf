"""Adaptive trapezoid rule for the Integrated Gradients path integral.

Every gradient evaluation at a point ``alpha`` of the path also yields the forward value
``F(alpha)``. So the exact integral of the path derivative over any interval is known:
``F(b) - F(a)``. The trapezoid estimate of each interval can therefore be checked on its own,
and only the intervals that miss are bisected. Points already evaluated are kept, so a probe
that needs refining costs the new midpoints only, not a fresh pass at double the steps.

These are pure functions over plain lists; the engine does the gradient evaluations.
"""

from __future__ import annotations

from typing import Sequence

MIN_WIDTH = 1.0 / 4096


def uniform_points(intervals: int) -> list[float]:
    """``intervals + 1`` equally spaced points on [0, 1], both ends included."""
    return [i / intervals for i in range(intervals + 1)]


def trapezoid_weights(points: Sequence[float]) -> list[float]:
    """Weights of the trapezoid rule on sorted, possibly uneven ``points`` spanning [0, 1]."""
    n = len(points)
    weights = [0.0] * n
    for i in range(n - 1):
        half = (points[i + 1] - points[i]) / 2
        weights[i] += half
        weights[i + 1] += half
    return weights


def interval_errors(points: Sequence[float], slopes: Sequence[float], values: Sequence[float]) -> list[float]:
    """Trapezoid estimate minus the exact integral ``values[i+1] - values[i]``, per interval.

    ``slopes`` are the path derivatives dF/dalpha at ``points``; their sum over intervals is the
    convergence delta of the whole integral."""
    return [
        (points[i + 1] - points[i]) * (slopes[i] + slopes[i + 1]) / 2 - (values[i + 1] - values[i])
        for i in range(len(points) - 1)
    ]


def points_to_add(points: Sequence[float], errors: Sequence[float], allowed_error: float, budget: int) -> list[float]:
    """Midpoints of the intervals with the largest errors, until the error left in the other
    intervals is at most ``allowed_error / 4`` (a bisected interval's trapezoid error falls about
    fourfold) or ``budget`` points have been chosen. Intervals narrower than ``MIN_WIDTH`` are
    not split."""
    order = sorted(range(len(errors)), key=lambda i: -abs(errors[i]))
    left = sum(abs(e) for e in errors)
    chosen: list[float] = []
    for i in order:
        if len(chosen) >= budget or left <= allowed_error / 4:
            break
        a, b = points[i], points[i + 1]
        if b - a >= 2 * MIN_WIDTH:
            chosen.append((a + b) / 2)
        left -= abs(errors[i])
    return chosen
