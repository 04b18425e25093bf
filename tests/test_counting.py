"""``ForwardCounter``: forwards land in the open phase, and a phase's seconds exclude the phases
opened inside it (the calibration the first ``attribute`` runs is not counted twice)."""

from __future__ import annotations

import time

import torch

from explain_callbacks.attribution.counting import ForwardCounter


def test_nested_phases_count_apart_and_time_exclusively():
    counter = ForwardCounter()
    start = counter.totals()
    began = time.perf_counter()
    with counter.phase("attribution"):
        counter.count(torch.zeros(3, 5, dtype=torch.long), gradients=True)
        with counter.phase("calibration"):
            counter.count(torch.zeros(2, 4, dtype=torch.long))
            time.sleep(0.05)
        counter.count_records(3)
    wall = time.perf_counter() - began
    counter.count(torch.zeros(1, 7, dtype=torch.long))  # outside any phase
    counts = counter.since(start)
    a, c = counts["attribution"], counts["calibration"]
    assert (a.forwards, a.texts, a.tokens, a.gradient_evaluations, a.records) == (1, 3, 15, 3, 3)
    assert (c.forwards, c.texts, c.tokens, c.gradient_evaluations) == (1, 2, 8, 0)
    assert counts["other"].tokens == 7
    assert c.seconds >= 0.05 and a.seconds + c.seconds <= wall + 1e-6  # the sleep is calibration's alone
    later = counter.totals()
    with counter.phase("attribution"):
        counter.count(torch.zeros(4, 2, dtype=torch.long), gradients=True)
    assert counter.since(later)["attribution"].gradient_evaluations == 4
    assert counter.since(later)["calibration"].forwards == 0
