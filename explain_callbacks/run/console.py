"""Terminal output: the line a check prints while training runs and the tables of ``show``.

Every table reads at 80 columns (a CI log, a pipe): by default only the columns that matter
(check, step, overlap of the top words with the previous check, how the top words changed,
convergence); ``wide=True`` (``show --wide``) adds the detail tables, each of which fits 80
columns too. Figures never shrink: numeric columns do not wrap and keep their full width, and
only text columns (words, messages) fold. User text (words, messages, run names) is never read
as markup, and control characters in it are shown as ``[U+XXXX]``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from explain_callbacks.attribution.records import Alert, CheckResult
from explain_callbacks.detection.verdict import candidate_summary, quote, top_candidates
from explain_callbacks.run.safe_text import visible

DRIFT_METRICS = ("rbo", "jaccard", "kendall_tau", "cosine")
CONVERGENCE_COLUMNS = (
    ("mean Δ", "mean_rel_delta"),
    ("p95 Δ", "p95_rel_delta"),
    ("max Δ", "max_rel_delta"),
    ("converged", "share_converged"),
    ("steps", "mean_steps"),
    ("max steps", "max_steps_used"),
)
CONVERGENCE_CAPTION = ("Δ: relative completeness error |sum of attributions − (F(x) − F(baseline))| / "
                       "|F(x) − F(baseline)|; steps: mean integration steps per probe.")
TOP_WORDS_PRINTED = 8  # words on the "top words" line of a check
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "blue"}
LEGEND = (
    "overlap: rank-biased overlap of each probe's top words with the previous check (1 = the same "
    "ranking); top words: entered (+) and left (−) the global top-k; converged: share of probe "
    "integrals within tolerance."
)


# --------------------------------------------------------------------------- cells


def figure(value: Any, digits: int = 3) -> str:
    """A number as a table shows it: fixed digits, ``–`` for missing or undefined, ints as ints."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None or not isinstance(value, str) else value
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def percent(value: Any) -> str:
    """A share as a percentage (``100%``), ``–`` when missing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{100 * value:.0f}%"


def text(value: Any, style: str = ""):
    """A cell printed as written: never markup, controls made visible; ``None`` as a dim dash."""
    from rich.text import Text

    if value is None:
        return Text("–", style="dim")
    return Text(visible(value if isinstance(value, str) else figure(value)), style=style)


def word_change(entered: Sequence[Any] | None, left: Sequence[Any] | None, first: bool = False) -> str:
    """``+2 −1``: words that entered and left the global top-k at a check (``–`` at the first)."""
    if first:
        return "–"
    n_in, n_out = len(entered or ()), len(left or ())
    return "same" if not n_in and not n_out else f"+{n_in} −{n_out}"


def _table(title: str, caption: str | None = None):
    from rich.table import Table

    return Table(title=title, title_justify="left", caption=caption, caption_justify="left", expand=False)


def _figure_column(table, header: str) -> None:
    table.add_column(header, justify="right", no_wrap=True, min_width=len(header))


def _text_column(table, header: str, ratio: int | None = None, min_width: int | None = None) -> None:
    table.add_column(header, overflow="fold", ratio=ratio, min_width=min_width or len(header))


# --------------------------------------------------------------------------- during training


def print_check(result: CheckResult, console: Any = None) -> None:
    """What one check found, in a few lines that read at 80 columns: a one-row table (check,
    step, overlap with the previous check, top-word change, convergence, time), the top words,
    the words that entered or left the top, and any new alert."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.padding import Padding
    from rich.text import Text

    console = console or Console(stderr=True, highlight=False, emoji=False)
    snap = result.snapshot
    prev = result.drift.get("vs_previous", {})
    entered = [row["word"] for row in result.token_table if row.get("entered")]
    left = [row["word"] for row in result.token_table if row.get("left")]
    epoch = "" if snap.epoch is None else f", epoch {snap.epoch}"
    title = f"attribution check {snap.check_index} (step {snap.step}{epoch})"
    headers = ("check", "step", "overlap prev", "top words", "converged", "time s")
    cells = (
        str(snap.check_index),
        str(snap.step),
        figure(prev.get("rbo")),
        word_change(entered, left, first=snap.check_index == 0 or not prev),
        percent(result.convergence.get("share_converged")),
        f"{snap.timings.get('total_s', 0):.1f}",
    )
    table = _table(title)
    for header in headers:
        _figure_column(table, header)
    table.add_row(*cells)
    if Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width:
        console.print(table)
    else:  # narrower than the table: the same figures as words, which wrap instead of being cut
        console.print(Text(f"{title}: " + " · ".join(f"{h} {c}" for h, c in zip(headers[2:], cells[2:]))))
    top = [row for row in result.token_table if not row.get("left")][:TOP_WORDS_PRINTED]
    line = Text("top words: ", style="bold")
    line.append(visible(", ".join(f"{row['word']} {figure(row.get('mean_abs_share'), 2)}" for row in top) or "none"))
    console.print(Padding(line, (0, 0, 0, 2)))  # wrapped lines keep the indent
    if entered or left:
        change = Text()
        if entered:
            change.append("entered: ", style="green")
            change.append(visible(", ".join(entered)) + ("; " if left else ""))
        if left:
            change.append("left: ", style="red")
            change.append(visible(", ".join(left)))
        console.print(Padding(change, (0, 0, 0, 2)))
    for alert in result.new_alerts:
        console.print(Padding(alert_line(alert), (0, 0, 0, 2)))


MEASURABLE_S = 2.0  # the progress line shows the check's share only of at least this much wall time


def progress_line(result: CheckResult, n_probes: int | None = None) -> str:
    """The one line a check prints while training runs (``verbose=True``, the default): what
    was checked, how long it took against the time since the previous check (training plus the
    check: the check's share of the wall time), accuracy where probes have labels, new alerts.

    ``attribution check 2 (step 114, epoch 2): 32 probes in 21.6 s (15% of 140 s since the
    previous check) · accuracy 94% · top: awful, dull, bland · 1 new alert: [warning] shortcut 'zorblax'``
    """
    snap = result.snapshot
    n = n_probes if n_probes is not None else len({a.probe_id for a in snap.attributions})
    epoch = "" if snap.epoch is None else f", epoch {snap.epoch}"
    total = snap.timings.get("total_s", 0.0)
    since = snap.timings.get("since_previous_s")
    took = f"{_plural(n, 'probe')} in {total:.1f} s"
    if isinstance(since, (int, float)) and since >= MEASURABLE_S:  # a share of a blink would say nothing
        took += f" ({total / since:.0%} of {since:.0f} s since the {'start' if snap.check_index == 0 else 'previous check'})"
    parts = [f"attribution check {snap.check_index} (step {snap.step}{epoch}): {took}"]
    if result.schedule_note:
        parts.append(result.schedule_note)
    accuracy = result.health.get("accuracy")
    if isinstance(accuracy, (int, float)):
        parts.append(f"accuracy {accuracy:.0%}")
    top = [str(row["word"]) for row in result.token_table if not row.get("left")][:3]
    if top:
        parts.append("top: " + ", ".join(top))
    if result.new_alerts:
        said = "; ".join(
            f"[{a.severity}] {a.rule}" + (f" {quote(a.token)}" if a.token else "") for a in result.new_alerts
        )
        parts.append(f"{_plural(len(result.new_alerts), 'new alert')}: {said}")
    else:
        active = sum(1 for a in result.alerts if a.active and a.severity != "info")
        parts.append(f"{active} active alert{'s' if active != 1 else ''}" if active else "no alert")
    return visible(" · ".join(parts))


def _plural(n: int, one: str) -> str:
    return f"{n} {one if n == 1 else one + 's'}"


def alert_line(alert: Alert):
    """``ALERT [warning] shortcut 'medboard': message`` as a rich Text (wraps, never truncates)."""
    from rich.text import Text

    line = Text(f"ALERT [{alert.severity}] {alert.rule}", style=SEVERITY_STYLE.get(alert.severity, "bold"))
    if alert.token:
        line.append(" " + visible(quote(alert.token)), style="bold")
    line.append(": " + visible(str(alert.message)))
    return line


# --------------------------------------------------------------------------- show


def drift_table(checks: Sequence[Mapping[str, Any]]):
    """The checks in five figures each: check, step, epoch, overlap (RBO) with the previous
    check, how the top words changed, share converged. A failed check has no row: it is an
    error-level event (``failed_checks``), listed with the alerts."""
    table = _table("Drift per check", caption=LEGEND)
    for header in ("check", "step", "epoch", "overlap prev", "top words", "converged"):
        _figure_column(table, header)
    for i, check in enumerate(checks):
        drift = check.get("drift") or {}
        prev = drift.get("vs_previous") or {}
        convergence = check.get("convergence") or {}
        row = [
            figure(check.get("check_index")),
            figure(check.get("step")),
            figure(check.get("epoch")),
            figure(prev.get("rbo")),
            word_change(check.get("entered"), check.get("left"), first=i == 0),
            percent(convergence.get("share_converged")),
        ]
        table.add_row(*(text(v) for v in row))
    return table


def drift_detail_tables(checks: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``show --wide``: every drift metric vs the previous and the reference check, and every
    convergence figure, as three tables of at most eight columns."""
    tables = []
    for which, title in (("vs_previous", "Drift vs the previous check"),
                         ("vs_reference", "Drift vs the reference (first) check")):
        table = _table(title)
        for header in ("check", "step", *DRIFT_METRICS):
            _figure_column(table, header)
        if which == "vs_previous":
            _figure_column(table, "chance jaccard")
        for check in checks:
            drift = check.get("drift") or {}
            figures = drift.get(which) or {}
            row = [figure(check.get("check_index")), figure(check.get("step")),
                   *(figure(figures.get(m)) for m in DRIFT_METRICS)]
            if which == "vs_previous":
                row.append(figure(drift.get("chance_jaccard")))
            table.add_row(*row)
        tables.append(table)
    table = _table("Convergence of the integrals per check", caption=CONVERGENCE_CAPTION)
    for header in ("check", *(h for h, _ in CONVERGENCE_COLUMNS)):
        _figure_column(table, header)
    for check in checks:
        convergence = check.get("convergence") or {}
        table.add_row(
            figure(check.get("check_index")),
            *(percent(convergence.get(k)) if k == "share_converged"
              else figure(convergence.get(k), 1 if k == "mean_steps" else 3) for _, k in CONVERGENCE_COLUMNS),
        )
    tables.append(table)
    return tables


def top_words_table(check: Mapping[str, Any]):
    """The top words of the last check with the figure they are ranked by (mean |share| where the
    word occurs), its signed mean share and how many probes contain it."""
    title = f"Top words at the last check (check {figure(check.get('check_index'))}, step {figure(check.get('step'))})"
    caption = "ranked by mean |share|: how much of the decision the word carries where it occurs; " \
              "mean share: signed, + supports the attributed class."
    table = _table(title, caption=caption)
    _figure_column(table, "rank")
    _text_column(table, "word", ratio=1, min_width=12)
    for header in ("mean |share|", "mean share", "probes"):
        _figure_column(table, header)
    for row in check.get("top_tokens") or []:
        if not isinstance(row, Mapping):
            continue
        table.add_row(
            text(row.get("rank")),
            text(str(row.get("word"))),
            text(row.get("mean_abs_share")),
            text(row.get("mean_share")),
            text(row.get("n_probes")),
        )
    return table


def alerts_table(alerts: Sequence[Alert], title: str = "Alerts"):
    """Severity, rule, token and message, with when it was first raised and whether it is still
    active under the message; token and message fold."""
    from rich.text import Text

    table = _table(title)
    table.add_column("severity", no_wrap=True, min_width=8)
    table.add_column("rule", no_wrap=True, min_width=4)
    _text_column(table, "token", ratio=1, min_width=8)
    _text_column(table, "message", ratio=4, min_width=24)
    for alert in alerts:
        when = [f"first raised at step {alert.first_step}" if alert.first_step is not None else None,
                f"epoch {alert.first_epoch}" if alert.first_epoch is not None else None]
        state = "active" if alert.active else "cleared"
        message = Text(visible(str(alert.message)))
        message.append("\n" + ", ".join([state, *(w for w in when if w)]), style="dim")
        table.add_row(
            text(alert.severity, SEVERITY_STYLE.get(alert.severity, "")),
            text(alert.rule),
            text(alert.token),
            message,
        )
    return table


def candidates_table(
    candidates: Sequence[Any], labels: Sequence[Any] | None = None, limit: int | None = 5, first: Sequence[str] = ()
):
    """The shortcut candidates with their evidence in a sentence or two: the ``limit`` first
    (``None``: all), those named in ``first`` (the alerted words) ahead, each with its rank."""
    rows = top_candidates(candidates, limit=len(candidates) if limit is None else limit, first=first)
    shown = f"{len(rows)} of {len(candidates)}" if len(rows) < len(candidates) else f"{len(rows)}"
    order = "alerted first, then most suspicious" if set(first) & {str(c.get("word")) for _, c in rows} else \
        "most suspicious first"
    table = _table(f"Shortcut candidates ({shown}, {order})")
    _figure_column(table, "#")
    _text_column(table, "word", ratio=1, min_width=10)
    _figure_column(table, "score")
    _text_column(table, "evidence", ratio=4, min_width=30)
    for rank, row in rows:
        table.add_row(text(rank), text(str(row.get("word"))), text(row.get("score")), text(candidate_summary(row, labels)))
    return table




# --------------------------------------------------------------------------- faithfulness and compare

FAITHFULNESS_CAPTION = ("comprehensiveness: mean drop of the target's probability when the top 1-50% of "
                        "words are replaced by the baseline token (higher: more faithful); sufficiency: the "
                        "drop when only they are kept (lower: more faithful); random: the same number of "
                        "random words.")


def faithfulness_table(checks: Sequence[Mapping[str, Any]]):
    """Per check, comprehensiveness and sufficiency beside their random baselines, the share of
    probes whose comprehensiveness beats random, and the forwards a probe cost."""
    table = _table("Faithfulness per check", caption=FAITHFULNESS_CAPTION)
    for header in ("check", "compr.", "random", "suff.", "> random", "probes", "fwd/probe"):
        _figure_column(table, header)
    for check in checks:
        f = check.get("faithfulness") or {}
        if not isinstance(f, Mapping) or not f:
            continue
        table.add_row(*(text(v) for v in (
            figure(check.get("check_index")), figure(f.get("comprehensiveness")),
            figure(f.get("random_comprehensiveness")), figure(f.get("sufficiency")),
            percent(f.get("share_above_random")), figure(f.get("n_probes")),
            figure(f.get("forwards_per_probe"), 1))))
    return table


def word_changes_table(words: Sequence[Any], title: str, limit: int = 10):
    """Words whose share changed, with both shares, the probes carrying them and the q-value."""
    table = _table(title, caption="share: mean |share| of the probe's attribution where the word occurs; "
                                  "q: false-discovery-controlled p-value of the change against the noise.")
    _text_column(table, "word", ratio=1, min_width=12)
    for header in ("base", "run", "change", "probes", "q"):
        _figure_column(table, header)
    for w in list(words)[:limit]:
        table.add_row(text(w.word), text(w.base_share), text(w.run_share), text(f"{w.change:+.3f}"),
                      text(w.n_probes), text(w.q_value))
    return table


def comparison_tables(comparison: Any, limit: int = 10) -> list[Any]:
    """``compare``'s tables at 80 columns: words that rose and fell (the significant ones, else
    the largest changes), alerts and candidates found on one side only, changed predictions and
    both runs' faithfulness."""
    tables = []
    for label, significant, sign in (("rose", comparison.rising, 1), ("fell", comparison.falling, -1)):
        if significant:
            tables.append(word_changes_table(significant, f"Words whose share {label} (significant)", limit))
        else:
            largest = sorted((w for w in comparison.words if sign * w.change > 0), key=lambda w: -abs(w.change))
            tables.append(word_changes_table(largest, f"Words whose share {label} most (none significant)", 5))
    if comparison.new_alerts:
        tables.append(alerts_table(comparison.new_alerts, "Alerts in the run, not in the base"))
    if comparison.gone_alerts:
        tables.append(alerts_table(comparison.gone_alerts, "Alerts in the base, not in the run"))
    for rows, title in ((comparison.new_candidates, "Candidates in the run, not in the base"),
                        (comparison.gone_candidates, "Candidates in the base, not in the run")):
        if rows:
            table = _table(title)
            _figure_column(table, "rank")
            _text_column(table, "word", ratio=1, min_width=12)
            _figure_column(table, "score")
            for row in rows:
                table.add_row(text(row["rank"]), text(row["word"]), text(row["score"]))
            tables.append(table)
    changed = [p for p in comparison.probe_changes if p.prediction_changed]
    if changed:
        table = _table(f"Predictions that changed ({len(changed)} of {len(comparison.probe_changes)} probes)")
        _text_column(table, "probe", ratio=3, min_width=20)
        for header in ("label", "base", "run", "overlap"):
            _text_column(table, header, min_width=len(header))
        for p in changed[:limit]:
            table.add_row(text(f"{p.probe_id}: {p.text}"), text(None if p.label is None else str(p.label)),
                          text(str(p.base_prediction)), text(str(p.run_prediction)), text(p.rbo))
        tables.append(table)
    base, run = comparison.faithfulness["base"], comparison.faithfulness["run"]
    if any(v is not None for v in (*base.values(), *run.values())):
        table = _table("Faithfulness at the last checks", caption=FAITHFULNESS_CAPTION)
        _text_column(table, "figure", ratio=1, min_width=16)
        for header in ("base", "run"):
            _figure_column(table, header)
        for name in ("comprehensiveness", "random_comprehensiveness", "sufficiency", "share_above_random"):
            table.add_row(text(name.replace("_", " ")), text(base.get(name)), text(run.get(name)))
        tables.append(table)
    return tables


__all__ = [
    "alert_line",
    "alerts_table",
    "candidates_table",
    "comparison_tables",
    "drift_detail_tables",
    "drift_table",
    "faithfulness_table",
    "figure",
    "percent",
    "print_check",
    "progress_line",
    "top_words_table",
    "word_change",
]
