"""Visible progress (issue 17): one line per check on stderr by default, in every integration
(they all run checks through the monitor); ``verbose=False`` is silent, ``"full"`` the table."""

from __future__ import annotations

import re

import pytest
from tiny_models import tiny_model

from explain_callbacks import AttributionEngine, AttributionMonitor
from explain_callbacks.options import MonitorOptions

LINE = re.compile(
    r"^attribution check (\d+) \(step (\d+), epoch (\d+)\): (\d+) probes in \d+\.\d s"
    r"(?: \(\d+% of \d+ s since the (start|previous check)\))?"
)


def _monitor(bert_tok, **options):
    engine = AttributionEngine(tiny_model("bert", bert_tok), bert_tok, n_steps=4, max_steps=4)
    return AttributionMonitor(engine, [{"text": "good film", "label": 1}, {"text": "bad plot", "label": 0}],
                              run_dir=None, **options)


def _check_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("attribution check")]


def test_default_prints_one_line_per_check(bert_tok, capsys):
    monitor = _monitor(bert_tok)
    assert MonitorOptions().verbose is True
    monitor.setup()
    monitor.check(step=5, epoch=0)
    monitor.check(step=10, epoch=1)
    lines = _check_lines(capsys.readouterr().err)
    assert len(lines) == 2
    first, second = (LINE.match(line) for line in lines)
    assert first and first.groups()[:4] == ("0", "5", "0", "2") and first.group(5) in ("start", None)
    assert second and second.groups()[:4] == ("1", "10", "1", "2") and second.group(5) in ("previous check", None)
    assert "accuracy " in lines[0] and "top: " in lines[0]
    assert all("\n" not in line and len(line) < 300 for line in lines)


def test_the_share_of_the_wall_time_shows_only_when_that_time_is_measurable(bert_tok):
    """A fast check once read "(95% of 0 s since the start)": a share of a blink says nothing."""
    from explain_callbacks.run.console import progress_line

    result = _monitor(bert_tok, verbose=False).check(step=5, epoch=0)
    result.snapshot.timings = {"total_s": 0.38, "since_previous_s": 0.4}
    assert "since the" not in progress_line(result) and "2 probes in 0.4 s" in progress_line(result)
    result.snapshot.timings = {"total_s": 3.0, "since_previous_s": 40.0}
    assert "(8% of 40 s since the start)" in progress_line(result)


def test_verbose_false_is_silent_and_full_prints_the_table(bert_tok, capsys):
    _monitor(bert_tok, verbose=False).check(step=5, epoch=0)
    assert capsys.readouterr().err == ""
    _monitor(bert_tok, verbose="full").check(step=5, epoch=0)
    err = capsys.readouterr().err
    assert "top words:" in err and "overlap prev" in err
    with pytest.raises(ValueError, match="verbose"):
        _monitor(bert_tok, verbose="loud")


def test_new_alerts_are_on_the_line(bert_tok, capsys):
    monitor = _monitor(bert_tok, watch_tokens=["good"])
    result = monitor.check(step=5, epoch=0)
    line = _check_lines(capsys.readouterr().err)[0]
    if result.new_alerts:  # a barely trained model may or may not lean on it; the line says which
        assert "new alert" in line and "watch_token 'good'" in line
    else:
        assert "no alert" in line


def test_time_since_the_previous_check_is_recorded(bert_tok):
    monitor = _monitor(bert_tok, verbose=False)
    monitor.setup()
    first = monitor.check(step=5, epoch=0)
    second = monitor.check(step=10, epoch=1)
    for result in (first, second):
        timings = result.snapshot.timings
        assert timings["since_previous_s"] >= timings["total_s"] > 0
        assert result.scalars()["attribution/time/since_previous_s"] == timings["since_previous_s"]


def test_a_real_lightning_fit_prints_one_line_per_epoch(tmp_path, capsys):
    pl = pytest.importorskip("lightning.pytorch")
    from helpers import _tiny_lightning as tiny

    from explain_callbacks.integrations.lightning import AttributionDriftCallback

    TextClassifier = tiny.module_classes(pl)[0]
    bert_tok = tiny.tokenizer(tmp_path)
    callback = AttributionDriftCallback(bert_tok, ["the movie was great", "this film was awful"], run_dir=tmp_path / "runs",
                                        n_steps=8, max_steps=8)
    trainer = tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=2)
    trainer.fit(TextClassifier(len(bert_tok)), tiny.loader(tiny.reviews(16), bert_tok),
                tiny.loader(tiny.reviews(8, seed=1), bert_tok))
    lines = _check_lines(capsys.readouterr().err)
    assert [LINE.match(line).group(1, 3) for line in lines] == [("0", "0"), ("1", "1")]


def test_a_real_hf_trainer_prints_one_line_per_epoch(tmp_path, capsys):
    pytest.importorskip("transformers")
    from helpers._tiny_trainer import make_trainer

    from explain_callbacks.integrations.transformers import AttributionDriftCallback

    callback = AttributionDriftCallback(probes=["good film", "bad plot"], run_dir=tmp_path / "runs", n_steps=8,
                                        max_steps=8)
    make_trainer(tmp_path, callbacks=[callback], n_train=16).train()
    lines = _check_lines(capsys.readouterr().err)
    assert [LINE.match(line).group(1, 3) for line in lines] == [("0", "0"), ("1", "1")]


def test_a_real_flair_fine_tune_prints_one_line_per_epoch(tmp_path, capsys):
    pytest.importorskip("flair")
    from flair.trainers import ModelTrainer
    from helpers._tiny_flair import PROBES, load_corpus, save_tiny_bert, text_classifier, write_corpus

    from explain_callbacks.integrations.flair import AttributionDriftPlugin

    classifier = text_classifier(save_tiny_bert(tmp_path / "bert"), corpus := load_corpus(write_corpus(tmp_path / "c")))
    plugin = AttributionDriftPlugin(PROBES, n_steps=8, max_steps=8, run_dir=tmp_path / "runs")
    ModelTrainer(classifier, corpus).fine_tune(tmp_path / "out", max_epochs=2, mini_batch_size=8, plugins=[plugin])
    lines = _check_lines(capsys.readouterr().err)
    assert [LINE.match(line).group(1) for line in lines] == ["0", "1"]
    assert all("4 probes in" in line for line in lines)
