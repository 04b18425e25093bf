"""The ``explain-callbacks`` command: gate CI on alerts, render the report, look at a run.

Exit codes: 0 clean, 1 alerts at or above ``--fail-on`` (``check`` only), 2 unusable input
(missing directory, missing or damaged ``summary.json``, a schema this version does not read),
with a one-line reason on stderr, always: a damaged file never ends in a traceback.

``RUN`` is one run's folder (``explain_runs/<name>``) or the folder that holds the runs (the
monitor's ``run_dir``); for the latter the most recently updated run is used, and stderr says
which. Failed checks and attributions the run could not write count as error-level events,
another sink's failures as warnings: ``check`` reports them with the alerts.

``check`` counts every alert the run ever raised, cleared ones included: a shortcut the model
leaned on for part of training is worth a look even if it faded. ``--active-only`` counts only
the alerts still active at the last check. A run that was killed mid-training (status
``running``) is judged on the checks it wrote.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterable, Sequence

from .records import SEVERITY_ORDER, Alert
from .report import format_number, render_report, sorted_alerts
from .rundir import RunDirError, load_summary, resolve_run_path, run_events
from .safe_text import one_line, visible

EXIT_CLEAN = 0
EXIT_ALERTS = 1
EXIT_UNUSABLE = 2

DRIFT_COLUMNS = ("rbo", "jaccard", "kendall_tau", "cosine")
RUN_HELP = "a run's folder, or the folder of runs (then its latest run)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explain-callbacks",
        description="Inspect explain-callbacks run directories (probes.jsonl, attributions.jsonl, summary.json).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="exit 1 when the run raised alerts (for CI)",
        description="Exit 0 when the run raised no alert at or above --fail-on, 1 when it did, "
        "2 when the run directory cannot be read. Cleared alerts count unless --active-only.",
    )
    check.add_argument("run_path", metavar="RUN", help=RUN_HELP)
    check.add_argument(
        "--fail-on",
        choices=("warning", "error"),
        default="warning",
        help="lowest severity that fails the check (default: warning)",
    )
    check.add_argument(
        "--active-only",
        action="store_true",
        help="count only alerts still active at the last check",
    )

    report = commands.add_parser("report", help="render the HTML report", description="Render report.html.")
    report.add_argument("run_path", metavar="RUN", help=RUN_HELP)
    report.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: RUN/report.html)")

    show = commands.add_parser(
        "show", help="print drift, top words, alerts and candidates", description="Print the run's tables."
    )
    show.add_argument("run_path", metavar="RUN", help=RUN_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting (the script entry exits)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_UNUSABLE
    commands = {"check": _check, "report": _report, "show": _show}
    try:
        args.run_path, note = resolve_run_path(args.run_path)
        if note:
            print(f"explain-callbacks: {one_line(note)}", file=sys.stderr)
        return commands[args.command](args)
    except RunDirError as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"{err.filename or args.run_path}: {err.strerror or err}")
    except Exception as err:  # unusable input must never read as "alerts found" (exit 1)
        _fail(f"{args.run_path}: cannot read the run ({type(err).__name__}: {err}); unexpected, please report it")
    return EXIT_UNUSABLE


def _fail(reason: str) -> None:
    print(f"explain-callbacks: error: {one_line(reason)}", file=sys.stderr)


def _console():
    from rich.console import Console

    return Console(highlight=False, emoji=False)


def _text(value: Any):
    """A table cell that rich prints as written: user text is never read as markup, and a
    control sequence (ESC, ...) or bidi override is shown as ``[U+XXXX]``, never sent raw."""
    from rich.text import Text

    if value is None:
        return Text("–", style="dim")
    return Text(visible(value if isinstance(value, str) else format_number(value)))


_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "blue"}


def failing_alerts(alerts: Iterable[Alert], fail_on: str, active_only: bool = False) -> list[Alert]:
    """The alerts that make ``check`` fail: severity at least ``fail_on`` (and active, if asked)."""
    threshold = SEVERITY_ORDER[fail_on]
    return [
        a for a in alerts if SEVERITY_ORDER.get(a.severity, threshold) >= threshold and (a.active or not active_only)
    ]


def _alert_table(alerts: Sequence[Alert], title: str = "Alerts"):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for name in ("severity", "rule", "token", "first raised", "state", "message"):
        table.add_column(name, overflow="fold")
    for alert in alerts:
        first = ", ".join(
            part
            for part in (
                f"step {alert.first_step}" if alert.first_step is not None else "",
                f"epoch {alert.first_epoch}" if alert.first_epoch is not None else "",
            )
            if part
        )
        table.add_row(
            Text(alert.severity, style=_SEVERITY_STYLE.get(alert.severity, "")),
            _text(alert.rule),
            _text(alert.token),
            _text(first or None),
            _text("active" if alert.active else "cleared"),
            _text(alert.message),
        )
    return table


def _status_note(status: str) -> str | None:
    if status == "running":
        return "note: the run has not finished (status 'running'); judging the checks it wrote."
    if status in ("crashed", "failed"):
        return f"note: the run ended with an error (status '{status}'); judging the checks it wrote."
    return None


def _check(args: argparse.Namespace) -> int:
    summary = load_summary(args.run_path)
    alerts = sorted_alerts(run_events(summary))
    failing = failing_alerts(alerts, args.fail_on, args.active_only)
    console = _console()
    note = _status_note(summary["status"])
    if note:
        console.print(note, markup=False)
    if not summary["checks"]:
        console.print("note: the run recorded no checks.", markup=False)
    if alerts:
        console.print(_alert_table(alerts))
    scope = "active alerts" if args.active_only else "alerts"
    if failing:
        console.print(
            f"FAIL: {len(failing)} {scope} at or above {args.fail_on} ({len(alerts)} alerts in all).",
            style="bold red",
            markup=False,
        )
        return EXIT_ALERTS
    console.print(
        f"OK: no {scope} at or above {args.fail_on} ({len(summary['checks'])} checks, {len(alerts)} alerts in all).",
        style="green",
        markup=False,
    )
    return EXIT_CLEAN


def _report(args: argparse.Namespace) -> int:
    path = render_report(args.run_path, args.output)
    print(path)
    return EXIT_CLEAN


def _show(args: argparse.Namespace) -> int:
    summary = load_summary(args.run_path)
    console = _console()
    console.print(
        _text(
            f"run {summary['run_name']} · status {summary['status']} · {summary.get('n_probes', '?')} probes · "
            f"fingerprint {str(summary.get('probe_fingerprint') or '–')[:12]}"
        )
    )

    if summary["checks"]:
        console.print(_drift_table(summary["checks"]))
        last = summary["checks"][-1]
        if last.get("top_tokens"):
            console.print(_top_words_table(last))
        else:
            console.print(f"No top words recorded at the last check ({_describe_check(last)}).", markup=False)
    else:
        console.print("No checks recorded.", markup=False)

    alerts = sorted_alerts(run_events(summary))
    if alerts:
        console.print(_alert_table(alerts))
    else:
        console.print("No alerts.", markup=False)

    if summary["candidates"]:
        console.print(_candidates_table(summary["candidates"]))
    else:
        console.print("No shortcut candidates.", markup=False)
    return EXIT_CLEAN


def _candidates_table(candidates: Sequence[dict[str, Any]]):
    from rich.table import Table

    table = Table(title="Shortcut candidates", title_justify="left")
    for name, justify in (("#", "right"), ("word", "left"), ("score", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for i, row in enumerate(candidates, 1):
        table.add_row(_text(i), _text(str(row.get("word"))), _text(row.get("score")))
    return table


def _describe_check(check: dict[str, Any]) -> str:
    return f"check {check.get('check_index')}, step {check.get('step')}"


def _drift_table(checks: Sequence[dict[str, Any]]):
    from rich.table import Table

    table = Table(title="Drift per check", title_justify="left")
    table.add_column("check", justify="right")
    table.add_column("step", justify="right")
    table.add_column("epoch", justify="right")
    for ref in ("prev", "ref"):
        for metric in DRIFT_COLUMNS:
            table.add_column(f"{metric} {ref}", justify="right")
    table.add_column("mean rel Δ", justify="right")
    table.add_column("converged", justify="right")
    table.add_column("error", overflow="fold")
    for check in checks:
        figures = check.get("drift") or {}
        convergence = check.get("convergence") or {}
        table.add_row(
            _text(check.get("check_index")),
            _text(check.get("step")),
            _text(check.get("epoch")),
            *(
                _text((figures.get(ref) or {}).get(metric))
                for ref in ("vs_previous", "vs_reference")
                for metric in DRIFT_COLUMNS
            ),
            _text(convergence.get("mean_rel_delta")),
            _text(convergence.get("share_converged")),
            _text(check.get("error") or ""),
        )
    return table


def _top_words_table(check: dict[str, Any]):
    from rich.table import Table

    table = Table(title=_text(f"Top words at the last check ({_describe_check(check)})"), title_justify="left")
    for name, justify in (("rank", "right"), ("word", "left"), ("mean share", "right"), ("probes", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for row in check.get("top_tokens") or []:
        table.add_row(_text(row.get("rank")), _text(str(row.get("word"))), _text(row.get("mean_share")), _text(row.get("n_probes")))
    return table


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
