"""``AttributionMonitor`` on its own (no training framework), with a tiny BERT from a config:
one check against the model's own forward, the checkpoint round trip continuing the history,
``finish`` raising per ``fail_on``, and ``observe`` feeding the training statistics."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import bert_tokenizer, sentiment_data, tiny_model, train_briefly

from explain_callbacks import AttributionEngine
from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.monitor import AttributionAlertError, AttributionMonitor
from explain_callbacks.run.cli import main as cli_main
from explain_callbacks.run.readers import load_summary, read_snapshots

TEXTS, LABELS = sentiment_data(64, seed=1)
PROBES = [{"id": f"p{i}", "text": t, "label": l} for i, (t, l) in enumerate(zip(TEXTS[:6], LABELS[:6]))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = bert_tokenizer(tmp_path_factory.mktemp("vocab"))
    model = train_briefly(tiny_model("bert", tokenizer), tokenizer, TEXTS, LABELS, steps=30)
    return model, tokenizer


def make_monitor(trained, run_dir, **options) -> AttributionMonitor:
    model, tokenizer = trained
    engine_options = {k: options.pop(k) for k in ("n_steps", "max_steps", "rel_tolerance") if k in options}
    engine = AttributionEngine(model, tokenizer, **{"n_steps": 8, **engine_options})
    return AttributionMonitor(engine, options.pop("probes", PROBES), run_dir=run_dir,
                              **{"run_name": "m", **options})


def test_a_check_attributes_each_probe_as_the_model_itself_scores_it(trained, tmp_path):
    model, tokenizer = trained
    monitor = make_monitor(trained, tmp_path)
    result = monitor.check(step=7, epoch=0)
    assert [a.probe_id for a in result.snapshot.attributions] == [p["id"] for p in PROBES]
    model.eval()
    for probe, a in zip(PROBES, result.snapshot.attributions):
        with torch.no_grad():
            logits = model(**tokenizer(probe["text"], return_tensors="pt")).logits[0]
        assert a.target == probe["label"]  # target "auto": the gold label
        assert a.f_input == pytest.approx(float(logits[a.target]), abs=1e-4)
        assert a.prediction == int(logits.argmax())
        # completeness: the scores add up to F(x) - F(baseline), within the reported delta
        assert sum(a.token_scores) - (a.f_input - a.f_baseline) == pytest.approx(a.delta, abs=1e-5)
    summary = monitor.summary()
    assert [(c["check_index"], c["step"], c["epoch"]) for c in summary["checks"]] == [(0, 7, 0)]
    assert summary["status"] == "running" and summary["failed_checks"] == []
    done = monitor.finish()
    assert done["status"] == "finished"
    snapshots, _notes = read_snapshots(monitor.run_path / "attributions.jsonl")
    assert [s.step for s in snapshots] == [7]


def test_state_dict_round_trip_continues_the_history(trained, tmp_path):
    first = make_monitor(trained, tmp_path)
    first.observe(texts=TEXTS[:32], labels=LABELS[:32])
    for step in (5, 10):
        first.check(step=step)
    # through strict JSON, as the HF callback keeps it in trainer_state.json: the first check's
    # undefined drift figures must be null, not a bare NaN that no JSON reader accepts
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    first.finish()

    resumed = make_monitor(trained, tmp_path, resume=True)
    resumed.load_state_dict(state)
    assert resumed.statistics.n_examples == first.statistics.n_examples == 32
    result = resumed.check(step=15)
    assert result.snapshot.check_index == 2
    summary = resumed.finish()
    assert [(c["check_index"], c["step"]) for c in summary["checks"]] == [(0, 5), (1, 10), (2, 15)]
    assert len(resumed.tracker.history) == 3
    first_rbo = resumed.tracker.history[0]["drift"]["vs_previous"]["rbo"]
    assert first_rbo != first_rbo  # null in the checkpoint reads back as nan, not None
    resumed.tracker.stabilisation()  # computes on those figures (None would raise TypeError)
    snapshots, _notes = read_snapshots(resumed.run_path / "attributions.jsonl")
    assert [s.step for s in snapshots] == [5, 10, 15]  # one history on disk too, not two runs mixed

    again = resumed.state_dict()
    assert [c["step"] for c in again["tracker"]["history"]] == [5, 10, 15]
    assert again["statistics"] == json.loads(json.dumps(again["statistics"], allow_nan=False))


def test_the_checkpoint_holds_each_check_once_and_an_old_one_with_two_copies_loads(trained, tmp_path):
    first = make_monitor(trained, tmp_path)
    for step in (5, 10):
        first.check(step=step)
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    # one row per check in the whole checkpoint: the history is the tracker's, and the monitor's
    # figures of a check (convergence, health, timings) are in that row, not in a second list
    assert json.dumps(state).count('"top_tokens"') == 2 and "checks" not in state
    history = state["tracker"]["history"]
    assert [sorted(row) for row in history] == [sorted(c) for c in first.summary()["checks"]]
    assert all(row["convergence"] and row["health"] and row["timings"] for row in history)
    expected = first.summary()["checks"]
    first.finish()

    # a checkpoint written before: tracker rows without the monitor's figures, and "checks" with them
    old = json.loads(json.dumps(state))
    old["checks"] = [{**row, "error": None} for row in expected]
    for row in old["tracker"]["history"]:
        for name in ("convergence", "health", "timings"):
            del row[name]
    resumed = make_monitor(trained, tmp_path, resume=True)
    resumed.load_state_dict(old)
    assert resumed.summary()["checks"] == expected
    resumed.check(step=15)
    assert [(c["check_index"], c["step"]) for c in resumed.finish()["checks"]] == [(0, 5), (1, 10), (2, 15)]
    assert json.dumps(resumed.state_dict()).count('"top_tokens"') == 3


def test_a_failed_check_is_an_event_not_a_row_and_old_error_fields_still_load(trained, tmp_path, capsys, wide_terminal):
    """No check row carries the dead per-check ``error``; the failure is in ``failed_checks``,
    which ``check`` reports. Summaries written with ``"error": null`` per check still read."""
    model, _ = trained
    monitor = make_monitor(trained, tmp_path, fail_on="never")
    monitor.check(step=5)

    def broken(_module, _args):
        raise RuntimeError("device lost")

    handle = model.register_forward_pre_hook(broken)
    try:
        assert monitor.check(step=10) is None
    finally:
        handle.remove()
    monitor.check(step=15)
    monitor.finish()
    path = monitor.run_path
    summary = load_summary(path)
    assert [(c["check_index"], c["step"]) for c in summary["checks"]] == [(0, 5), (1, 15)]
    assert all("error" not in c for c in summary["checks"])
    capsys.readouterr()
    assert cli_main(["check", str(path), "--fail-on", "error"]) == 1
    assert "step 10: RuntimeError: device lost" in capsys.readouterr().out

    raw = json.loads((path / "summary.json").read_text())
    for check in raw["checks"]:
        check["error"] = None  # as every summary before this version held it
    (path / "summary.json").write_text(json.dumps(raw))
    assert [c["step"] for c in load_summary(path)["checks"]] == [5, 15]
    assert cli_main(["show", str(path)]) == 0
    assert cli_main(["report", str(path)]) == 0
    assert cli_main(["check", str(path), "--fail-on", "error"]) == 1


@pytest.mark.parametrize("top_k", [True, 0, 2.0])
def test_top_k_must_be_a_positive_int_not_a_bool(trained, top_k):
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        make_monitor(trained, None, top_k=top_k)


def test_a_checkpoint_of_other_probes_is_refused(trained, tmp_path):
    state = make_monitor(trained, tmp_path / "a").state_dict()
    other = make_monitor(trained, tmp_path / "b", probes=PROBES[:3])
    with pytest.raises(ValueError, match="different probe set"):
        other.load_state_dict(state)


def sure_alert(severity: str) -> AlertRules:
    """An alert that surely fires at the first check: no integral meets a tolerance of 1e-12."""
    return AlertRules(max_unconverged_fraction=0.0, severities={"convergence": severity})


@pytest.mark.parametrize("severity, fail_on, raises", [
    ("warning", "never", False),
    ("warning", "warning", True),
    ("warning", "error", False),
    ("error", "warning", True),
    ("error", "error", True),
])
def test_finish_raises_when_alerts_reach_fail_on(trained, severity, fail_on, raises):
    monitor = make_monitor(trained, None, rules=sure_alert(severity), fail_on=fail_on,
                           n_steps=4, max_steps=4, rel_tolerance=1e-12)
    result = monitor.check(step=1)
    assert [(a.rule, a.severity) for a in result.new_alerts] == [("convergence", severity)]
    if raises:
        with pytest.raises(AttributionAlertError, match="convergence"):
            monitor.finish()
    else:
        monitor.finish()
    assert monitor.summary()["status"] == "finished"
    assert monitor.finish() == monitor.summary()  # a second finish neither raises nor rewrites


def test_finish_without_alerts_never_raises(trained):
    monitor = make_monitor(trained, None, fail_on="warning", max_steps=128)
    result = monitor.check(step=1)
    assert result.new_alerts == [] and result.convergence["share_converged"] == 1.0
    assert monitor.finish()["alerts"] == []


@pytest.mark.parametrize("fail_on", ["never", "warning", "error"])
def test_a_failed_check_is_recorded_and_fails_finish_unless_never(trained, tmp_path, fail_on):
    model, _ = trained
    monitor = make_monitor(trained, tmp_path, fail_on=fail_on)
    monitor.setup()

    def broken(_module, _args):
        raise RuntimeError("device lost")

    handle = model.register_forward_pre_hook(broken)
    try:
        if fail_on == "error":
            with pytest.raises(RuntimeError, match="device lost"):
                monitor.check(step=3)
        else:
            assert monitor.check(step=3) is None
    finally:
        handle.remove()
    assert monitor.summary()["failed_checks"] == ["step 3: RuntimeError: device lost"]
    if fail_on == "never":
        monitor.finish()
    else:  # a failed check is an error-level event: "warning" and "error" both fail the run
        with pytest.raises(AttributionAlertError, match="check failed: step 3"):
            monitor.finish()


def test_observe_counts_each_training_example_once(trained):
    monitor = make_monitor(trained, None)
    assert monitor.observe(texts=TEXTS[:16], labels=LABELS[:16]) == 16
    assert monitor.observe(texts=TEXTS[:16], labels=LABELS[:16]) == 0  # seen again: not counted twice
    assert monitor.observe(texts=TEXTS[8:24], labels=LABELS[8:24]) == 8
    assert monitor.statistics.n_examples == 24
    # with epochs, only the first epoch given is read
    assert monitor.observe(texts=TEXTS[24:32], labels=LABELS[24:32], epoch=0) == 8
    assert monitor.observe(texts=TEXTS[32:40], labels=LABELS[32:40], epoch=1) == 0
    assert monitor.statistics.n_examples == 32


def test_a_training_batch_it_cannot_read_stops_gathering_not_training(trained, caplog):
    """observe_batch runs inside the user's epoch: a batch with 3 id rows and 2 labels is
    logged and ends the gathering; it never raises into training."""
    monitor = make_monitor(trained, None)
    model, tokenizer = trained
    good = tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    assert monitor.observe_batch({"input_ids": good["input_ids"], "labels": torch.tensor(LABELS[:4])}, epoch=0) == 4
    bad = {"input_ids": good["input_ids"][:3], "labels": torch.tensor(LABELS[:2])}
    with caplog.at_level("WARNING"):
        assert monitor.observe_batch(bad, epoch=0) == 0
    assert "could not be read" in caplog.text
    assert monitor.statistics.n_examples == 4
    with pytest.raises(ValueError):  # the explicit call of a custom loop still says what is wrong
        make_monitor(trained, None).observe(input_ids=bad["input_ids"], labels=bad["labels"])
