"""Model health per check (issue 17): accuracy on labelled probes, predictions per class, and a
warning when one class takes every probe or the accuracy collapses."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.attribution_records import CLASS_NAMES, attribution, snapshot
from tiny_models import bert_tokenizer, tiny_model

from explain_callbacks import AttributionEngine, AttributionMonitor
from explain_callbacks.detection.alerts import AlertRules, probe_health


def _probes(predictions: list[int], labels: list[int | None]):
    out = []
    for i, (pred, label) in enumerate(zip(predictions, labels)):
        a = attribution(f"p{i}", ["word", "other"], [0.6, 0.4], target=pred, prediction=pred)
        a.label = label if label is None else CLASS_NAMES[label]  # gold labels as class names
        out.append(a)
    return out


def _health_alerts(rules: AlertRules, index: int, predictions, labels):
    new = rules.evaluate(snapshot(index, _probes(predictions, labels)))
    return [a for a in new if a.rule == "model_health"]


def test_probe_health_counts_predictions_and_accuracy():
    health = probe_health(snapshot(0, _probes([1, 1, 0, 1], [1, 0, 0, None])))
    assert health["n_probes"] == 4
    assert health["prediction_counts"] == {CLASS_NAMES[1]: 3, CLASS_NAMES[0]: 1}
    assert health["n_labelled"] == 3 and health["n_correct"] == 2
    assert health["accuracy"] == pytest.approx(2 / 3)
    unlabelled = probe_health(snapshot(0, _probes([1, 0], [None, None])))
    assert unlabelled["accuracy"] is None and unlabelled["n_correct"] is None


def test_label_ids_count_as_correct_too():
    a = attribution("p0", ["x"], [1.0], target=1, prediction=1)
    a.label = 1  # an id, where the prediction has a name
    assert probe_health(snapshot(0, [a]))["accuracy"] == 1.0


def test_one_class_for_every_probe_warns():
    labels = [0, 1] * 5
    rules = AlertRules()
    assert _health_alerts(rules, 0, [1] * 10, labels) == []  # not learned yet at the first check
    alerts = _health_alerts(rules, 1, [1] * 10, labels)  # still one class: it never told them apart
    assert [(a.key, a.severity) for a in alerts] == [("model_health:one_class", "warning")]
    assert "all 10 probes" in alerts[0].message
    assert alerts[0].evidence["prediction_counts"] == {CLASS_NAMES[1]: 10}


def test_one_class_after_telling_classes_apart_warns_at_once_and_survives_a_checkpoint():
    labels = [0, 1] * 5
    rules = AlertRules()
    assert _health_alerts(rules, 0, labels, labels) == []
    resumed = AlertRules()
    resumed.load_state_dict(json.loads(json.dumps(rules.state_dict())))
    alerts = _health_alerts(resumed, 1, [0] * 10, labels)  # a collapse
    assert "model_health:one_class" in [a.key for a in alerts]


def test_one_class_at_the_first_check_only_does_not_warn():
    """A tiny BERT at epoch 0 often predicts one class, then learns (the detection benchmark's
    clean runs: 50% at check 0, 84-100% after): no warning for that."""
    labels = [0, 1] * 8
    rules = AlertRules()
    for index, predictions in enumerate([[1] * 16, labels, labels]):
        assert _health_alerts(rules, index, predictions, labels) == []


def test_one_class_needs_enough_probes_and_two_label_classes():
    for predictions, labels in (([1] * 6, [0, 1] * 3),  # under health_min_probes
                                ([1] * 10, [1] * 10),  # one class in the labels too
                                ([1] * 10, [None] * 10)):  # nothing says two classes
        rules = AlertRules()
        assert [_health_alerts(rules, i, predictions, labels) for i in (0, 1)] == [[], []]


def test_a_majority_prediction_on_an_imbalanced_probe_set_is_no_collapse():
    """It warned "the model predicts 'positive' for all 12 probes, whose labels hold 2 classes" on
    11 positive and 1 negative probes at 92% accuracy: one missed probe is no evidence of a collapse."""
    labels = [1] * 11 + [0]
    rules = AlertRules()
    assert _health_alerts(rules, 0, [1] * 11 + [0], labels) == []  # it told the classes apart once
    assert _health_alerts(rules, 1, [1] * 12, labels) == []
    assert _health_alerts(rules, 2, [1] * 12, labels) == []
    labels = [1] * 7 + [0] * 5  # five probes of the other class, all missed: a collapse
    rules = AlertRules()
    assert _health_alerts(rules, 0, labels, labels) == []
    alerts = [a for a in _health_alerts(rules, 1, [1] * 12, labels) if a.key == "model_health:one_class"]
    assert len(alerts) == 1 and alerts[0].evidence["n_other_class_probes"] == 5 and "(5 probes of the others)" in alerts[0].message


def test_accuracy_drop_from_the_best_earlier_check_warns_and_survives_a_checkpoint():
    rules = AlertRules()
    labels = [0, 1] * 5
    assert _health_alerts(rules, 0, labels, labels) == []  # 100%
    state = json.loads(json.dumps(rules.state_dict()))
    resumed = AlertRules()
    resumed.load_state_dict(state)
    worse = [1 - y for y in labels[:4]] + labels[4:]  # 60%: a drop of 40 points
    alerts = _health_alerts(resumed, 1, worse, labels)
    assert [a.key for a in alerts] == ["model_health:accuracy"]
    assert "fell from 100%" in alerts[0].message and "60%" in alerts[0].message


def test_accuracy_below_chance_warns():
    labels = [0, 1] * 5
    wrong = [1 - y for y in labels]
    wrong[0] = labels[0]  # 10%
    alerts = _health_alerts(AlertRules(), 0, wrong, labels)
    assert [a.key for a in alerts] == ["model_health:accuracy"] and "below chance" in alerts[0].message


def test_a_normally_training_model_does_not_alert():
    rules = AlertRules()
    labels = [0, 1] * 8
    for index, n_wrong in enumerate([6, 4, 3, 2, 3, 1]):  # 62% rising to 94%, with a small dip
        predictions = [1 - y if i < n_wrong else y for i, y in enumerate(labels)]
        assert _health_alerts(rules, index, predictions, labels) == []


def test_monitor_records_health_per_check_and_in_scalars(tmp_path):
    tok = bert_tokenizer(tmp_path)
    probes = [{"text": "good film", "label": 1}, {"text": "bad plot", "label": 0}, {"text": "great acting", "label": 1}]
    engine = AttributionEngine(tiny_model("bert", tok), tok, n_steps=4, max_steps=4)
    monitor = AttributionMonitor(engine, probes, run_dir=tmp_path / "runs", run_name="h", verbose=False)
    result = monitor.check(step=3, epoch=0)
    monitor.finish()
    with torch.no_grad():  # the model's own forward says what it predicts
        logits = engine.adapter.model(**tok([p["text"] for p in probes], padding=True, return_tensors="pt")).logits
    names = engine.adapter.label_names
    ids = logits.argmax(-1).tolist()
    predicted = [names[i] for i in ids]
    expected_correct = sum(i == q["label"] for i, q in zip(ids, probes))
    health = json.loads((monitor.run_path / "summary.json").read_text())["checks"][0]["health"]
    assert health["n_probes"] == 3 and health["n_labelled"] == 3
    assert health["n_correct"] == expected_correct
    assert sum(health["prediction_counts"].values()) == 3
    assert health["prediction_counts"] == {n: predicted.count(n) for n in sorted(set(predicted), key=lambda n: (-predicted.count(n), n))}
    scalars = result.scalars()
    assert scalars["attribution/health/accuracy"] == pytest.approx(expected_correct / 3)
    for name, count in health["prediction_counts"].items():
        assert scalars[f"attribution/health/predicted/{name}"] == count
