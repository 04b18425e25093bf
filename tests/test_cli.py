"""The ``explain-callbacks`` command: exit codes, one-line errors, tables that print user text as is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.rundir_factory import ATTR_BREAK, MARKUP, SCRIPT, make_alert, make_snapshot, write_run_dir

from explain_callbacks.attribution.records import Alert
from explain_callbacks.run.cli import failing_alerts, main

pytestmark = pytest.mark.usefixtures("wide_terminal")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_clean_run_exits_0(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "clean", n_checks=2)
    code, out, err = run_cli(capsys, "check", str(run_dir))
    assert code == 0
    assert "OK: no alerts at or above warning (2 checks, 0 alerts in all)" in out
    assert err == ""


def test_check_warning_alert_exits_1_unless_fail_on_error(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "warned", alerts=[make_alert("warning"), make_alert("info", rule="other")])
    code, out, _ = run_cli(capsys, "check", str(run_dir))
    assert code == 1
    assert "FAIL: 1 alerts at or above warning (2 alerts in all)" in out
    assert SCRIPT in out and MARKUP in out  # user text printed as written, not read as markup
    code, out, _ = run_cli(capsys, "check", str(run_dir), "--fail-on", "error")
    assert code == 0
    assert "OK: no alerts at or above error" in out


def test_check_error_alert_fails_both_thresholds(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "errored", alerts=[make_alert("error")])
    assert run_cli(capsys, "check", str(run_dir))[0] == 1
    assert run_cli(capsys, "check", str(run_dir), "--fail-on", "error")[0] == 1


def test_cleared_alerts_count_unless_active_only(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "cleared", alerts=[make_alert("warning", active=False)])
    code, out, _ = run_cli(capsys, "check", str(run_dir))
    assert code == 1 and "cleared" in out
    code, out, _ = run_cli(capsys, "check", str(run_dir), "--active-only")
    assert code == 0 and "no active alerts" in out


def test_failing_alerts_threshold():
    alerts = [make_alert("info"), make_alert("warning", active=False), make_alert("error")]
    assert [a.severity for a in failing_alerts(alerts, "warning")] == ["warning", "error"]
    assert [a.severity for a in failing_alerts(alerts, "error")] == ["error"]
    assert [a.severity for a in failing_alerts(alerts, "warning", active_only=True)] == ["error"]
    assert failing_alerts([Alert("r", "info", "m", "k")], "warning") == []


def test_killed_run_with_truncated_attributions_is_still_checked(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "killed", n_checks=2, status="running", alerts=[make_alert()])
    with open(run_dir / "attributions.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(make_snapshot(2).to_dict())[:99])
    code, out, err = run_cli(capsys, "check", str(run_dir))
    assert code == 1 and "has not finished" in out and err == ""
    code, out, err = run_cli(capsys, "report", str(run_dir))
    assert code == 0 and err == ""
    assert Path(out.strip()) == run_dir / "report.html"
    assert "incomplete" in (run_dir / "report.html").read_text(encoding="utf-8")


def _corrupt_json(run_dir: Path) -> None:
    (run_dir / "summary.json").write_text('{"schema_version": 1, "checks": [', encoding="utf-8")


def _missing_summary(run_dir: Path) -> None:
    (run_dir / "summary.json").unlink()


def _future_schema(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    summary["schema_version"] = 2
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_corrupt_json, "is not valid JSON"),
        (_missing_summary, "has no summary.json"),
        (_future_schema, "schema_version 2"),
    ],
)
@pytest.mark.parametrize("command", ["check", "report", "show"])
def test_unusable_run_dir_exits_2_with_one_line(tmp_path, capsys, damage, reason, command):
    run_dir = write_run_dir(tmp_path / "bad", alerts=[make_alert()])
    damage(run_dir)
    code, out, err = run_cli(capsys, command, str(run_dir))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("explain-callbacks: error: ") and reason in err


def test_missing_directory_exits_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "check", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_damaged_attributions_fail_report_but_not_check(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "mid", n_checks=3)
    lines = (run_dir / "attributions.jsonl").read_text(encoding="utf-8").splitlines()
    lines[0] = "{oops"
    (run_dir / "attributions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run_cli(capsys, "check", str(run_dir))[0] == 0  # the gate reads summary.json only
    code, _, err = run_cli(capsys, "report", str(run_dir))
    assert code == 2 and "attributions.jsonl:1" in err


def test_report_to_chosen_file(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "run", n_checks=2)
    target = tmp_path / "out" / "r.html"
    code, out, _ = run_cli(capsys, "report", str(run_dir), "-o", str(target))
    assert code == 0 and out.strip() == str(target)
    assert "&lt;script&gt;" in target.read_text(encoding="utf-8")
    assert not (run_dir / "report.html").exists()


def test_show_prints_drift_top_words_alerts_and_candidates(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "run", n_checks=3, alerts=[make_alert("error")])
    code, out, err = run_cli(capsys, "show", str(run_dir))
    assert code == 0 and err == ""
    assert "Drift per check" in out and "overlap prev" in out
    assert "0.540" in out  # vs_previous at check 2
    assert "Top words at the last check (check 2, step 30)" in out
    assert SCRIPT in out and MARKUP in out and ATTR_BREAK in out
    assert "Shortcut candidates" in out and "0.800" in out
    assert "watch_token" in out and "step 20, epoch 1" in out and "active" in out


def test_show_prints_emoji_codes_and_markup_as_written(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "run", n_checks=1, run_name=":smile: [red]x[/red]")
    code, out, _ = run_cli(capsys, "show", str(run_dir))
    assert code == 0 and ":smile: [red]x[/red]" in out


def test_show_zero_checks(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "empty", n_checks=0, write_attributions=False)
    code, out, _ = run_cli(capsys, "show", str(run_dir))
    assert code == 0 and "No checks recorded." in out and "No alerts." in out
    assert "Drift per check" not in out


def test_usage_errors_and_help(capsys):
    assert main([]) == 2
    assert main(["check"]) == 2
    assert main(["check", "x", "--fail-on", "info"]) == 2
    assert main(["--help"]) == 0
    assert "check" in capsys.readouterr().out


def test_python_dash_m_runs_the_same_command(tmp_path):
    run_dir = write_run_dir(tmp_path / "warned", alerts=[make_alert("warning")])
    result = subprocess.run(
        [sys.executable, "-m", "explain_callbacks", "check", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "FAIL: 1 alerts" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "explain_callbacks", "check", str(run_dir), "--fail-on", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_commands_accept_the_folder_of_runs_and_say_which_run_they_use(tmp_path, capsys):
    import os

    runs = tmp_path / "explain_runs"
    older = write_run_dir(runs / "run-a", n_checks=1, alerts=[make_alert("warning")])
    newer = write_run_dir(runs / "run-b", n_checks=2)
    os.utime(older / "summary.json", (1_000_000_000, 1_000_000_000))
    (runs / "not-a-run").mkdir()
    code, out, err = run_cli(capsys, "check", str(runs))
    assert code == 0 and "OK" in out  # run-b, the latest, is clean; run-a is not looked at
    assert err == f"explain-callbacks: {runs} holds 2 run(s); using the latest, run-b\n"
    code, out, err = run_cli(capsys, "report", str(runs))
    assert code == 0 and Path(out.strip()) == newer / "report.html" and "run-b" in err
    code, _, err = run_cli(capsys, "check", str(runs / "not-a-run"))
    assert code == 2 and "has no summary.json" in err


def test_a_loaded_run_displays_itself_in_a_notebook(tmp_path):
    from html.parser import HTMLParser

    from explain_callbacks.run.report import load_run

    shown = load_run(write_run_dir(tmp_path / "nb", n_checks=2, alerts=[make_alert()]))._repr_html_()
    tags = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, dict(attrs)))

    Tags().feed(shown)
    assert [t for t, _ in tags] == ["iframe"]  # one sandboxed frame: the report's CSS stays inside it
    frame = tags[0][1]
    assert frame["sandbox"] == "" and "Attribution report" in frame["srcdoc"]
    assert "<script>alert(1)</script>" not in frame["srcdoc"]  # still escaped inside the frame
