"""The adaptive trapezoid rule on integrands whose integral is known."""

from __future__ import annotations

import math

import pytest

from explain_callbacks.attribution.quadrature import interval_errors, points_to_add, trapezoid_weights, uniform_points


def _sharp(alpha: float) -> tuple[float, float]:
    """F and dF/dalpha of a logistic step at alpha = 0.1: the shape of a confident model's path."""
    z = 60 * (alpha - 0.1)
    f = 1 / (1 + math.exp(-z))
    return f, 60 * f * (1 - f)


def _refine(points: list[float], tolerance: float, budget: int) -> tuple[list[float], float, int]:
    evaluated = {a: _sharp(a) for a in points}
    rounds = 0
    while True:
        points = sorted(evaluated)
        values = [evaluated[a][0] for a in points]
        slopes = [evaluated[a][1] for a in points]
        errors = interval_errors(points, slopes, values)
        gap = values[-1] - values[0]
        new = points_to_add(points, errors, tolerance * abs(gap), budget - len(points))
        if abs(sum(errors)) <= tolerance * abs(gap) or not new:
            return points, sum(errors) / gap, rounds
        assert not set(new) & set(points)
        evaluated.update({a: _sharp(a) for a in new})
        rounds += 1


def test_weights_integrate_linear_functions_exactly_on_uneven_points():
    points = [0.0, 0.1, 0.15, 0.5, 1.0]
    weights = trapezoid_weights(points)
    assert sum(weights) == pytest.approx(1.0)
    assert sum(w * (3 * a + 1) for w, a in zip(weights, points)) == pytest.approx(2.5)


def test_interval_errors_sum_to_the_whole_integral_error():
    points = uniform_points(8)
    values = [_sharp(a)[0] for a in points]
    slopes = [_sharp(a)[1] for a in points]
    errors = interval_errors(points, slopes, values)
    whole = sum(w * s for w, s in zip(trapezoid_weights(points), slopes)) - (values[-1] - values[0])
    assert sum(errors) == pytest.approx(whole)
    assert max(range(8), key=lambda i: abs(errors[i])) in (0, 1), "the error sits at the step"


def test_refinement_converges_with_fewer_points_than_a_uniform_grid():
    points, rel_error, rounds = _refine(uniform_points(8), 0.01, 257)
    assert abs(rel_error) <= 0.01 and rounds >= 2
    uniform = next(n for n in (16, 32, 64, 128, 256)
                   if abs(interval_sum(uniform_points(n))) <= 0.01 * abs(_sharp(1)[0] - _sharp(0)[0]))
    assert len(points) < uniform + 1
    assert max(points[i + 1] - points[i] for i in range(len(points) - 1)) == pytest.approx(1 / 8), "flat parts stay coarse"


def interval_sum(points: list[float]) -> float:
    values = [_sharp(a)[0] for a in points]
    slopes = [_sharp(a)[1] for a in points]
    return sum(interval_errors(points, slopes, values))


def test_budget_and_minimum_width_stop_refinement():
    points, rel_error, _ = _refine(uniform_points(4), 1e-9, 12)
    assert len(points) <= 12 and abs(rel_error) > 1e-9
    assert points_to_add([0.0, 1 / 8192], [1.0], 0.0, 10) == []
