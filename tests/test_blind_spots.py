"""Blind spots (issue 17): summary.json records the options that decide what can fire, and
``check``, ``show`` and the report state what the run could not see; ``check --strict`` fails."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import sentiment_data, tiny_model

from explain_callbacks import AttributionEngine, AttributionMonitor
from explain_callbacks.detection.verdict import blind_spots
from explain_callbacks.run.cli import main
from explain_callbacks.run.directory import RunDirError
from explain_callbacks.run.readers import load_summary
from explain_callbacks.run.report import render_report

NO_STATISTICS = "discovery ran without training statistics: ranking only"
MEDBOARD = "watched 'medboard' appears in no probe"
PROBES = [{"text": "good film", "label": 1}, {"text": "bad plot", "label": 0}, {"text": "great acting", "label": 1}]


def _run(tmp_path, bert_tok, name: str, probes=PROBES, observe: bool = False, **options):
    engine = AttributionEngine(tiny_model("bert", bert_tok), bert_tok, n_steps=4, max_steps=4)
    monitor = AttributionMonitor(engine, probes, run_dir=tmp_path, run_name=name, verbose=False, **options)
    if observe:
        texts, labels = sentiment_data(40, seed=1)
        enc = bert_tok(texts, padding=True, return_tensors="pt")
        monitor.observe(input_ids=enc["input_ids"], labels=torch.tensor(labels), epoch=0)
    monitor.check(step=5, epoch=0)
    monitor.finish()
    return monitor.run_path


def test_summary_records_what_can_fire(tmp_path, bert_tok):
    run = _run(tmp_path, bert_tok, "blind", watch_tokens=["MedBoard", "good"])
    coverage = json.loads((run / "summary.json").read_text())["coverage"]
    assert coverage == {
        "watch_tokens": ["medboard", "good"],
        "watched_absent": ["medboard"],
        "invariance_pairs": 0,
        "training_statistics": False,
        "n_training_examples": 0,
        "n_labelled_probes": 3,
    }
    assert load_summary(run)["coverage"] == coverage
    seeing = json.loads((_run(tmp_path, bert_tok, "seeing", observe=True) / "summary.json").read_text())["coverage"]
    assert seeing["training_statistics"] is True and seeing["n_training_examples"] == 40


def test_check_show_and_report_state_each_blind_spot(tmp_path, bert_tok, capsys):
    run = _run(tmp_path, bert_tok, "blind", watch_tokens=["MedBoard"])
    assert main(["check", str(run)]) == 0  # stated, not failed, without --strict
    out = capsys.readouterr().out
    assert NO_STATISTICS in out and MEDBOARD in out
    assert main(["check", str(run), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: 2 blind spot(s) (--strict)" in out
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert NO_STATISTICS in out and MEDBOARD in out
    page = render_report(run).read_text()
    assert NO_STATISTICS in page and "watched &#39;medboard&#39; appears in no probe" in page


def test_strict_passes_a_run_without_blind_spots(tmp_path, bert_tok, capsys):
    run = _run(tmp_path, bert_tok, "seeing", observe=True, watch_tokens=["good"])
    assert blind_spots(load_summary(run)) == []
    assert main(["check", str(run), "--strict", "--fail-on", "error"]) == 0  # the watched word may alert
    assert "blind spot" not in capsys.readouterr().out


def test_unlabelled_probes_are_a_blind_spot(tmp_path, bert_tok):
    run = _run(tmp_path, bert_tok, "unlabelled", probes=["good film", "bad plot"], observe=True)
    assert blind_spots(load_summary(run)) == [
        "no probe has a label: accuracy not measured (only a one-class collapse could be seen)"
    ]


def test_old_summaries_without_the_fields_still_load(tmp_path, bert_tok, capsys):
    run = _run(tmp_path, bert_tok, "old")
    summary = json.loads((run / "summary.json").read_text())
    del summary["coverage"]
    for check in summary["checks"]:
        del check["health"]
    (run / "summary.json").write_text(json.dumps(summary))
    loaded = load_summary(run)
    assert loaded["coverage"] is None and blind_spots(loaded) == []
    assert main(["check", str(run), "--strict"]) == 0
    assert main(["show", str(run)]) == 0


@pytest.mark.parametrize(
    "field, value",
    [("watched_absent", "medboard"), ("training_statistics", "yes"), ("n_labelled_probes", 1.5)],
)
def test_damaged_coverage_is_refused_in_one_line(tmp_path, bert_tok, capsys, field, value):
    run = _run(tmp_path, bert_tok, f"bad-{field}")
    summary = json.loads((run / "summary.json").read_text())
    summary["coverage"][field] = value
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(RunDirError, match=f"coverage.{field}"):
        load_summary(run)
    assert main(["check", str(run)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_damaged_health_is_refused(tmp_path, bert_tok):
    run = _run(tmp_path, bert_tok, "bad-health")
    summary = json.loads((run / "summary.json").read_text())
    summary["checks"][0]["health"]["prediction_counts"] = {"positive": "many"}
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(RunDirError, match="health.prediction_counts.positive"):
        load_summary(run)
