"""Sinks against the real libraries: the run directory on disk, TensorBoard event files read
back with TensorBoard's own reader, and real offline / disabled W&B runs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.sink_records import HOSTILE_TEXT, make_probes, make_result, make_summary

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import Snapshot
from explain_callbacks.run.sinks import (
    ProbeSetChangedError,
    RunDirectoryExistsError,
    RunDirectorySink,
    RunInfo,
    Sink,
    write_json_atomic,
)

TESTS_DIR = Path(__file__).parent


def _run_checks(sink, probes: ProbeSet, steps: list[int], first_index: int = 0, alert_at: int | None = None):
    results = []
    for offset, step in enumerate(steps):
        index = first_index + offset
        results.append(make_result(index, step, new_alert=index == alert_at))
        sink.log_check(results[-1], make_summary(results, probes))
    return results


def _recorded_run(root: Path, probes: ProbeSet, steps: list[int]) -> RunDirectorySink:
    """A finished-looking run ``root/demo`` with one check per step, for resume tests."""
    sink = RunDirectorySink(root, render_report=False)
    sink.start(RunInfo(name="demo", probes=probes))
    _run_checks(sink, probes, steps)
    return sink


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- package


def test_importing_sinks_imports_neither_wandb_nor_tensorboard():
    code = (
        "import sys, explain_callbacks.sinks as s; "
        "assert s.RunDirectorySink; "
        "bad = [m for m in ('wandb', 'tensorboard', 'torch.utils.tensorboard', 'tensorboardX') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sinks_satisfy_the_protocol(tmp_path):
    from explain_callbacks.run.sinks import TensorBoardSink, WandbSink

    assert isinstance(RunDirectorySink(tmp_path), Sink)
    assert isinstance(TensorBoardSink(log_dir=tmp_path / "tb"), Sink)
    assert isinstance(WandbSink(), Sink)


# --------------------------------------------------------------------------- run directory


def test_run_directory_writes_every_file(tmp_path):
    probes = make_probes()
    sink = RunDirectorySink(tmp_path, render_report=False)
    sink.start(RunInfo(name="demo", probes=probes))
    assert sink.path == tmp_path / "demo"
    assert ProbeSet.from_file(sink.path / "probes.jsonl").fingerprint == probes.fingerprint

    results = _run_checks(sink, probes, [10, 20, 30], alert_at=1)
    final = make_summary(results, probes, status="finished")
    sink.finish(final)

    snapshots = [Snapshot.from_dict(d) for d in _lines(sink.path / "attributions.jsonl")]
    assert [s.check_index for s in snapshots] == [0, 1, 2]
    assert [s.step for s in snapshots] == [10, 20, 30]
    assert snapshots[2].attributions[0].word_shares[2] == pytest.approx(0.5)
    assert snapshots[0].attributions[2].text == HOSTILE_TEXT
    assert json.loads((sink.path / "summary.json").read_text(encoding="utf-8")) == {**final, "write_failures": []}
    assert (sink.path / "summary.json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in sink.path.iterdir()) == [".lock", "attributions.jsonl", "probes.jsonl", "summary.json"]


def test_summary_is_rewritten_atomically_after_each_check(tmp_path):
    probes = make_probes()
    sink = RunDirectorySink(tmp_path, name="atomic", render_report=False)
    sink.start(RunInfo(name="ignored", probes=probes))
    assert sink.path == tmp_path / "atomic"
    for n in range(1, 4):
        _run_checks(sink, probes, [n * 10], first_index=n - 1)
        summary = json.loads((sink.path / "summary.json").read_text(encoding="utf-8"))
        assert summary["checks"][-1]["step"] == n * 10
        assert not [p.name for p in sink.path.iterdir() if p.name.endswith(".tmp")]


def test_write_json_atomic_keeps_the_old_file_when_serialising_fails(tmp_path):
    target = tmp_path / "data.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_second_run_with_the_same_name_is_refused(tmp_path):
    probes = make_probes()
    _recorded_run(tmp_path, probes, [10])

    with pytest.raises(RunDirectoryExistsError) as err:
        RunDirectorySink(tmp_path, render_report=False).start(RunInfo(name="demo", probes=probes))
    message = str(err.value)
    assert str(tmp_path / "demo") in message and "resume=True" in message and "new run name" in message
    assert isinstance(err.value, ValueError)
    assert len(_lines(tmp_path / "demo" / "attributions.jsonl")) == 1


def test_a_started_run_without_checks_does_not_block_the_name(tmp_path):
    probes = make_probes()
    RunDirectorySink(tmp_path, render_report=False).start(RunInfo(name="demo", probes=probes))
    other = make_probes(extra="another text")
    sink = RunDirectorySink(tmp_path, render_report=False)
    sink.start(RunInfo(name="demo", probes=other))
    assert ProbeSet.from_file(sink.path / "probes.jsonl").fingerprint == other.fingerprint


@pytest.mark.parametrize("via", ["sink", "run_info"])
def test_resume_with_the_same_probes_appends(tmp_path, via):
    probes = make_probes()
    _recorded_run(tmp_path, probes, [10, 20])

    resumed = RunDirectorySink(tmp_path, resume=via == "sink", render_report=False)
    resumed.start(RunInfo(name="demo", probes=make_probes(), resume=via == "run_info"))
    _run_checks(resumed, probes, [30], first_index=2)
    assert [d["step"] for d in _lines(tmp_path / "demo" / "attributions.jsonl")] == [10, 20, 30]


def test_resume_with_changed_probes_is_refused(tmp_path):
    probes = make_probes()
    _recorded_run(tmp_path, probes, [10])

    with pytest.raises(ProbeSetChangedError) as err:
        RunDirectorySink(tmp_path, resume=True).start(RunInfo(name="demo", probes=make_probes(extra="new probe")))
    assert "other probes" in str(err.value) and "probes.jsonl" in str(err.value)
    assert ProbeSet.from_file(tmp_path / "demo" / "probes.jsonl").fingerprint == probes.fingerprint


def test_resume_checks_the_summary_fingerprint_when_probes_file_is_gone(tmp_path):
    probes = make_probes()
    _recorded_run(tmp_path, probes, [10])
    (tmp_path / "demo" / "probes.jsonl").unlink()
    with pytest.raises(ProbeSetChangedError):
        RunDirectorySink(tmp_path, resume=True).start(RunInfo(name="demo", probes=make_probes(extra="x")))
    RunDirectorySink(tmp_path, resume=True).start(RunInfo(name="demo", probes=probes))
    assert ProbeSet.from_file(tmp_path / "demo" / "probes.jsonl").fingerprint == probes.fingerprint


def test_truncate_after_check_drops_the_abandoned_history(tmp_path):
    probes = make_probes()
    _recorded_run(tmp_path, probes, [10, 20, 30, 40])

    resumed = RunDirectorySink(tmp_path, resume=True, render_report=False)
    resumed.start(RunInfo(name="demo", probes=probes))
    assert resumed.truncate_after_check(1) == 2
    _run_checks(resumed, probes, [25], first_index=2)
    records = _lines(tmp_path / "demo" / "attributions.jsonl")
    assert [(d["check_index"], d["step"]) for d in records] == [(0, 10), (1, 20), (2, 25)]
    assert resumed.truncate_after_check(5) == 0


def test_resume_cuts_a_torn_last_line(tmp_path):
    probes = make_probes()
    _recorded_run(tmp_path, probes, [10])
    path = tmp_path / "demo" / "attributions.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"check_index": 1, "step": 2')  # a write cut short by a kill

    resumed = RunDirectorySink(tmp_path, resume=True, render_report=False)
    resumed.start(RunInfo(name="demo", probes=probes))
    _run_checks(resumed, probes, [20], first_index=1)
    assert [d["step"] for d in _lines(path)] == [10, 20]


def test_bad_run_names_are_refused_at_construction(tmp_path):
    for name in ["", "../escape", "a/b"]:
        with pytest.raises(ValueError, match="single, non-empty folder name"):
            RunDirectorySink(tmp_path, name=name)


def test_finish_renders_the_report_or_warns(tmp_path, caplog):
    probes = make_probes()
    sink = RunDirectorySink(tmp_path)
    sink.start(RunInfo(name="demo", probes=probes))
    results = _run_checks(sink, probes, [10, 20], alert_at=1)
    sink.finish(make_summary(results, probes, status="finished"))
    try:
        import explain_callbacks.run.report  # noqa: F401
    except ImportError:
        assert "report module is unavailable" in caplog.text
    else:
        html = (sink.path / "report.html").read_text(encoding="utf-8")
        assert "<script>document.title" not in html
        assert "&lt;script&gt;" in html


def test_a_run_killed_mid_training_leaves_a_readable_directory(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from helpers.sink_records import make_probes, make_result, make_summary
        from explain_callbacks.run.sinks import RunDirectorySink, RunInfo

        probes = make_probes()
        sink = RunDirectorySink({str(tmp_path)!r})
        sink.start(RunInfo(name="killed", probes=probes))
        results = []
        for index, step in enumerate([10, 20]):
            results.append(make_result(index, step, new_alert=index == 1))
            sink.log_check(results[-1], make_summary(results, probes))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    run_dir = tmp_path / "killed"
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "running" and len(summary["checks"]) == 2
    assert [d["step"] for d in _lines(run_dir / "attributions.jsonl")] == [10, 20]
    assert not (run_dir / "report.html").exists()

    cli = pytest.importorskip("explain_callbacks.cli", reason="the CLI module is not written yet")
    assert cli.main(["check", str(run_dir), "--fail-on", "warning"]) == 1
    assert cli.main(["check", str(run_dir), "--fail-on", "error"]) == 0


# --------------------------------------------------------------------------- TensorBoard


def _event_accumulator(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
    acc.Reload()
    return acc


def _text_at(acc, tag: str) -> dict[int, str]:
    from tensorboard.util import tensor_util

    return {e.step: tensor_util.make_ndarray(e.tensor_proto).item().decode("utf-8") for e in acc.Tensors(tag)}


def test_tensorboard_sink_writes_scalars_text_histogram_and_layout(tmp_path):
    from explain_callbacks.run.sinks import TensorBoardSink

    probes = make_probes()
    sink = TensorBoardSink(log_dir=tmp_path / "tb")
    assert not (tmp_path / "tb").exists()  # nothing is opened before start
    sink.start(RunInfo(name="demo", probes=probes))
    results = _run_checks(sink, probes, [10, 20], alert_at=1)
    sink.finish(make_summary(results, probes, status="finished"))
    assert sink.writer is None

    acc = _event_accumulator(tmp_path / "tb")
    tags = acc.Tags()
    assert set(results[0].scalars()) <= set(tags["scalars"])
    jaccard = acc.Scalars("attribution/drift/vs_previous/jaccard")
    assert [(e.step, round(e.value, 6)) for e in jaccard] == [(10, 0.5), (20, 0.6)]
    assert [round(e.value, 6) for e in acc.Scalars("attribution/alerts/new")] == [0.0, 1.0]

    tables = _text_at(acc, "attribution/top_tokens/text_summary")
    assert sorted(tables) == [10, 20]
    assert "&lt;script&gt;\\|x" in tables[20] and "<script>" not in tables[20]
    alerts = _text_at(acc, "attribution/alerts/text_summary")
    assert list(alerts) == [20] and "watch\\_token" in alerts[20]

    from tensorboard import plugin_util

    rendered = plugin_util.markdown_to_safe_html(tables[20])
    assert rendered.count("<tr>") == 4 and rendered.count("<td>") == 3 * 6  # the pipe did not split a cell

    hist = acc.Histograms("attribution/convergence/rel_delta")
    assert [h.step for h in hist] == [10, 20]
    assert hist[1].histogram_value.num == 3
    assert hist[1].histogram_value.max == pytest.approx(0.1)
    assert "custom_scalars__config__" in tags["tensors"]


def test_tensorboard_sink_reuses_and_does_not_close_a_given_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from explain_callbacks.run.sinks import TensorBoardSink

    probes = make_probes()
    writer = SummaryWriter(log_dir=str(tmp_path / "shared"))
    sink = TensorBoardSink(writer=writer, prefix="explain")
    sink.start(RunInfo(name="demo", probes=probes))
    results = _run_checks(sink, probes, [5])
    sink.finish(make_summary(results, probes))
    writer.add_scalar("train/loss", 1.5, global_step=6)  # still open: the sink did not close it
    writer.close()

    acc = _event_accumulator(tmp_path / "shared")
    assert [e.step for e in acc.Scalars("explain/drift/vs_reference/rbo")] == [5]
    assert [e.value for e in acc.Scalars("train/loss")] == [1.5]
    assert not [t for t in acc.Tags()["scalars"] if t.startswith("attribution/")]


def test_tensorboard_sink_refuses_bad_construction():
    from explain_callbacks.run.sinks import TensorBoardSink

    with pytest.raises(ValueError, match="writer .* or a log_dir"):
        TensorBoardSink()
    with pytest.raises(ValueError, match="add_scalar"):
        TensorBoardSink(writer=object())


# --------------------------------------------------------------------------- Weights & Biases


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    import wandb

    yield wandb
    if wandb.run is not None:
        wandb.run.finish()


def _wandb_records(run_file: Path):
    """The records of an offline ``.wandb`` file (LevelDB log framing of W&B protobufs)."""
    from wandb.proto import wandb_internal_pb2

    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if (kind == 0 and length == 0) or pos + 7 + length > len(raw):  # padding, or still being written
            break
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _history_rows(records) -> list[dict]:
    """History records as nested dicts (W&B splits a media value into one item per nested key)."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            *parents, last = list(item.nested_key) or [item.key]
            node = row
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = json.loads(item.value_json)
        rows.append(row)
    return rows


def _finished_run_records(run_file: Path, timeout_s: float = 60.0):
    """Wait until W&B's service has written the run's exit record, then return all records."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = _wandb_records(run_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_wandb_sink_logs_to_an_offline_run(tmp_path, wandb_env):
    from explain_callbacks.run.sinks import WandbSink

    wandb = wandb_env
    probes = make_probes()
    run = wandb.init(mode="offline", dir=str(tmp_path), project="explain-callbacks-test")
    for i in range(5):  # the framework's own logging: W&B's step is ahead of the check's step
        run.log({"train/loss": 1.0 / (i + 1), "trainer/global_step": i})
    sink = WandbSink(run=run, step_key="trainer/global_step")
    sink.start(RunInfo(name="demo", probes=probes))
    results = _run_checks(sink, probes, [2, 4], alert_at=1)  # alerts are skipped offline
    final = make_summary(results, probes, status="finished")
    sink.finish(final)

    assert run.summary["attribution/n_checks"] == 2
    assert run.summary["attribution/stabilisation_step"] == 4
    assert run.summary["attribution/n_alerts"] == 1
    assert [a["token"] for a in run.summary["attribution/alerts"]] == ["<script>|x"]
    assert run.summary["attribution/drift/vs_previous/jaccard"] == pytest.approx(0.6)
    run_file = next(Path(run.settings.sync_dir).glob("*.wandb"))
    run.finish()

    records = _finished_run_records(run_file)
    metrics = [r.metric for r in records if r.WhichOneof("record_type") == "metric"]
    assert any(m.glob_name == "attribution/*" and m.step_metric == "trainer/global_step" for m in metrics)
    rows = [row for row in _history_rows(records) if "attribution/drift/vs_previous/jaccard" in row]
    assert [row["trainer/global_step"] for row in rows] == [2, 4]
    assert [round(row["attribution/drift/vs_previous/jaccard"], 6) for row in rows] == [0.5, 0.6]
    assert [row["_step"] for row in rows] == [5, 6]  # no step= passed: W&B's counter kept going
    assert rows[1]["attribution/top_tokens"]["_type"] == "table-file"
    assert rows[1]["attribution/top_tokens"]["nrows"] == 3  # the current check's top words, not the run so far
    try:
        import explain_callbacks.run.report  # noqa: F401
    except ImportError:
        assert "attribution/heatmap" not in rows[1]
    else:
        assert rows[1]["attribution/heatmap"]["_type"] == "html-file"
        heatmap = next(Path(run.settings.sync_dir).glob("files/media/html/attribution/heatmap_*.html"))
        assert "&lt;script&gt;" in heatmap.read_text(encoding="utf-8")


def test_wandb_sink_uses_the_active_run_and_works_disabled(tmp_path, wandb_env):
    from explain_callbacks.run.sinks import WandbSink

    wandb = wandb_env
    probes = make_probes()
    run = wandb.init(mode="disabled")
    sink = WandbSink(step_key="train/global_step", log_tables=True)
    sink.start(RunInfo(name="demo", probes=probes))
    assert sink.run is run
    results = _run_checks(sink, probes, [3, 6], alert_at=1)
    sink.finish(make_summary(results, probes, status="finished"))
    assert run.summary["attribution/n_checks"] == 2
    run.finish()


def test_wandb_sink_without_a_run_fails_clearly_at_start(wandb_env):
    from explain_callbacks.run.sinks import WandbSink

    assert wandb_env.run is None
    sink = WandbSink()  # construction is fine: a run may be started later
    with pytest.raises(RuntimeError, match="wandb.init"):
        sink.start(RunInfo(name="demo", probes=make_probes()))
    with pytest.raises(ValueError, match="step_key"):
        WandbSink(step_key="attribution/step")


def _wide_result(check_index: int):
    """A check whose token table holds 15 words (the tracker ranks every probe word) plus one that
    left the top: the tables must show only the top-k of this check."""
    result = make_result(check_index, step=2 * (check_index + 1))
    rows = [{"word": f"w{check_index}_{i}", "mean_abs_share": 0.9 - 0.05 * i, "mean_share": 0.5 - 0.01 * i,
             "sum_share": 0.5, "n_probes": 2, "rank": i + 1} for i in range(15)]
    rows.append({"word": "gone", "mean_abs_share": 0.01, "mean_share": 0.0, "sum_share": 0.0, "n_probes": 1,
                 "rank": None, "left": True})
    result.token_table = rows
    return result


def test_tensorboard_top_words_are_this_checks_top_k_with_mean_abs_share():
    from explain_callbacks.run.sinks.tensorboard import token_table_markdown

    summary = {"config": {"top_k": 10}}
    text = token_table_markdown(_wide_result(0), summary)
    lines = text.splitlines()
    assert lines[0] == "| rank | word | mean abs share | mean share | sum share | probes |"
    assert len(lines) == 2 + 10 and "gone" not in text
    assert lines[2].startswith("| 1 | w0\\_0 | 0.9000 | 0.5000 |")


def test_wandb_top_tokens_is_the_current_checks_top_k(tmp_path, wandb_env):
    from explain_callbacks.run.sinks import WandbSink
    from explain_callbacks.run.sinks.wandb import TOKEN_TABLE_COLUMNS

    wandb = wandb_env
    probes = make_probes()
    run = wandb.init(mode="offline", dir=str(tmp_path), project="explain-callbacks-test")
    sink = WandbSink(run=run)
    sink.start(RunInfo(name="demo", probes=probes))
    logged = []
    original = run.log
    run.log = lambda data, *a, **k: (logged.append(data), original(data, *a, **k))[1]
    for index in range(3):
        result = _wide_result(index)
        sink.log_check(result, {"config": {"top_k": 10}, "checks": [], "alerts": []})
    run.finish()
    assert "mean_abs_share" in TOKEN_TABLE_COLUMNS
    for index, data in enumerate(logged):
        table = data["attribution/top_tokens"]
        assert table.columns == TOKEN_TABLE_COLUMNS
        assert len(table.data) == 10  # not 15 words, not 10 x (checks so far)
        assert {row[0] for row in table.data} == {index}
        first = dict(zip(table.columns, table.data[0]))
        assert first["word"] == f"w{index}_0" and first["mean_abs_share"] == pytest.approx(0.9)


def test_a_logger_the_user_passed_and_the_one_the_integration_found_are_one_sink(tmp_path, bert_tok):
    from tiny_models import tiny_model
    from torch.utils.tensorboard import SummaryWriter

    from explain_callbacks import AttributionEngine, AttributionMonitor
    from explain_callbacks.run.sinks import TensorBoardSink, framework_sink

    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    engine = AttributionEngine(tiny_model("bert", bert_tok), bert_tok, n_steps=4, max_steps=4)
    monitor = AttributionMonitor(engine, ["good film"], run_dir=None, verbose=False, sinks=[TensorBoardSink(writer=writer)])
    monitor.add_sink(framework_sink(writer=writer))  # what an integration adds for the trainer's logger
    monitor.add_sink(framework_sink(log_dir=tmp_path / "other"))
    assert [type(s).__name__ for s in monitor.sinks] == ["TensorBoardSink", "TensorBoardSink"]
    with pytest.raises(ValueError, match="one of them"):
        framework_sink(writer=writer, run=object())
    writer.close()
