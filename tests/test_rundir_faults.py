"""The faults the run directory must survive (issue 13), each injected for real: a write cut
short by the operating system, two runs claiming one folder, a resume without its state, failed
checks, damaged summaries, hostile names and text.

A fault is injected below our code (an ``RLIMIT_FSIZE`` the kernel enforces, ``os.write``
failing part-way, a real model whose forward raises), never by replacing our own functions.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.sink_records import make_probes, make_result, make_summary

from explain_callbacks.run.cli import main as cli_main
from explain_callbacks.run.directory import RunDirectoryInUseError, append_record, default_run_name, validate_run_name
from explain_callbacks.run.readers import read_records, read_snapshots
from explain_callbacks.run.sinks import ResumeWithoutStateError, RunDirectorySink, RunInfo

TESTS_DIR = Path(__file__).parent


def _checks(sink, probes, indices):
    results = []
    for index in indices:
        results.append(make_result(index, 10 * (index + 1)))
        sink.log_check(results[-1], make_summary(results, probes))
    return results


def _summary(run_path: Path) -> dict:
    return json.loads((run_path / "summary.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- 1. disk full


def test_disk_full_then_freed_loses_one_check_and_corrupts_nothing(tmp_path):
    """The kernel stops the append part-way (RLIMIT_FSIZE: a full disk for this file), then the
    limit is lifted (the disk freed) and the run goes on."""
    pytest.importorskip("resource", reason="RLIMIT_FSIZE is POSIX")
    script = textwrap.dedent(
        f"""
        import json, resource, signal, sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from helpers.sink_records import make_probes, make_result, make_summary
        from explain_callbacks.run.sinks import RunDirectorySink, RunInfo

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        probes = make_probes()
        sink = RunDirectorySink({str(tmp_path)!r}, render_report=False)
        sink.start(RunInfo(name="full", probes=probes))
        results = []
        for index in range(4):
            results.append(make_result(index, 10 * (index + 1)))
            summary = make_summary(results, probes)
            limit = None
            if index == 2:  # room for half of this check's line
                size = sink.attributions_path.stat().st_size
                line = len(json.dumps(results[-1].snapshot.to_dict()))
                limit = size + line // 2
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            try:
                sink.log_check(results[-1], summary)
                print("check", index, "written")
            except OSError as err:
                print("check", index, "failed", err.errno)
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        sink.finish(make_summary(results, probes, status="finished"))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "check 2 failed" in proc.stdout and "check 3 written" in proc.stdout
    run_path = tmp_path / "full"
    records, notes = read_records(run_path / "attributions.jsonl")  # raises on a damaged line
    assert [r["check_index"] for _, r in records] == [0, 1, 3] and notes == []
    summary = _summary(run_path)
    assert len(summary["write_failures"]) == 1 and "check 2" in summary["write_failures"][0]
    assert cli_main(["check", str(run_path), "--fail-on", "error"]) == 1  # the loss is an error
    assert cli_main(["report", str(run_path)]) == 0
    resumed = RunDirectorySink(tmp_path, resume=True, render_report=False)
    resumed.start(RunInfo(name="full", probes=make_probes()))  # a resume reads it too
    assert resumed.write_failures == summary["write_failures"]


def test_enospc_part_way_through_an_append_is_rolled_back(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    append_record(path, {"check_index": 0})
    real_write = os.write

    def half_then_enospc(fd, data):
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(OSError) as err:
        append_record(path, {"check_index": 1, "padding": "x" * 100})
    assert err.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_text() == '{"check_index": 0}\n'  # the half line is gone
    append_record(path, {"check_index": 2})
    assert [r for _, r in read_records(path)[0]] == [{"check_index": 0}, {"check_index": 2}]


def test_a_torn_line_that_could_not_be_rolled_back_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"check_index": 0}\n{"check_index": 1, "pad')  # a rollback that never ran
    records, notes = read_records(path)
    assert [r["check_index"] for _, r in records] == [0] and "line 2 is incomplete" in notes[0]
    append_record(path, {"check_index": 2})
    assert path.read_text() == '{"check_index": 0}\n{"check_index": 2}\n'


def test_everything_written_is_strict_json(tmp_path):
    probes = make_probes()
    sink = RunDirectorySink(tmp_path, render_report=False)
    sink.start(RunInfo(name="nan", probes=probes))
    result = make_result(0, 10)
    result.snapshot.attributions[0].rel_delta = float("inf")
    result.snapshot.attributions[0].word_shares[0] = float("nan")
    summary = make_summary([result], probes)
    summary["checks"][0]["convergence"]["mean_rel_delta"] = float("nan")
    sink.log_check(result, summary)

    def refuse(name):
        raise AssertionError(f"{name} written")

    for name in ("attributions.jsonl", "summary.json", "probes.jsonl"):
        text = (sink.path / name).read_text(encoding="utf-8")
        for line in text.splitlines() if name.endswith("l") else [text]:
            json.loads(line, parse_constant=refuse)
    first = json.loads((sink.path / "attributions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["attributions"][0]["rel_delta"] is None and first["attributions"][0]["word_shares"][0] is None
    snapshots, _ = read_snapshots(sink.path / "attributions.jsonl")  # the reader takes the nulls
    assert len(snapshots[0].attributions) == 3
    assert cli_main(["report", str(sink.path)]) == 0  # and the report draws it


# --------------------------------------------------------------------------- 2. two runs


def test_two_runs_in_one_directory_are_refused_before_either_checks(tmp_path):
    probes = make_probes()
    first = RunDirectorySink(tmp_path, name="same", render_report=False)
    first.start(RunInfo(name="x", probes=probes))
    second = RunDirectorySink(tmp_path, name="same", render_report=False)
    with pytest.raises(RunDirectoryInUseError, match="being written by another run") as err:
        second.start(RunInfo(name="x", probes=probes))
    assert f"pid {os.getpid()}" in str(err.value) and "in this process that was never finished" in str(err.value)
    _checks(first, probes, [0])
    first.finish(make_summary([make_result(0, 10)], probes, status="finished"))
    with pytest.raises(ValueError, match="already holds a run"):  # after it: the usual refusal
        RunDirectorySink(tmp_path, name="same").start(RunInfo(name="x", probes=probes))


def test_the_claim_holds_across_processes_and_ends_with_the_process(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from helpers.sink_records import make_probes
        from explain_callbacks.run.sinks import RunDirectorySink, RunInfo

        sink = RunDirectorySink({str(tmp_path)!r}, name="shared", render_report=False)
        sink.start(RunInfo(name="shared", probes=make_probes()))
        print("started", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "started"
        with pytest.raises(RunDirectoryInUseError, match=f"pid {holder.pid}"):
            RunDirectorySink(tmp_path, name="shared").start(RunInfo(name="shared", probes=make_probes()))
    finally:
        holder.kill()  # a crash: no finish(), and still no stale claim
        holder.wait(timeout=60)
    RunDirectorySink(tmp_path, name="shared", render_report=False).start(RunInfo(name="shared", probes=make_probes()))


def test_default_run_names_are_unique_and_touch_no_global_rng():
    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    names = {default_run_name() for _ in range(200)}
    assert len(names) == 200
    assert all(n.startswith("run-") and f"-{os.getpid()}-" in n for n in names)
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])


# --------------------------------------------------------------------------- monitor-level faults


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import bert_tokenizer, tiny_model

    tok = bert_tokenizer(tmp_path_factory.mktemp("tok"))
    return tiny_model("bert", tok), tok


def _monitor(tiny, run_dir, **options):
    from explain_callbacks import AttributionEngine, AttributionMonitor

    model, tok = tiny
    engine = AttributionEngine(model, tok, n_steps=4, max_steps=8)
    probes = ["the movie was great", "a boring plot", "it was fun"]
    return AttributionMonitor(engine, probes, run_dir=run_dir, **options)


def test_two_monitors_with_one_run_name_cannot_interleave(tmp_path, tiny):
    first = _monitor(tiny, tmp_path, run_name="clash")
    second = _monitor(tiny, tmp_path, run_name="clash")
    first.setup()
    with pytest.raises(RunDirectoryInUseError):
        second.setup()
    assert _monitor(tiny, tmp_path).run_name != _monitor(tiny, tmp_path).run_name  # default names


def test_a_refused_monitor_writes_nothing_into_the_folder_it_was_refused(tmp_path, tiny):
    """It used to: b's finish() replaced a's summary.json and report.html with b's 0 checks."""
    a = _monitor(tiny, tmp_path, run_name="clash", verbose=False)
    b = _monitor(tiny, tmp_path, run_name="clash", verbose=False)
    b.probes = b.probes.__class__(["only", "two"])  # b's summary would hold 2 probes
    a.setup()
    with pytest.raises(RunDirectoryInUseError):
        b.setup()
    a.check(step=5, epoch=0)
    a.check(step=10, epoch=1)
    a.finish()
    report = (tmp_path / "clash" / "report.html").read_bytes()
    b.finish()
    with pytest.raises(RuntimeError, match="refused"):
        b.check(step=15, epoch=2)
    summary = _summary(tmp_path / "clash")
    assert summary["n_probes"] == 3 and [c["step"] for c in summary["checks"]] == [5, 10]
    assert (tmp_path / "clash" / "report.html").read_bytes() == report


def test_resume_without_checkpoint_state_is_refused(tmp_path, tiny):
    done = _monitor(tiny, tmp_path, run_name="r")
    done.check(step=5, epoch=0)
    done.finish()
    blind = _monitor(tiny, tmp_path, run_name="r", resume=True)
    with pytest.raises(ResumeWithoutStateError, match="no checkpoint state was loaded"):
        blind.setup()
    assert [c["step"] for c in _summary(tmp_path / "r")["checks"]] == [5]  # the history is intact


def test_resume_from_an_older_checkpoint_rewrites_the_summary_at_once(tmp_path, tiny, caplog):
    monitor = _monitor(tiny, tmp_path, run_name="old")
    monitor.check(step=5, epoch=0)
    state = monitor.state_dict()  # the checkpoint after check 0
    monitor.check(step=10, epoch=1)
    monitor.check(step=15, epoch=2)
    monitor.finish()
    resumed = _monitor(tiny, tmp_path, run_name="old")
    resumed.load_state_dict(state)
    with caplog.at_level(logging.WARNING):
        resumed.setup()
    assert [c["step"] for c in _summary(tmp_path / "old")["checks"]] == [5]  # before any new check
    assert "dropped the later check(s) 1 (step 10), 2 (step 15)" in caplog.text
    assert [r["step"] for _, r in read_records(tmp_path / "old" / "attributions.jsonl")[0]] == [5]


def test_stale_temporary_files_are_removed_at_start(tmp_path):
    run_path = tmp_path / "killed"
    run_path.mkdir()
    stale = run_path / ".summary.json.k1ll3d.tmp"
    stale.write_text("{half", encoding="utf-8")
    RunDirectorySink(tmp_path, render_report=False).start(RunInfo(name="killed", probes=make_probes()))
    assert not stale.exists()


# --------------------------------------------------------------------------- 4. failed checks


@pytest.mark.parametrize("fail_on", ["never", "error"])
def test_a_failed_check_is_recorded_and_fails_the_ci_gate(tmp_path, tiny, fail_on):
    model, _ = tiny
    monitor = _monitor(tiny, tmp_path, run_name=f"broken-{fail_on}", fail_on=fail_on)
    monitor.check(step=5, epoch=0)

    def broken_forward(module, args, kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    handle = model.register_forward_pre_hook(broken_forward, with_kwargs=True)
    try:
        if fail_on == "error":
            with pytest.raises(RuntimeError, match="device-side assert"):
                monitor.check(step=10, epoch=1)
        else:
            for step in (10, 15, 20):
                assert monitor.check(step=step, epoch=1) is None
    finally:
        handle.remove()
    summary = _summary(monitor.run_path)  # on disk before the exception left the check
    assert summary["failed_checks"] and "device-side assert" in summary["failed_checks"][0]
    assert cli_main(["check", str(monitor.run_path), "--fail-on", "error"]) == 1
    assert cli_main(["check", str(monitor.run_path), "--fail-on", "warning"]) == 1


def test_sink_failures_are_counted_and_reported(tmp_path, tiny, capsys, wide_terminal):
    class Unreachable:
        def start(self, run):
            pass

        def log_check(self, result, summary):
            raise ConnectionError("tracking server unreachable")

        def finish(self, summary):
            pass

    monitor = _monitor(tiny, tmp_path, run_name="sinkfail", sinks=[Unreachable()])
    monitor.check(step=5, epoch=0)
    summary = monitor.finish()
    assert summary["sink_errors"] == ["Unreachable.log_check: ConnectionError: tracking server unreachable"]
    assert cli_main(["check", str(monitor.run_path), "--fail-on", "warning"]) == 1
    assert cli_main(["check", str(monitor.run_path), "--fail-on", "error"]) == 0
    assert "tracking server unreachable" in capsys.readouterr().out
    resumed = _monitor(tiny, tmp_path, run_name="sinkfail")
    resumed.load_state_dict(monitor.state_dict())
    assert resumed.summary()["sink_errors"] == summary["sink_errors"]  # a resume keeps the count


# --------------------------------------------------------------------------- 7. run names


@pytest.mark.parametrize("name", ["..", ".", "", " ", "a/b", "../up", "/abs", "a\\b", " pad", "nul\x00"])
def test_run_names_that_leave_the_folder_are_refused_at_construction(tmp_path, tiny, name):
    from explain_callbacks.options import MonitorOptions

    with pytest.raises(ValueError, match="single, non-empty folder name"):
        validate_run_name(name)
    with pytest.raises(ValueError, match="single, non-empty folder name"):
        RunDirectorySink(tmp_path, name=name)
    with pytest.raises(ValueError, match="single, non-empty folder name"):
        MonitorOptions(run_name=name)
    if name:  # "" means "no name" to the monitor: a default one
        with pytest.raises(ValueError, match="single, non-empty folder name"):
            _monitor(tiny, tmp_path, run_name=name)
    assert list(tmp_path.iterdir()) == []
