"""Report escaping (browser-free) and CLI exit codes on good, alerting and unusable run directories."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser

import pytest

from explain_callbacks.cli import main
from explain_callbacks.report import render_heatmap_html, render_report
from rundir_factory import ATTR_BREAK, SCRIPT, make_alert, make_snapshot, write_run_dir


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(html: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(html)
    return parser.tags


@pytest.mark.parametrize("n_checks", [0, 1, 4])
def test_report_escapes_every_probe_text(tmp_path, n_checks):
    run = write_run_dir(tmp_path / "run", n_checks=n_checks, alerts=[make_alert()])
    html = render_report(run).read_text(encoding="utf-8")
    assert SCRIPT not in html and ATTR_BREAK not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tags = _parse(html)
    assert not [t for t, _ in tags if t in ("script", "iframe", "object", "embed")]
    assert not [t for t, a in tags if any(k.startswith("on") for k in a)]
    assert all(a.get("src", "data:").startswith("data:") for t, a in tags if t == "img")  # self-contained
    assert "http://" not in html and "https://" not in html


def test_heatmap_fragment_is_escaped():
    html = render_heatmap_html(make_snapshot(0))
    assert SCRIPT not in html and "&lt;script&gt;" in html
    assert not [t for t, _ in _parse(html) if t == "script"]


def test_check_exit_codes(tmp_path, capsys):
    clean = write_run_dir(tmp_path / "clean")
    warned = write_run_dir(tmp_path / "warned", alerts=[make_alert("warning")])
    info = write_run_dir(tmp_path / "info", alerts=[make_alert("info", rule="convergence")])
    assert main(["check", str(clean)]) == 0
    assert main(["check", str(warned)]) == 1
    assert main(["check", str(warned), "--fail-on", "error"]) == 0
    assert main(["check", str(info), "--fail-on", "warning"]) == 0
    erred = write_run_dir(tmp_path / "erred", alerts=[make_alert("error")])
    assert main(["check", str(erred), "--fail-on", "error"]) == 1


def test_unusable_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing")]) == 2
    corrupt = write_run_dir(tmp_path / "corrupt")
    (corrupt / "summary.json").write_text("{not json", encoding="utf-8")
    capsys.readouterr()
    assert main(["check", str(corrupt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1
    future = write_run_dir(tmp_path / "future", schema_version=99)
    assert main(["check", str(future)]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_killed_run_is_still_usable(tmp_path):
    run = write_run_dir(tmp_path / "killed", n_checks=2, status="running", alerts=[make_alert()])
    with open(run / "attributions.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"check_index": 2, "attrib')  # torn last line
    assert main(["check", str(run)]) == 1
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 0
    assert main(["show", str(run)]) == 0


def test_module_entry_point(tmp_path):
    run = write_run_dir(tmp_path / "run", alerts=[make_alert()])
    done = subprocess.run([sys.executable, "-m", "explain_callbacks", "check", str(run)], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
