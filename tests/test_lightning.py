"""AttributionDriftCallback with real Lightning Trainers, tiny BERT models and real loggers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("transformers")

from helpers import _tiny_lightning as tiny  # noqa: E402

from explain_callbacks.detection.alerts import AlertRules  # noqa: E402
from explain_callbacks.integrations.lightning import AttributionDriftCallback  # noqa: E402
from explain_callbacks.monitor import AttributionAlertError  # noqa: E402

TextClassifier, NoValidation, BagOfEmbeddings = tiny.module_classes(pl)
FAST = dict(n_steps=8, max_steps=8, every_n_epochs=1)  # exactly every epoch: no overhead budget
PROBES = ["the movie was great", "this film was awful", "really boring plot", "quite fun acting"]


@pytest.fixture
def tok(tmp_path):
    return tiny.tokenizer(tmp_path)


def fit(trainer, model, tok, train=16, val=8, val_seed=1):
    val_loader = tiny.loader(tiny.reviews(val, seed=val_seed), tok) if val else None
    trainer.fit(model, tiny.loader(tiny.reviews(train), tok), val_loader)


def read_summary(run_path: Path) -> dict:
    return json.loads((run_path / "summary.json").read_text())


def attribution_lines(run_path: Path) -> list[dict]:
    return [json.loads(line) for line in (run_path / "attributions.jsonl").read_text().splitlines()]


def test_tensorboard_scalars_and_run_directory(tmp_path, tok):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = AttributionDriftCallback(tok, run_dir=tmp_path / "runs", probe_sample_size=4, **FAST)
    logger = pl.loggers.TensorBoardLogger(tmp_path / "tb")
    fit(tiny.trainer(pl, tmp_path, logger=logger, callbacks=[callback]), TextClassifier(len(tok)), tok)

    run_path = callback.monitor.run_path
    assert run_path == tmp_path / "runs" / "lightning_logs_version_0"
    summary = read_summary(run_path)
    assert summary["status"] == "finished"
    # two epochs of 2 batches; the sanity-check validation is not a check
    assert [(c["check_index"], c["step"], c["epoch"]) for c in summary["checks"]] == [(0, 2, 0), (1, 4, 1)]
    probes = [json.loads(line) for line in (run_path / "probes.jsonl").read_text().splitlines()]
    val_texts = {r["text"] for r in tiny.reviews(8, seed=1)}
    assert len(probes) == 4 and all(p["text"] in val_texts for p in probes)
    assert sorted(p["label"] for p in probes) == [0, 0, 1, 1]  # stratified
    assert len(attribution_lines(run_path)) == 2
    assert (run_path / "report.html").exists()

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    rel = events.Scalars("attribution/convergence/mean_rel_delta")
    assert [e.step for e in rel] == [2, 4]
    expected = [c["convergence"]["mean_rel_delta"] for c in summary["checks"]]
    assert [e.value for e in rel] == pytest.approx(expected, rel=1e-5)
    jaccard = events.Scalars("attribution/drift/vs_previous/jaccard")  # from the second check on
    assert [(e.step, e.value) for e in jaccard] == [
        (4, pytest.approx(summary["checks"][1]["drift"]["vs_previous"]["jaccard"], abs=1e-6))
    ]
    assert "val_loss" in events.Tags()["scalars"]  # the same event files as the training metrics


def test_csv_logger_every_n_steps_once_per_optimizer_step(tmp_path, tok):
    callback = AttributionDriftCallback(tok, PROBES, every_n_steps=1, run_dir=tmp_path / "runs", **FAST)
    logger = pl.loggers.CSVLogger(tmp_path / "csv")
    trainer = tiny.trainer(pl, tmp_path, logger=logger, callbacks=[callback], accumulate_grad_batches=2, max_epochs=2)
    fit(trainer, TextClassifier(len(tok)), tok, train=32)

    summary = read_summary(callback.monitor.run_path)
    # 4 batches an epoch, 2 accumulated per optimizer step: steps 1..4, each checked once
    assert [(c["step"], c["epoch"]) for c in summary["checks"]] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("attribution/alerts/active")
    logged_steps = [int(r.split(",")[header.index("step")]) for r in rows[1:] if r.split(",")[column]]
    assert logged_steps == [1, 2, 3, 4]


def test_a_check_never_changes_training(tmp_path, tok):
    def train(with_callbacks: bool):
        pl.seed_everything(0)
        callbacks = []
        if with_callbacks:
            callbacks = [
                AttributionDriftCallback(tok, PROBES, every_n_steps=1, run_dir=tmp_path / "steps", run_name="s", **FAST),
                AttributionDriftCallback(tok, PROBES, run_dir=tmp_path / "epochs", run_name="e", **FAST),
            ]
        model = TextClassifier(len(tok), dropout=0.2)
        train_loader = tiny.loader(tiny.reviews(16), tok)
        trainer = tiny.trainer(pl, tmp_path, callbacks=callbacks)
        from torch.utils.data import DataLoader

        shuffled = DataLoader(train_loader.dataset, batch_size=8, shuffle=True, collate_fn=train_loader.collate_fn)
        trainer.fit(model, shuffled, tiny.loader(tiny.reviews(8, seed=1), tok))
        if callbacks:
            assert [len(read_summary(c.monitor.run_path)["checks"]) for c in callbacks] == [4, 2]
        return model, trainer.optimizers[0].state_dict(), torch.get_rng_state()

    plain, plain_optim, plain_rng = train(False)
    watched, watched_optim, watched_rng = train(True)
    for (name, a), (_, b) in zip(plain.named_parameters(), watched.named_parameters()):
        assert torch.equal(a, b), name
    assert plain_optim["param_groups"] == watched_optim["param_groups"]
    for key, state in plain_optim["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(watched_optim["state"][key][field])), field
    assert torch.equal(plain_rng, watched_rng)


def test_resume_from_a_checkpoint_continues_the_history(tmp_path, tok):
    ckpt_dir = tmp_path / "ckpt"

    def trainer(callback, max_epochs):
        saver = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1)
        return tiny.trainer(pl, tmp_path, callbacks=[callback, saver], max_epochs=max_epochs, enable_checkpointing=True)

    first = AttributionDriftCallback(tok, run_dir=tmp_path / "runs", probe_sample_size=4, **FAST)
    fit(trainer(first, 3), TextClassifier(len(tok)), tok)
    run_path = first.monitor.run_path
    probes_before = (run_path / "probes.jsonl").read_text()
    assert [c["check_index"] for c in read_summary(run_path)["checks"]] == [0, 1, 2]

    # resume from epoch 1: check 2 of the first run is abandoned, not duplicated. The new run
    # names no probes and has other validation data: it must reuse the checkpoint's probes.
    resumed = AttributionDriftCallback(tok, run_dir=tmp_path / "runs", probe_sample_size=4, **FAST)
    trainer(resumed, 4).fit(
        TextClassifier(len(tok)), tiny.loader(tiny.reviews(16), tok), tiny.loader(tiny.reviews(8, seed=7), tok),
        ckpt_path=ckpt_dir / "epoch=1.ckpt",
    )
    assert resumed.monitor.run_path == run_path
    summary = read_summary(run_path)
    assert [(c["check_index"], c["epoch"]) for c in summary["checks"]] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert [line["check_index"] for line in attribution_lines(run_path)] == [0, 1, 2, 3]
    assert (run_path / "probes.jsonl").read_text() == probes_before
    assert summary["status"] == "finished"

    changed = AttributionDriftCallback(tok, PROBES, run_dir=tmp_path / "runs", **FAST)
    with pytest.raises(ValueError, match="different probe set"):
        fit_from = trainer(changed, 4)
        fit_from.fit(TextClassifier(len(tok)), tiny.loader(tiny.reviews(16), tok), ckpt_path=ckpt_dir / "epoch=1.ckpt")


@pytest.mark.parametrize(
    "fail_on, severity, raises",
    [("error", "error", True), ("warning", "warning", True), ("error", "warning", False)],
)
def test_fail_on_raises_after_fit(tmp_path, tok, fail_on, severity, raises):
    rules = AlertRules(watch_tokens=["movie"], watch_top_k=50, severities={"watch_token": severity})
    callback = AttributionDriftCallback(
        tok, PROBES, rules=rules, fail_on=fail_on, run_dir=tmp_path / "runs", run_name="alerts", **FAST
    )
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny.trainer(pl, tmp_path, callbacks=[callback, saver], max_epochs=1, enable_checkpointing=True)
    if raises:
        with pytest.raises(AttributionAlertError, match="movie"):
            fit(trainer, TextClassifier(len(tok)), tok)
    else:
        fit(trainer, TextClassifier(len(tok)), tok)
    summary = read_summary(tmp_path / "runs" / "alerts")
    assert [(a["rule"], a["token"], a["severity"]) for a in summary["alerts"]] == [("watch_token", "movie", severity)]
    assert summary["status"] == "finished"  # flushed before raising
    assert (tmp_path / "ckpt" / "last.ckpt").exists()


def test_no_validation_loop_checks_at_train_epoch_end(tmp_path, tok):
    callback = AttributionDriftCallback(tok, PROBES, run_dir=tmp_path / "runs", run_name="noval", **FAST)
    fit(tiny.trainer(pl, tmp_path, callbacks=[callback]), NoValidation(len(tok)), tok, val=0)
    assert [(c["step"], c["epoch"]) for c in read_summary(tmp_path / "runs" / "noval")["checks"]] == [(2, 0), (4, 1)]


def test_the_default_schedule_keeps_its_budget_and_checks_at_the_end(tmp_path, tok):
    """At its defaults a check is due every epoch within max_overhead=0.05; on a tiny model a check
    costs more than the budget, so epochs are passed over, and the end of training still checks."""
    callback = AttributionDriftCallback(tok, PROBES, run_dir=tmp_path / "runs", run_name="budget", n_steps=8, max_steps=8)
    fit(tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=4), NoValidation(len(tok)), tok, val=0)
    summary = read_summary(tmp_path / "runs" / "budget")
    steps = [c["step"] for c in summary["checks"]]
    assert steps[0] == 2 and steps[-1] == 8 and len(steps) >= 2  # one during training, one at its end
    assert summary["config"]["max_overhead"] == 0.05
    skipped = summary["overhead"]["skipped"]
    assert skipped >= 1 and len(steps) + skipped in (4, 5)  # 4 epoch boundaries, plus the final check
    assert all(c["timings"]["overhead_share"] > 0 for c in summary["checks"])


def test_a_second_fit_with_the_same_callback_continues_the_history(tmp_path, tok):
    callback = AttributionDriftCallback(tok, PROBES, run_dir=tmp_path / "runs", run_name="twice", **FAST)
    model = NoValidation(len(tok))
    fit(tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=1), model, tok, val=0)
    fit(tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=1), model, tok, val=0)
    summary = read_summary(tmp_path / "runs" / "twice")
    assert [(c["check_index"], c["step"]) for c in summary["checks"]] == [(0, 2), (1, 2)]
    assert [line["check_index"] for line in attribution_lines(tmp_path / "runs" / "twice")] == [0, 1]


def test_a_failed_fit_still_finishes_the_run_directory(tmp_path, tok):
    class FailsAtStepThree(NoValidation):
        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    callback = AttributionDriftCallback(tok, PROBES, every_n_steps=1, run_dir=tmp_path / "runs", run_name="x", **FAST)
    with pytest.raises(RuntimeError, match="boom"):
        fit(tiny.trainer(pl, tmp_path, callbacks=[callback]), FailsAtStepThree(len(tok)), tok, val=0)
    summary = read_summary(tmp_path / "runs" / "x")
    assert [c["step"] for c in summary["checks"]] == [1, 2, 3]
    assert summary["status"] == "crashed" and (tmp_path / "runs" / "x" / "report.html").exists()  # not "finished"


@pytest.mark.slow
def test_wandb_logger_receives_the_checks(tmp_path, tok, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    callback = AttributionDriftCallback(tok, PROBES, run_dir=tmp_path / "runs", **FAST)
    logger = pl.loggers.WandbLogger(save_dir=str(tmp_path), offline=True, project="explain")
    try:
        fit(tiny.trainer(pl, tmp_path, callbacks=[callback], logger=logger), TextClassifier(len(tok)), tok)
        run = logger.experiment
        assert callback.monitor.run_path.name == f"explain_{run.id}"
        assert run.summary["attribution/n_checks"] == 2
        assert run.summary["trainer/global_step"] == 4
        summary = read_summary(callback.monitor.run_path)
        assert run.summary["attribution/convergence/mean_rel_delta"] == pytest.approx(
            summary["checks"][-1]["convergence"]["mean_rel_delta"]
        )
    finally:
        wandb.finish()


def test_probes_sampled_from_the_datamodule_before_its_first_validation(tmp_path, tok):
    class Reviews(pl.LightningDataModule):
        def __init__(self, val_rows):
            super().__init__()
            self.val_rows = val_rows

        def train_dataloader(self):
            return tiny.loader(tiny.reviews(16), tok)

        def val_dataloader(self):
            return tiny.loader(self.val_rows, tok)

    callback = AttributionDriftCallback(tok, run_dir=tmp_path / "runs", run_name="dm", probe_sample_size=2, **FAST)
    trainer = tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=1, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    trainer.fit(TextClassifier(len(tok)), datamodule=Reviews(tiny.reviews(8, seed=1)))
    probes = [json.loads(line) for line in (tmp_path / "runs" / "dm" / "probes.jsonl").read_text().splitlines()]
    assert {p["text"] for p in probes} <= {r["text"] for r in tiny.reviews(8, seed=1)} and len(probes) == 2
    assert len(read_summary(tmp_path / "runs" / "dm")["checks"]) == 1  # at the training epoch's end

    untexted = [{"sentence": r["text"], "label": r["label"]} for r in tiny.reviews(8, seed=1)]
    callback = AttributionDriftCallback(tok, run_dir=tmp_path / "runs", run_name="dm2", **FAST)
    trainer = tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=1, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    with pytest.raises(ValueError, match="no 'text' column.*text_key=.*Or pass probes="):
        trainer.fit(TextClassifier(len(tok)), datamodule=Reviews(untexted))


def test_custom_model_through_forward_fn_and_embedding_layer(tmp_path, tok):
    callback = AttributionDriftCallback(
        tok, PROBES, forward_fn="logits", embedding_layer="embed", run_dir=tmp_path / "runs", run_name="custom", **FAST
    )
    fit(tiny.trainer(pl, tmp_path, callbacks=[callback], max_epochs=1), BagOfEmbeddings(len(tok)), tok, val=0)
    summary = read_summary(tmp_path / "runs" / "custom")
    assert len(summary["checks"]) == 1 and summary["config"]["labels"] == ["LABEL_0", "LABEL_1"]
    assert summary["checks"][0]["convergence"]["share_converged"] == 1.0  # a linear model's integral is exact


def test_setup_errors_name_the_problem_and_the_option(tmp_path, tok):
    def start(model, strategy="auto", **options):
        callback = AttributionDriftCallback(tok, PROBES, run_dir=tmp_path / "runs", **options)
        fit(tiny.trainer(pl, tmp_path, callbacks=[callback], max_steps=1, strategy=strategy), model, tok, val=0)
        return callback

    with pytest.raises(ValueError, match="no Hugging Face model found.*model_attr"):
        start(BagOfEmbeddings(len(tok)))

    two = NoValidation(len(tok))
    two.teacher = tiny.bert(len(tok))
    with pytest.raises(ValueError, match=r"several Hugging Face models \(classifier, teacher\).*model_attr="):
        start(two)
    assert start(two, model_attr="classifier", every_n_steps=1, run_name="named").monitor is not None

    fsdp = type("CPUFSDPStrategy", (pl.strategies.FSDPStrategy,), {})()  # FSDPStrategy itself needs a GPU
    environ = dict(os.environ)
    try:
        with pytest.raises(ValueError, match="does not support CPUFSDPStrategy.*ModelParallelStrategy with fully_shard.*strategy='ddp'"):
            start(NoValidation(len(tok)), strategy=fsdp)
    finally:  # the strategy set up a one-process group and its rank variables
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)


def test_bad_options_are_refused_at_construction(tok):
    with pytest.raises(ValueError, match="embedding_layer"):
        AttributionDriftCallback(tok, PROBES, forward_fn=lambda ids, mask: ids)
    with pytest.raises(ValueError, match="fail_on"):
        AttributionDriftCallback(tok, PROBES, fail_on="sometimes")
    with pytest.raises(ValueError, match="not both"):
        AttributionDriftCallback(tok, PROBES, every_n_epochs=2, every_n_steps=10)
    with pytest.raises(ValueError, match="probe_sample_size"):
        AttributionDriftCallback(tok, probe_sample_size=0)
    with pytest.raises(ValueError, match="watch_tokens"):
        AttributionDriftCallback(tok, PROBES, watch_tokens="movie")
    assert AttributionDriftCallback(tok, PROBES, run_name="a").state_key != AttributionDriftCallback(tok, PROBES).state_key


def test_pytorch_lightning_namespace(tmp_path, tok):
    legacy = pytest.importorskip("pytorch_lightning")
    from explain_callbacks.integrations.pytorch_lightning import AttributionDriftCallback as LegacyCallback

    assert issubclass(LegacyCallback, legacy.Callback) and not issubclass(LegacyCallback, pl.Callback)
    Legacy = tiny.module_classes(legacy)[0]
    callback = LegacyCallback(tok, PROBES, run_dir=tmp_path / "runs", **FAST)
    fit(tiny.trainer(legacy, tmp_path, callbacks=[callback], logger=legacy.loggers.CSVLogger(tmp_path)), Legacy(len(tok)), tok)
    assert [c["epoch"] for c in read_summary(callback.monitor.run_path)["checks"]] == [0, 1]


def test_each_module_imports_only_its_own_namespace():
    code = (
        "import sys, explain_callbacks.integrations.lightning as m; "
        "assert 'pytorch_lightning' not in sys.modules; "
        "assert m.AttributionDriftCallback.__module__ == m.__name__; "
        "assert m.AttributionDriftCallback.__qualname__ == 'AttributionDriftCallback'; "
        "assert 'AttributionAlertError' in m.AttributionDriftCallback.__doc__"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
