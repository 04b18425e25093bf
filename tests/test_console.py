"""Terminal output at 80 and 200 columns: every header and every figure printed whole.

The tables are rendered by rich into a string at a fixed width, as a CI log or a pipe gets them;
a figure cut short (``0.…``) or a header squeezed to ``rbo pr…`` fails the test.
"""

from __future__ import annotations

import io
import re

import pytest
from helpers.attribution_records import attribution, snapshot

from explain_callbacks.attribution.records import Alert, CheckResult
from explain_callbacks.detection.drift import DriftTracker
from explain_callbacks.run import console

WIDTHS = (80, 200)


def render(*renderables, width: int) -> str:
    from rich.console import Console

    out = Console(width=width, file=io.StringIO(), record=True, color_system=None, highlight=False, emoji=False)
    for renderable in renderables:
        out.print(renderable)
    return out.export_text()


def assert_whole(output: str, *items: str) -> None:
    """Each item appears as written, not cut (``…``) and not split over lines."""
    assert "…" not in output, output
    lines = output.splitlines()
    for item in items:
        assert any(item in line for line in lines), f"{item!r} not whole in:\n{output}"
    assert max(len(line) for line in lines) <= _width(output)


def flat(output: str) -> str:
    """The text without table borders, on one line: a cell's folded text reads on (the other
    cells of a continuation line are empty)."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", output).split())


def _width(output: str) -> int:
    return max(len(line) for line in output.splitlines())


def checks(n: int = 12):
    """Summary check entries as the monitor writes them, with figures of every shape: 3 digits,
    tiny ones in exponent form, missing ones and large step numbers."""
    out = []
    for i in range(n):
        first = i == 0
        metric = None if first else round(0.5 + 0.04 * i, 4)
        out.append({
            "check_index": i,
            "step": 12500 * (i + 1),
            "epoch": i,
            "drift": {
                "vs_previous": {"rbo": metric, "jaccard": metric and metric - 0.1, "kendall_tau": metric and -metric / 3,
                                "cosine": metric and metric + 0.01},
                "vs_reference": {"rbo": 1.0 - 0.03 * i, "jaccard": 1.0 - 0.05 * i, "kendall_tau": 0.9 - 0.07 * i,
                                 "cosine": 0.99 - 0.01 * i},
                "chance_jaccard": 0.0527,
            },
            "convergence": {"mean_rel_delta": 0.0004 + 0.01 * i, "p95_rel_delta": 0.031, "max_rel_delta": 0.2 + i,
                            "share_converged": 0.875, "n_unconverged": 2, "mean_steps": 48.25, "max_steps_used": 256},
            "top_tokens": [
                {"word": w, "mean_share": s, "mean_abs_share": abs(s), "sum_share": s * 9, "n_probes": 9, "rank": r}
                for r, (w, s) in enumerate([("medboard", 0.412), ("wonderful", 0.331), ("ineffective", -0.287),
                                            ("side-effects", 0.154), ("didn't", -0.122)], 1)
            ],
            "entered": ["medboard", "wonderful"] if i == 3 else [],
            "left": ["pill"] if i == 3 else [],
        })
    return out


def alerts():
    return [
        Alert(rule="shortcut", severity="warning", key="shortcut:medboard", token="medboard", first_step=37500,
              first_epoch=2, active=True,
              message="the model may be using 'medboard' as a shortcut (score 0.83, threshold 0.15)."),
        Alert(rule="convergence", severity="info", key="convergence", first_step=12500, active=False,
              message="31% of the probe attributions did not converge (limit 20%); raise n_steps or max_steps."),
    ]


CANDIDATES = [
    {"word": "medboard", "score": 0.8312, "evidence": {
        "mean_share": 0.41, "top1_rate": 0.67, "n_probes": 3, "train_count": 89, "train_purity": 1.0,
        "purity_label": 1, "flip_rate_insertion": 4 / 7, "n_insertion_probes": 7, "flip_rate_removal": 1.0,
        "n_removal_probes": 3, "basis": ["attribution", "training", "counterfactual"]}},
    {"word": "wonderful", "score": 0.2101, "evidence": {"mean_share": 0.33, "n_probes": 9, "train_count": 120,
                                                        "train_purity": 0.86, "purity_label": 1, "basis": None}},
    {"word": "x", "score": 0.1, "evidence": None},
]


@pytest.mark.parametrize("width", WIDTHS)
def test_drift_table_reads_at_80_and_200_columns(width):
    data = checks()
    output = render(console.drift_table(data), width=width)
    assert_whole(output, "check", "step", "epoch", "overlap prev", "top words", "converged")
    for check in data[1:]:
        assert_whole(output, f"{check['drift']['vs_previous']['rbo']:.3f}", str(check["step"]))
    assert_whole(output, "+2 −1", "88%")
    # the narrow table keeps to what matters: no jaccard, kendall or cosine figures
    assert "kendall" not in output and "jaccard" not in output
    assert _width(output) <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_wide_detail_tables_print_every_figure_whole(width):
    data = checks()
    output = render(*console.drift_detail_tables(data), width=width)
    assert_whole(output, "rbo", "jaccard", "kendall_tau", "cosine", "chance jaccard",
                 "mean Δ", "p95 Δ", "max Δ", "converged", "steps", "max steps")
    for check in data:
        for which in ("vs_previous", "vs_reference"):
            for value in check["drift"][which].values():
                if value is not None:
                    assert_whole(output, f"{value:.3f}")
        conv = check["convergence"]
        assert_whole(output, console.figure(conv["mean_rel_delta"]), f"{conv['max_rel_delta']:.3f}", "48.2", "256")
    assert "4.00e-04" in output  # a tiny figure keeps its digits instead of reading 0.000
    assert _width(output) <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_top_words_table_shows_the_figure_it_sorts_on(width):
    check = checks()[-1]
    output = render(console.top_words_table(check), width=width)
    assert_whole(output, "rank", "word", "mean |share|", "mean share", "probes", "medboard", "side-effects",
                 "didn't", "0.412", "-0.287", "0.287")
    assert output.index("medboard") < output.index("wonderful") < output.index("ineffective")


@pytest.mark.parametrize("width", WIDTHS)
def test_alerts_and_candidates_read_at_width(width):
    output = render(console.alerts_table(alerts()), console.candidates_table(CANDIDATES, labels=["negative", "positive"]),
                    width=width)
    text = flat(output)
    assert_whole(output, "severity", "rule", "token", "message", "warning", "shortcut", "medboard", "convergence",
                 "score", "evidence", "0.831", "0.210")
    assert "first raised at step 37500" in text and "cleared" in text
    assert "Inserting it into 7 probes predicted as another class flipped 4 to 'positive'." in text
    assert "(score 0.83, threshold 0.15)" in text
    assert _width(output) <= width


def test_candidates_table_shows_the_first_five_unless_asked():
    many = [{"word": f"word{i}", "score": 1 - i / 10, "evidence": {}} for i in range(8)]
    assert "word5" not in render(console.candidates_table(many), width=80)
    assert "(5 of 8, most suspicious first)" in render(console.candidates_table(many), width=80)
    assert "(5 of 8, alerted first, then most suspicious)" in flat(render(console.candidates_table(many, first=["word6"]), width=80))
    assert "word7" in render(console.candidates_table(many, limit=None), width=80)


def test_user_text_is_printed_as_written_never_as_markup_or_control():
    check = checks(1)[0]
    check["top_tokens"] = [{"word": "[bold red]loud[/]\x1b[2J", "mean_share": 0.5, "mean_abs_share": 0.5,
                            "n_probes": 2, "rank": 1}]
    output = render(console.top_words_table(check), width=80)
    assert "[bold red]loud[/]" in output and "\x1b" not in output and "[U+001B]" in output


def _check_result(check_index: int, tracker: DriftTracker, shares: list[float], new_alerts=()):
    words = ["the", "medboard", "pill", "was", "wonderful", "."]
    snap = snapshot(check_index, [attribution(f"p{i}", words, shares) for i in range(3)])
    snap.step = 125000 * (check_index + 1)
    snap.timings = {"total_s": 12.34}
    drift = tracker.update(snap)
    return CheckResult(
        snapshot=snap, drift=drift,
        convergence={"share_converged": 1.0, "mean_steps": 48.0},
        token_table=tracker.token_table(snap), new_alerts=list(new_alerts),
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_print_check_reads_at_width(width):
    tracker = DriftTracker(top_k=3)
    _check_result(0, tracker, [0.05, 0.1, 0.05, 0.05, 0.6, 0.15])
    result = _check_result(1, tracker, [0.05, 0.6, 0.05, 0.05, 0.1, 0.15], new_alerts=alerts()[:1])
    buffer = io.StringIO()
    from rich.console import Console

    console.print_check(result, Console(width=width, file=buffer, color_system=None, highlight=False))
    output = buffer.getvalue()
    assert_whole(output, "check", "step", "overlap prev", "top words", "converged", "time s", "250000", "100%", "12.3",
                 f"{result.drift['vs_previous']['rbo']:.3f}")
    assert re.search(r"top words: medboard 0\.60, wonderful 0\.10", output)
    assert "ALERT [warning] shortcut 'medboard'" in output
    assert "." not in output.split("top words:")[1].split("\n")[0].replace("0.", "")  # punctuation never ranked
    assert _width(output) <= width


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("wide", [False, True])
def test_show_command_reads_at_width(tmp_path, capsys, monkeypatch, width, wide):
    from helpers.verdict_runs import shortcut_run

    from explain_callbacks.run.cli import main

    monkeypatch.setenv("COLUMNS", str(width))
    run = shortcut_run(tmp_path / "run")
    assert main(["show", str(run), *(["--wide"] if wide else [])]) == 0
    output = capsys.readouterr().out
    assert_whole(output, "overlap prev", "top words", "converged", "mean |share|", "severity", "evidence", "0.830")
    assert _width(output) <= width
    text = flat(output)
    assert text.index("The model may be using 'medboard' as a shortcut: inserting it into 7 probes") < text.index(
        "Drift per check")
    # the alerted word leads the candidates, whatever its rank
    candidates = text[text.index("Shortcut candidates"):]
    assert candidates.index("medboard") < candidates.index("wonderful")
    if wide:
        assert_whole(output, "kendall_tau", "chance jaccard", "max steps", "Drift vs the reference (first) check")
        assert "sent from" in text  # every candidate
    else:
        assert "kendall_tau" not in output and "sent from" not in text


def test_print_check_below_80_columns_wraps_instead_of_cutting():
    tracker = DriftTracker(top_k=3)
    _check_result(0, tracker, [0.05, 0.1, 0.05, 0.05, 0.6, 0.15])
    result = _check_result(1, tracker, [0.05, 0.6, 0.05, 0.05, 0.1, 0.15])
    buffer = io.StringIO()
    from rich.console import Console

    console.print_check(result, Console(width=50, file=buffer, color_system=None, highlight=False))
    output = buffer.getvalue()
    assert "…" not in output and _width(output) <= 50
    assert "step 250000" in output and f"overlap prev {result.drift['vs_previous']['rbo']:.3f}" in flat(output)
