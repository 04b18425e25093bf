"""The HTML report: escaping of user text, self-containment, and every run shape it meets."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest
from helpers.rundir_factory import (
    ATTR_BREAK,
    DOLLAR,
    MARKUP,
    SCRIPT,
    WORDS,
    make_alert,
    make_snapshot,
    write_run_dir,
)
from markupsafe import escape

from explain_callbacks.run.directory import RunDirError
from explain_callbacks.run.readers import load_summary, read_snapshots
from explain_callbacks.run.report import (
    HEATMAP_LAST_CHECKS,
    load_run,
    render_heatmap_html,
    render_report,
    share_background,
)


class DocumentScan(HTMLParser):
    """Collects what a browser would act on: tags, attributes, and the words in heatmap spans."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.heatmap_words: list[str] = []
        self.details = 0
        self._in_word = False
        self._word = ""

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "details" and attributes.get("class") != "raw":  # "raw": folded figures
            self.details += 1
        if tag == "span" and attributes.get("class") == "ec-hm-word":
            self._in_word, self._word = True, ""

    def handle_endtag(self, tag):
        if tag == "span" and self._in_word:
            self.heatmap_words.append(self._word)
            self._in_word = False

    def handle_data(self, data):
        if self._in_word:
            self._word += data


def scan(html: str) -> DocumentScan:
    parser = DocumentScan()
    parser.feed(html)
    parser.close()
    return parser


def assert_inert(html: str) -> DocumentScan:
    """No script, no event handler, no image but our own PNGs, nothing fetched from elsewhere."""
    doc = scan(html)
    tag_names = {tag for tag, _ in doc.tags}
    assert "script" not in tag_names
    assert not tag_names & {"iframe", "object", "embed", "link", "base", "form"}
    for tag, attributes in doc.tags:
        assert not [name for name in attributes if name.startswith("on")], (tag, attributes)
        if tag == "img":
            assert set(attributes) == {"class", "alt", "src"}
            assert attributes["src"].startswith("data:image/png;base64,")
            assert base64.b64decode(attributes["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert "<script" not in html.lower()
    return doc


def test_report_escapes_probe_text_and_is_self_contained(tmp_path):
    run_dir = write_run_dir(tmp_path / "run", n_checks=3, alerts=[make_alert()])
    path = render_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text(encoding="utf-8")
    doc = assert_inert(html)
    assert "onerror=alert(2)>" not in html.replace("&gt;", "")  # the raw attribute breaker is gone
    assert str(escape(SCRIPT)) in html and str(escape(ATTR_BREAK)) in html
    assert str(escape(f"the movie was great {SCRIPT}")) in html  # probe table
    # every word reaches the reader exactly as written: escaped once, not twice
    last_check_words = doc.heatmap_words[-sum(len(w) for w in WORDS.values()) :]
    assert last_check_words == [w for pid in ("p0", "p1", "p2") for w in WORDS[pid]]
    assert MARKUP in html and DOLLAR in html
    assert len([t for t, a in doc.tags if t == "img"]) == 3  # drift, trajectories, convergence
    assert doc.details == 3 + 1  # one per check, plus the probe list


def test_report_with_zero_checks(tmp_path):
    run_dir = write_run_dir(tmp_path / "empty", n_checks=0, write_attributions=False, status="running")
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert_inert(html)
    assert "No checks were recorded." in html
    assert "No attributions recorded." in html
    assert "attributions.jsonl is missing" in html
    assert "has not finished" in html
    assert "<img" not in html


def test_report_with_one_check_opens_its_heatmap(tmp_path):
    run_dir = write_run_dir(tmp_path / "one", n_checks=1)
    html = render_report(run_dir).read_text(encoding="utf-8")
    doc = assert_inert(html)
    opened = [a for t, a in doc.tags if t == "details" and "open" in a]
    assert len(opened) == 1
    assert doc.heatmap_words == [w for pid in ("p0", "p1", "p2") for w in WORDS[pid]]


def test_report_with_many_checks_keeps_first_and_last(tmp_path):
    n = HEATMAP_LAST_CHECKS + 6
    run_dir = write_run_dir(tmp_path / "many", n_checks=n, alerts=[make_alert("error"), make_alert("info", False, "x")])
    output = tmp_path / "elsewhere" / "page.html"
    assert render_report(run_dir, output) == output
    html = output.read_text(encoding="utf-8")
    doc = assert_inert(html)
    assert doc.details == HEATMAP_LAST_CHECKS + 1 + 1
    assert "Check 0 &middot; step 10" in html
    assert f"Check {n - 1} &middot;" in html
    assert "Check 1 &middot;" not in html  # left out between the first and the last N
    assert f"{n - HEATMAP_LAST_CHECKS - 1} in between are left out" in html
    # the drift and convergence tables still list every check
    assert html.count('<td class="num">10</td>') >= 2 and f'<td class="num">{10 * n}</td>' in html
    # alerts: error first, cleared ones marked
    assert html.index("sev-error") < html.index("sev-info")
    assert "cleared" in html


def test_truncated_last_line_is_skipped_with_a_note(tmp_path):
    run_dir = write_run_dir(tmp_path / "killed", n_checks=2, status="running")
    with open(run_dir / "attributions.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(make_snapshot(2).to_dict())[:150])  # killed mid-write, no newline
    snapshots, notes = read_snapshots(run_dir / "attributions.jsonl")
    assert [s.check_index for s in snapshots] == [0, 1]
    assert len(notes) == 1 and "line 3 is incomplete" in notes[0]
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert_inert(html)
    assert "line 3 is incomplete" in html


def test_damaged_line_in_the_middle_is_refused(tmp_path):
    run_dir = write_run_dir(tmp_path / "damaged", n_checks=3)
    lines = (run_dir / "attributions.jsonl").read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:40]
    (run_dir / "attributions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RunDirError, match=r"attributions.jsonl:2: not valid JSON"):
        render_report(run_dir)


def test_repeated_check_after_resume_keeps_the_later_line(tmp_path):
    run_dir = write_run_dir(tmp_path / "resumed", n_checks=2)
    again = make_snapshot(1)
    again.step = 999
    with open(run_dir / "attributions.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(again.to_dict()) + "\n")
    run = load_run(run_dir)
    assert [(s.check_index, s.step) for s in run.snapshots] == [(0, 10), (1, 999)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "has no summary.json"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "expected an object"),
        (json.dumps({"checks": []}), "has no schema_version"),
        (json.dumps({"schema_version": 99}), "schema_version 99"),
        (json.dumps({"schema_version": 1, "checks": {"a": 1}}), "'checks' must be a list"),
        (json.dumps({"schema_version": 1, "alerts": [{"rule": "r"}]}), r"alerts\[0\] lacks a required field"),
        (
            json.dumps({"schema_version": 1, "alerts": [{"rule": "r", "severity": "fatal", "message": "m", "key": "k"}]}),
            "unknown severity 'fatal'",
        ),
    ],
)
def test_unusable_summary_is_refused_with_the_reason(tmp_path, content, message):
    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "summary.json").write_text(content, encoding="utf-8")
    with pytest.raises(RunDirError, match=message):
        load_summary(run_dir)
    with pytest.raises(RunDirError):
        render_report(run_dir)


def test_missing_run_directory_is_refused(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        load_summary(tmp_path / "nowhere")


def test_summary_defaults_fill_optional_keys(tmp_path):
    run_dir = tmp_path / "minimal"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"schema_version": 1}), encoding="utf-8")
    summary = load_summary(run_dir)
    assert summary["checks"] == [] and summary["alerts"] == [] and summary["candidates"] == []
    assert summary["run_name"] == "minimal"
    assert_inert(render_report(run_dir).read_text(encoding="utf-8"))


def test_heatmap_fragment_is_escaped_and_coloured_by_sign():
    snapshot = make_snapshot(3)
    html = render_heatmap_html(snapshot)
    doc = assert_inert(html)
    assert doc.heatmap_words == [w for pid in ("p0", "p1", "p2") for w in WORDS[pid]]
    spans = [a for t, a in doc.tags if t == "span" and a.get("class") == "ec-hm-word"]
    p1 = snapshot.attributions[1]
    backgrounds = [s["style"] for s in spans[len(WORDS["p0"]) : len(WORDS["p0"]) + len(WORDS["p1"])]]
    assert p1.word_shares[0] < 0 and "rgba(220,38,38" in backgrounds[0]  # negative: red
    assert p1.word_shares[1] == 0 and "transparent" in backgrounds[1]
    assert p1.word_shares[2] > 0 and "rgba(22,163,74,0.800)" in backgrounds[2]  # largest: full strength
    titles = [s["title"] for s in spans]
    assert f"{ATTR_BREAK}: {p1.word_shares[2]:.3f}" in titles  # the attribute value survives intact
    assert html.count("ec-hm-sep") >= 2  # the text / text_pair separator of p2 (plus its CSS rule)


def test_share_background_scales_with_size():
    assert share_background(0.0, 1.0) == "transparent"
    assert share_background(float("nan"), 1.0) == "transparent"
    assert share_background(0.5, 0.5) == "rgba(22,163,74,0.800)"
    assert share_background(-0.25, 0.5) == "rgba(220,38,38,0.440)"
