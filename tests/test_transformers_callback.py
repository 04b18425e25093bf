"""``AttributionDriftCallback`` in real Hugging Face ``Trainer`` runs (transformers 4.57 and 5.x)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from helpers._tiny_trainer import ReviewDataset, make_trainer, review_rows  # noqa: E402

from explain_callbacks.attribution.probes import ProbeError  # noqa: E402
from explain_callbacks.integrations.transformers import AttributionDriftCallback  # noqa: E402
from explain_callbacks.monitor import AttributionAlertError  # noqa: E402

FAST = {"n_steps": 4, "max_steps": 4}  # no adaptive step doubling: quick checks on a busy CPU
WATCHED_PROBES = ["great movie", "the great plot", "this film was great", "awful acting", "boring story really"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _summary(run_path: Path) -> dict:
    return json.loads((run_path / "summary.json").read_text(encoding="utf-8"))


def _scalars(event_file: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_checks_follow_the_schedule_and_fill_the_run_directory(tmp_path):
    cb = AttributionDriftCallback(**FAST, run_dir=tmp_path / "runs", run_name="demo", probe_sample_size=6,
                                  every_n_steps=3, tensorboard=True)
    trainer = make_trainer(tmp_path, [cb], max_steps=8, eval_strategy="steps", eval_steps=2)
    trainer.train()

    assert cb.run_path == tmp_path / "runs" / "demo"
    summary = _summary(cb.run_path)
    # evaluations at steps 2, 4, 6, 8; a check at the first one past each multiple of 3
    assert [c["step"] for c in summary["checks"]] == [4, 6]
    assert summary["status"] == "finished" and summary["n_probes"] == 6
    snapshots = _lines(cb.run_path / "attributions.jsonl")
    assert [s["step"] for s in snapshots] == [4, 6]
    # probes sampled from the eval dataset's raw text column (ids are dataset indices)
    eval_texts = {item["text"] for item in trainer.eval_dataset.items}
    probes = _lines(cb.run_path / "probes.jsonl")
    assert len(probes) == 6 and all(p["text"] in eval_texts and p["id"].startswith("d") for p in probes)
    assert (cb.run_path / "report.html").exists()
    # tensorboard=True: its own event files under the run directory
    event_file = next((cb.run_path / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _scalars(event_file)
    assert [e.step for e in scalars["attribution/convergence/share_converged"]] == [4, 6]
    assert scalars["attribution/convergence/mean_rel_delta"][-1].value == pytest.approx(
        summary["checks"][-1]["convergence"]["mean_rel_delta"], rel=1e-5)


def test_a_check_never_changes_training(tmp_path):
    """Seeded runs with and without checks end with identical weights and optimizer state."""

    def train(callbacks, sub):
        trainer = make_trainer(tmp_path / sub, callbacks, max_steps=8, eval_strategy="steps", eval_steps=2)
        trainer.train()
        return trainer

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cb = AttributionDriftCallback(**FAST, run_dir=tmp_path / "runs", run_name="same", probe_sample_size=4,
                                  every_n_steps=2)
    with_checks = train([cb], "a")
    without = train(None, "b")
    assert len(_summary(cb.run_path)["checks"]) == 4
    params_a = dict(with_checks.model.named_parameters())
    params_b = dict(without.model.named_parameters())
    assert params_a.keys() == params_b.keys()
    assert all(torch.equal(params_a[name], params_b[name]) for name in params_a)
    assert with_checks.model.training == without.model.training
    state_a = with_checks.optimizer.state_dict()["state"]
    state_b = without.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys() and state_a
    for key in state_a:
        for name, value in state_a[key].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[key][name])), (key, name)


def test_logs_into_the_trainers_tensorboard_writer(tmp_path):
    cb = AttributionDriftCallback(**FAST, run_dir=tmp_path / "runs", run_name="tb", probe_sample_size=4)
    trainer = make_trainer(tmp_path, None, report_to="tensorboard", logging_strategy="steps", logging_steps=2)
    assert cb.attach(trainer) is cb and cb in trainer.callback_handler.callbacks
    trainer.train()

    event_files = list((tmp_path / "out").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1, event_files  # the Trainer's own file, shared
    scalars = _scalars(event_files[0])
    assert "train/loss" in scalars
    assert [e.step for e in scalars["attribution/convergence/share_converged"]] == [4, 8]
    assert [e.step for e in scalars["attribution/alerts/active"]] == [4, 8]


def test_logs_into_the_trainers_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                        "WANDB_CONSOLE": "off", "WANDB_PROJECT": "explain-callbacks-test"}.items():
        monkeypatch.setenv(name, value)
    import wandb

    cb = AttributionDriftCallback(**FAST, run_dir=tmp_path / "runs", run_name="wb", probe_sample_size=4)
    trainer = make_trainer(tmp_path, [cb], report_to="wandb")
    try:
        trainer.train()
        run = wandb.run
        assert run is not None and run.settings.mode in ("offline", "dryrun")
        last = _summary(cb.run_path)["checks"][-1]
        assert run.summary["attribution/n_checks"] == 2
        assert run.summary["train/global_step"] == 8
        assert run.summary["attribution/convergence/mean_rel_delta"] == pytest.approx(
            last["convergence"]["mean_rel_delta"])
    finally:
        if wandb.run is not None:
            wandb.run.finish()


def test_resume_from_checkpoint_continues_the_history(tmp_path):
    options = dict(**FAST, run_dir=tmp_path / "runs", run_name="resumed", probe_sample_size=4, watch_tokens=["great"])
    args = dict(num_train_epochs=2, save_strategy="epoch")
    make_trainer(tmp_path, [AttributionDriftCallback(**options)], **args).train()
    run_path = tmp_path / "runs" / "resumed"
    original = _summary(run_path)["checks"]
    assert [c["step"] for c in original] == [4, 8]

    saved = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    stored = saved["stateful_callbacks"]["AttributionDriftCallback"]
    assert stored["args"]["run_name"] == "resumed" and stored["args"]["watch_tokens"] == ["great"]
    assert len(stored["attributes"]["resume_state"]["tracker"]["history"]) == 1

    # Either way: the callback reads its state back itself, or Hugging Face rebuilds it from it.
    for restore_flag in (False, True):
        given = AttributionDriftCallback(**options)
        trainer = make_trainer(tmp_path, [given], restore_callback_states_from_checkpoint=restore_flag, **args)
        trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
        active = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, AttributionDriftCallback)]
        assert len(active) == 1 and (active[0] is given) == (not restore_flag)
        resumed = _summary(run_path)
        assert resumed["status"] == "finished"
        assert [c["check_index"] for c in resumed["checks"]] == [0, 1]
        assert [c["step"] for c in resumed["checks"]] == [4, 8]
        assert resumed["checks"][0] == original[0]  # carried over, not recomputed
        assert resumed["checks"][1]["drift"]["vs_reference"]  # compared with the check before the resume
        assert [s["check_index"] for s in _lines(run_path / "attributions.jsonl")] == [0, 1]
        assert active[0].monitor.tracker.state_dict()["reference"]["step"] == 4


def test_resume_keeps_the_checkpoints_probes_when_the_eval_set_changed(tmp_path):
    """A resumed run continues with the probes it stored, as Lightning does, never resampled: on
    the old code the Trainer's new eval set gave other probes and the resume was refused."""
    options = dict(**FAST, run_dir=tmp_path / "runs", run_name="probes", probe_sample_size=4)
    args = dict(num_train_epochs=2, save_strategy="epoch")
    make_trainer(tmp_path, [AttributionDriftCallback(**options)], **args).train()
    run_path = tmp_path / "runs" / "probes"
    probes_before = (run_path / "probes.jsonl").read_text()
    saved = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    stored = saved["stateful_callbacks"]["AttributionDriftCallback"]["attributes"]["resume_state"]["probes"]
    assert [p["text"] for p in stored] == [p["text"] for p in _lines(run_path / "probes.jsonl")]

    resumed = AttributionDriftCallback(**options)
    trainer = make_trainer(tmp_path, [resumed], **args)
    trainer.eval_dataset = ReviewDataset(review_rows(16, seed=7), trainer.processing_class)  # other texts
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
    assert (run_path / "probes.jsonl").read_text() == probes_before
    assert [c["check_index"] for c in _summary(run_path)["checks"]] == [0, 1]


STACK_LINE = "found its Trainer up the call stack"


def test_the_trainer_is_found_up_the_stack_only_as_a_logged_fallback(tmp_path, caplog):
    caplog.set_level("INFO", logger="explain_callbacks.integrations.transformers")
    for name in "abc":
        (tmp_path / name).mkdir()
    # probes to sample from the raw eval_dataset: only the Trainer has it; not attached -> the fallback, said so
    found = AttributionDriftCallback(**FAST, run_dir=None, probe_sample_size=4)
    make_trainer(tmp_path / "a", [found], num_train_epochs=1).train()
    assert sum(STACK_LINE in r.getMessage() for r in caplog.records) == 1
    assert len(found.monitor.probes) == 4

    # attached: no search
    caplog.clear()
    attached = AttributionDriftCallback(**FAST, run_dir=None, probe_sample_size=4)
    trainer = make_trainer(tmp_path / "b", num_train_epochs=1)
    attached.attach(trainer)
    trainer.train()
    assert not any(STACK_LINE in r.getMessage() for r in caplog.records)
    assert len(attached.monitor.summary()["checks"]) == 1

    # probes given: the event kwargs serve (model, tokenizer, the train dataloader's data), no search
    caplog.clear()
    given = AttributionDriftCallback(WATCHED_PROBES, **FAST, run_dir=None)
    make_trainer(tmp_path / "c", [given], num_train_epochs=1).train()
    assert not any(STACK_LINE in r.getMessage() for r in caplog.records)
    assert given.monitor.statistics.n_examples == 32  # training statistics from train_dataloader.dataset


def test_resume_from_before_the_first_check_drops_the_abandoned_checks(tmp_path):
    options = dict(**FAST, run_dir=tmp_path / "runs", run_name="early", probe_sample_size=4)
    args = dict(save_strategy="steps", save_steps=2)
    make_trainer(tmp_path, [AttributionDriftCallback(**options)], **args).train()
    run_path = tmp_path / "runs" / "early"
    assert [s["step"] for s in _lines(run_path / "attributions.jsonl")] == [4, 8]

    make_trainer(tmp_path, [AttributionDriftCallback(**options)], **args).train(
        resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert [(s["check_index"], s["step"]) for s in _lines(run_path / "attributions.jsonl")] == [(0, 4), (1, 8)]
    assert [c["step"] for c in _summary(run_path)["checks"]] == [4, 8]


def test_fail_on_raises_after_training_completes(tmp_path):
    cb = AttributionDriftCallback(WATCHED_PROBES, **FAST, run_dir=tmp_path / "runs", run_name="fail",
                                  watch_tokens=["great"], fail_on="warning")
    trainer = make_trainer(tmp_path, [cb])
    with pytest.raises(AttributionAlertError, match="great"):
        trainer.train()
    assert trainer.state.global_step == 8  # training ran to the end first
    summary = _summary(cb.run_path)
    assert summary["status"] == "finished" and len(summary["checks"]) == 2
    # (at step 4 the barely trained model does not yet lead with "great" in these short probes)
    assert [(a["rule"], a["token"]) for a in summary["alerts"] if a["rule"] == "watch_token"] == [("watch_token", "great")]


def test_stop_on_alert_stops_training_at_the_alerting_check(tmp_path):
    cb = AttributionDriftCallback(WATCHED_PROBES, **FAST, run_dir=tmp_path / "runs", run_name="stop",
                                  watch_tokens=["great"], every_n_steps=2, stop_on_alert=True)
    trainer = make_trainer(tmp_path, [cb], eval_strategy="steps", eval_steps=2)
    trainer.train()  # fail_on="never": no error, but training stopped
    assert trainer.state.global_step == 2
    assert [c["step"] for c in _summary(cb.run_path)["checks"]] == [2]


def test_missing_text_column_fails_before_the_first_step(tmp_path):
    cb = AttributionDriftCallback(**FAST, run_dir=tmp_path / "runs", run_name="nocol")
    trainer = make_trainer(tmp_path, [cb], keep_text=False)
    with pytest.raises(ProbeError, match=r"no 'text' column .*probes=.*remove_columns"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_probes_from_a_datasets_dataset_keep_their_text_column(tmp_path):
    import datasets  # a test dependency: this test must not skip
    from helpers._tiny_trainer import review_rows, training_args
    from tiny_models import bert_tokenizer, tiny_model
    from transformers import Trainer

    tokenizer = bert_tokenizer(tmp_path)

    def tokenize(batch):
        return tokenizer(batch["text"], padding="max_length", max_length=12, truncation=True)

    train = datasets.Dataset.from_list(review_rows(32, seed=1)).map(tokenize, batched=True)
    evaluation = datasets.Dataset.from_list(review_rows(16, seed=2)).map(tokenize, batched=True)
    for name, eval_dataset in (("kept", evaluation), ("removed", evaluation.remove_columns(["text"]))):
        cb = AttributionDriftCallback(**FAST, run_dir=tmp_path / "runs", run_name=name, probe_sample_size=4)
        trainer = Trainer(model=tiny_model("bert", tokenizer), args=training_args(tmp_path / "out", num_train_epochs=1),
                          train_dataset=train, eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=[cb])
        if name == "kept":  # remove_unused_columns=True hides 'text' from the model, not from the callback
            trainer.train()
            assert {p["text"] for p in _lines(cb.run_path / "probes.jsonl")} <= set(evaluation["text"])
        else:
            with pytest.raises(ProbeError, match=r"eval_dataset: the dataset has no 'text' column"):
                trainer.train()


def test_state_is_json_and_names_what_json_cannot_hold(tmp_path):
    class ListSink:
        def start(self, run): ...
        def log_check(self, result, summary): ...
        def finish(self, summary): ...

    cb = AttributionDriftCallback(["great movie", "awful plot"], sinks=[ListSink()], run_dir=tmp_path, top_k=3,
                                  every_n_steps=5, run_name="js")
    state = json.loads(json.dumps(cb.state()))
    assert state["attributes"]["rebuilt_without"] == ["sinks"]
    rebuilt = AttributionDriftCallback.from_state(state)
    assert rebuilt.options.top_k == 3 and rebuilt.options.schedule.every_n_steps == 5
    assert rebuilt.options.run_name == "js"
    assert [p.text for p in rebuilt.options.probes] == ["great movie", "awful plot"]
    assert rebuilt.options.probes.fingerprint == cb.options.probes.fingerprint
    assert rebuilt.rebuilt_without == ["sinks"] and not cb.rebuilt_without


def test_state_keeps_training_data_out_of_trainer_state(tmp_path):
    texts = [f"review number {i} with a marker word" for i in range(2000)]
    cb = AttributionDriftCallback(["great movie", "awful plot"], run_dir=tmp_path, training_texts=texts,
                                  training_labels=[i % 2 for i in range(2000)])
    dumped = json.dumps(cb.state())
    assert "marker word" not in dumped and len(dumped) < 4000
    state = json.loads(dumped)
    assert state["attributes"]["rebuilt_without"] == ["training_texts", "training_labels"]
    assert AttributionDriftCallback.from_state(state).options.training_texts is None


def test_run_on_evaluate_needs_an_eval_strategy(tmp_path):
    cb = AttributionDriftCallback(**FAST, run_dir=tmp_path / "runs")
    trainer = make_trainer(tmp_path, [cb], eval_strategy="no")
    with pytest.raises(ValueError, match="eval_strategy"):
        trainer.train()
    assert trainer.state.global_step == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"run_on": "step"}, "run_on"),
        ({"fail_on": "sometimes"}, "fail_on"),
        ({"probe_sample_size": 0}, "probe_sample_size"),
        ({"tensorboard": True, "run_dir": None}, "tensorboard=True"),
        ({"every_n_epochs": 2, "every_n_steps": 5}, "not both"),
        ({"probes": []}, "empty"),
    ],
)
def test_bad_options_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttributionDriftCallback(**kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_check_together_and_log_once(tmp_path):
    script = Path(__file__).parent / "jobs" / "_trainer_ddp_job.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_path = tmp_path / "runs" / "ddp"
    snapshots = _lines(run_path / "attributions.jsonl")
    assert [s["step"] for s in snapshots] == [2, 4]  # one line per check, not one per rank
    # both ranks attributed their share; rank zero gathered all six probes
    assert sorted(a["probe_id"] for a in snapshots[0]["attributions"]) == sorted(
        p["id"] for p in _lines(run_path / "probes.jsonl"))
    assert len(snapshots[0]["attributions"]) == 6
    assert done.stdout.count("RUN_PATH") == 1
