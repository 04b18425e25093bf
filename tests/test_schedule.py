"""``Schedule`` and the monitor's position in it: when a check is due, counted the way each
integration counts (Lightning and Flair ask at an epoch's end or a step; the HF callback at its
events, with fractional epochs). The position is the monitor's, in its ``state_dict``."""

from __future__ import annotations

import pytest

from explain_callbacks.options import MonitorOptions, Schedule


def due_epochs(schedule: Schedule, n: int) -> list[int]:
    """The epochs (from 0) at whose end the boundary grows."""
    return [e for e in range(n) if schedule.boundary(epochs=e + 1) > schedule.boundary(epochs=e)]


def test_default_is_every_epoch():
    schedule = Schedule()
    assert (schedule.every_n_epochs, schedule.every_n_steps) == (1, None)
    assert due_epochs(schedule, 4) == [0, 1, 2, 3]
    assert schedule.boundary(step=50) is None  # an epoch schedule ignores steps


def test_every_n_epochs_counts_epochs_from_zero():
    assert due_epochs(Schedule(every_n_epochs=3), 10) == [2, 5, 8]


def test_every_n_steps_replaces_the_default_epoch_cadence():
    schedule = Schedule(every_n_steps=5)
    assert schedule.every_n_epochs is None
    assert [s for s in range(1, 21) if schedule.boundary(step=s) > schedule.boundary(step=s - 1)] == [5, 10, 15, 20]
    assert schedule.boundary(epochs=3) is None


def test_boundaries_passed_by_steps():
    schedule = Schedule(every_n_steps=4)
    assert [schedule.boundary(step=s, epochs=0.0) for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


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
        passed = schedule.boundary(step, epoch)
        assert passed >= seen
        if passed > seen:
            due_at.append(step)
            seen = passed
    assert due_at == [steps_per_epoch * e for e in range(every, 7, every)]


def test_an_epoch_a_float_hair_under_whole_still_counts():
    schedule = Schedule(every_n_epochs=2)
    assert schedule.boundary(100, 1.9999999) == 1
    assert schedule.boundary(75, 1.5) == 0
    assert schedule.boundary(25, 0.5) == 0


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


def _monitor(tmp_path, bert_tok, **options):
    from tiny_models import tiny_model

    from explain_callbacks import AttributionEngine, AttributionMonitor

    engine = AttributionEngine(tiny_model("bert", bert_tok), bert_tok, n_steps=4, max_steps=4)
    return AttributionMonitor(engine, ["good film"], run_dir=None, verbose=False, **options)


def test_the_monitor_answers_once_per_boundary_however_often_events_repeat(tmp_path, bert_tok):
    monitor = _monitor(tmp_path, bert_tok, every_n_steps=3)
    monitor.start_schedule()
    asked = [1, 2, 3, 3, 3, 4, 5, 6, 6, 7]  # accumulated batches repeat a step
    assert [s for s in asked if monitor.due(step=s)] == [3, 6]
    assert not monitor.due(epochs=5)  # a step schedule ignores epochs


def test_the_schedule_position_survives_a_checkpoint(tmp_path, bert_tok):
    monitor = _monitor(tmp_path, bert_tok, every_n_epochs=2)
    monitor.start_schedule()
    assert [e for e in range(1, 7) if monitor.due(epochs=e)] == [2, 4, 6]
    state = monitor.state_dict()
    assert state["schedule"] == {"last_boundary": 3}
    resumed = _monitor(tmp_path, bert_tok, every_n_epochs=2)
    resumed.load_state_dict(state)
    resumed.start_schedule(epochs=6)
    assert not resumed.due(epochs=6) and resumed.due(epochs=8)


def test_a_run_resumed_without_state_does_not_check_at_once(tmp_path, bert_tok):
    monitor = _monitor(tmp_path, bert_tok, every_n_steps=50)
    monitor.start_schedule(step=105)
    assert not monitor.due(step=106) and monitor.due(step=150)
