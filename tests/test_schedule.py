"""``Schedule``: when a check is due, counted the way each integration counts (Lightning and
Flair ask at an epoch's end or a step; the HF callback counts boundaries passed)."""

from __future__ import annotations

import pytest

from explain_callbacks.options import MonitorOptions, Schedule


def test_default_is_every_epoch():
    schedule = Schedule()
    assert (schedule.every_n_epochs, schedule.every_n_steps) == (1, None)
    assert [schedule.due_at_epoch_end(e) for e in range(4)] == [True] * 4
    assert not any(schedule.due_at_step(s) for s in range(0, 50))


def test_every_n_epochs_counts_epochs_from_zero():
    schedule = Schedule(every_n_epochs=3)
    assert [e for e in range(10) if schedule.due_at_epoch_end(e)] == [2, 5, 8]
    assert not any(schedule.due_at_step(s) for s in range(0, 50))


def test_every_n_steps_replaces_the_default_epoch_cadence():
    schedule = Schedule(every_n_steps=5)
    assert schedule.every_n_epochs is None
    assert [s for s in range(0, 21) if schedule.due_at_step(s)] == [5, 10, 15, 20]  # never at step 0
    assert not any(schedule.due_at_epoch_end(e) for e in range(5))


def test_boundaries_passed_by_steps():
    schedule = Schedule(every_n_steps=4)
    assert [schedule.boundaries_passed(s, epoch=0.0) for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def hf_epochs(epochs: int, steps_per_epoch: int) -> list[tuple[int, float]]:
    """(global_step, state.epoch) after each optimiser step, computed as the HF Trainer does:
    ``epoch + (step + 1) / steps_in_epoch``, whose floats land just under a whole epoch."""
    out, step = [], 0
    for epoch in range(epochs):
        for i in range(steps_per_epoch):
            step += 1
            out.append((step, epoch + (i + 1) / steps_per_epoch))
    return out


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("steps_per_epoch", [3, 7, 49])
def test_boundaries_passed_by_epochs_grows_once_per_due_epoch_at_its_last_step(every: int, steps_per_epoch: int):
    schedule = Schedule(every_n_epochs=every)
    seen, due_at = 0, []
    for step, epoch in hf_epochs(6, steps_per_epoch):
        passed = schedule.boundaries_passed(step, epoch)
        assert passed >= seen
        if passed > seen:
            due_at.append(step)
            seen = passed
    assert due_at == [steps_per_epoch * e for e in range(every, 7, every)]


def test_an_epoch_a_float_hair_under_whole_still_counts():
    schedule = Schedule(every_n_epochs=2)
    assert schedule.boundaries_passed(100, 1.9999999) == 1
    assert schedule.boundaries_passed(75, 1.5) == 0
    assert schedule.boundaries_passed(25, 0.5) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"every_n_epochs": 2, "every_n_steps": 10}, "not both"),
    ({"every_n_epochs": None, "every_n_steps": None}, "set every_n_epochs or every_n_steps"),
    ({"every_n_epochs": 0}, "every_n_epochs must be a positive int"),
    ({"every_n_epochs": -1}, "every_n_epochs must be a positive int"),
    ({"every_n_epochs": True}, "every_n_epochs must be a positive int"),
    ({"every_n_epochs": 1.5}, "every_n_epochs must be a positive int"),
    ({"every_n_steps": 0}, "every_n_steps must be a positive int"),
    ({"every_n_steps": True}, "every_n_steps must be a positive int"),
    ({"every_n_steps": "10"}, "every_n_steps must be a positive int"),
    ({"every_n_steps": 2.0}, "every_n_steps must be a positive int"),
])
def test_bad_schedules_are_refused_with_what_was_wrong(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


def test_the_options_refuse_a_bad_schedule_at_construction():
    assert MonitorOptions(every_n_steps=50).schedule == Schedule(every_n_epochs=None, every_n_steps=50)
    with pytest.raises(ValueError, match="every_n_steps must be a positive int"):
        MonitorOptions(every_n_steps=0)
    with pytest.raises(ValueError, match="not both"):
        MonitorOptions(every_n_epochs=3, every_n_steps=50)
