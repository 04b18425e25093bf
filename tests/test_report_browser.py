"""The rendered report in a real browser: headless Chromium loads report.html from disk, the
page raises no console error, probe text built to run script stays inert text, and a run with a
planted shortcut reads at 1400 and 800 px wide (the verdict first, nothing wider than the window).

Screenshots go to the test's tmp dir, and also to ``$EXPLAIN_CALLBACKS_SCREENSHOTS`` when that is
set (to look at them); they are never committed."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.sink_records import make_result, make_summary
from helpers.verdict_runs import shortcut_run

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.run.sinks import RunDirectorySink, RunInfo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.path.exists("/usr/bin/chromium"):
    CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

PAYLOADS = [
    "<script>document.title='pwned'</script> a great film",
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\"> dull film",
    "</td></tr></table><svg onload=\"document.body.setAttribute('data-pwned','svg')\"> | pipe",
]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def _console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.fixture
def report_path(tmp_path) -> Path:
    report = pytest.importorskip("explain_callbacks.report", reason="report module missing")
    probes = ProbeSet([{"text": text, "id": f"x{i}", "label": i % 2} for i, text in enumerate(PAYLOADS)])
    sink = RunDirectorySink(tmp_path / "runs")
    sink.start(RunInfo(name="browser-demo", probes=probes))
    results = []
    for index, step in enumerate([10, 20]):
        result = make_result(index, step, new_alert=index == 1)
        for attribution, text in zip(result.snapshot.attributions, PAYLOADS):
            attribution.text = text
            attribution.words = text.split()[: len(attribution.words)]
        results.append(result)
        sink.log_check(result, make_summary(results, probes))
    summary = make_summary(results, probes, status="finished")
    summary["run_name"] = "browser-demo"
    sink.finish(summary)
    path = sink.path / "report.html"
    if not path.exists():  # finish() only warns when rendering fails; make the failure visible here
        report.render_report(sink.path)
    return path


def test_report_loads_without_console_errors_and_probe_text_stays_text(report_path, tmp_path):
    proc = _chromium("--dump-dom", report_path.resolve().as_uri(), profile=tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert _console_problems(proc.stderr) == []

    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None and html.unescape(title.group(1)).strip() == "Attribution report: browser-demo"
    body_tag = re.search(r"<body[^>]*>", dom)
    assert body_tag is not None and "pwned" not in body_tag.group(0)  # no handler ran
    assert "<script>document.title" not in dom and "<img src=\"x\"" not in dom and "<svg" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom


def test_report_renders_to_a_screenshot(report_path, tmp_path):
    shot = tmp_path / "report.png"
    proc = _chromium(
        f"--screenshot={shot}", "--window-size=1280,2000", report_path.resolve().as_uri(), profile=tmp_path / "profile"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console_problems(proc.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _keep(shot: Path) -> None:
    folder = os.environ.get("EXPLAIN_CALLBACKS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / shot.name)


def _page_width(report: Path, width: int, tmp_path: Path) -> int:
    """How wide the page lays out in a ``width`` px window: a copy of the report with a line of
    script that writes ``scrollWidth`` into the title (the report itself has no script)."""
    probe = tmp_path / f"measure-{width}.html"
    probe.write_text(
        report.read_text(encoding="utf-8").replace(
            "</body>", "<script>document.title = 'W' + document.documentElement.scrollWidth;</script></body>"
        ),
        encoding="utf-8",
    )
    proc = _chromium("--dump-dom", f"--window-size={width},1000", probe.resolve().as_uri(), profile=tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r"<title>W(\d+)</title>", proc.stdout)
    assert found, proc.stdout[:500]
    return int(found.group(1))


@pytest.mark.parametrize("width", [1400, 800])
def test_shortcut_report_reads_at_width(tmp_path, width):
    report = pytest.importorskip("explain_callbacks.report", reason="report module missing")
    path = report.render_report(shortcut_run(tmp_path / "medboard"))
    assert _page_width(path, width, tmp_path) <= width  # no sideways scrolling: wide tables scroll in their box
    shot = tmp_path / f"report-shortcut-{width}.png"
    proc = _chromium(f"--screenshot={shot}", f"--window-size={width},1600", path.resolve().as_uri(),
                     profile=tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console_problems(proc.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    _keep(shot)
