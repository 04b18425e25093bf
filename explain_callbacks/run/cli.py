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

``compare BASE RUN`` sets a run against a base run (the main branch's, say) on the probes they
share: exit 1 when the run raised an alert the base did not (at or above ``--fail-on``) or a
word's attribution share rose significantly (see ``run/compare.py``), 0 otherwise, 2 when either
side cannot be read or they share no probe.

Every command states the run's blind spots, one line each (``blind spot: watched 'medboard'
appears in no probe``): what the run's options kept it from seeing. ``check --strict`` fails
(exit 1) on them as on an alert.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterable, Sequence

from explain_callbacks import __version__
from explain_callbacks.attribution.records import Alert, at_or_above
from explain_callbacks.detection.verdict import blind_spots, health_line, verdict
from explain_callbacks.run.console import (
    alerts_table,
    candidates_table,
    drift_detail_tables,
    drift_table,
    faithfulness_table,
    top_words_table,
)
from explain_callbacks.run.directory import RunDirError, resolve_run_path
from explain_callbacks.run.readers import load_summary, run_events
from explain_callbacks.run.report import format_number, render_report, sorted_alerts
from explain_callbacks.run.safe_text import one_line, visible

EXIT_CLEAN = 0
EXIT_ALERTS = 1
EXIT_UNUSABLE = 2

RUN_HELP = "a run's folder, or the folder of runs (then its latest run)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explain-callbacks",
        description="Inspect explain-callbacks run directories (probes.jsonl, attributions.jsonl, summary.json).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
        "--strict",
        action="store_true",
        help="also fail on blind spots: discovery without training statistics, watched words in no probe, "
        "probes without labels",
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
        "show",
        help="print the verdict, drift, top words, alerts and candidates",
        description="Print what the run found and its tables; they read at 80 columns (--wide for every figure).",
    )
    show.add_argument("run_path", metavar="RUN", help=RUN_HELP)
    _compare_parser(commands)
    show.add_argument(
        "--wide",
        action="store_true",
        help="also print every drift metric vs the previous and the reference check, every convergence "
        "figure, and all shortcut candidates (by default: the columns that matter, the first five candidates)",
    )
    return parser


def _compare_parser(commands: Any) -> None:
    from explain_callbacks.run.compare import ALPHA, MIN_CHANGE, MIN_PROBES, N_BOOTSTRAP

    compare = commands.add_parser(
        "compare",
        help="what the run leans on that the base run did not (for CI)",
        description="Compare the last checks of two runs on the probes they share (the same probe set, or the "
        "probes with the same id and text): words whose attribution share rose or fell, alerts and shortcut "
        "candidates found on one side only, prediction changes and top-word overlap (RBO) per probe, and "
        "faithfulness. A word's change must pass two tests (the larger p-value counts): a bootstrap over the "
        f"probes that carry it ({N_BOOTSTRAP} resamples), and a z-test against run-to-run noise: with "
        "--base-repeat (the base recipe run again with another seed) every word's change between base and "
        "repeat, widened by the word's own; otherwise the spread of all tested words' changes between base and "
        "run, which cannot see a seed's effect (give a repeat where you can). The words are one family "
        f"(Benjamini-Hochberg, q <= {ALPHA}). Exit 1 when the run raised an alert the base did not, at or above "
        "--fail-on, or (a rising word is warning-level) a word's share rose significantly by at least "
        "--min-change; 0 otherwise; 2 when a side cannot be read or they share no probe.",
    )
    compare.add_argument("base_path", metavar="BASE", help="the base run (e.g. the main branch's artifact): " + RUN_HELP)
    compare.add_argument("run_path", metavar="RUN", help="the run to judge: " + RUN_HELP)
    compare.add_argument("--base-repeat", metavar="DIR",
                         help="the base recipe run again with another seed: its changes against the base are the noise")
    compare.add_argument("--fail-on", choices=("warning", "error"), default="warning",
                         help="lowest severity that fails (default: warning; a rising word is a warning)")
    compare.add_argument("--min-change", type=float, default=MIN_CHANGE,
                         help=f"smallest change of a word's mean share (of a probe's attribution) that counts "
                         f"(default: {MIN_CHANGE})")
    compare.add_argument("--min-probes", type=int, default=MIN_PROBES,
                         help=f"shared probes a word must be in to be tested (default: {MIN_PROBES})")
    compare.add_argument("-o", "--output", metavar="FILE", help="also write the comparison as an HTML page")
    compare.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting (the script entry exits)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_UNUSABLE
    commands = {"check": _check, "report": _report, "show": _show, "compare": _compare}
    try:
        for name in ("base_path", "run_path", "base_repeat"):
            if getattr(args, name, None) is None:
                continue
            path, note = resolve_run_path(getattr(args, name))
            setattr(args, name, path)
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


def failing_alerts(alerts: Iterable[Alert], fail_on: str, active_only: bool = False) -> list[Alert]:
    """The alerts that make ``check`` fail: severity at least ``fail_on`` (and active, if asked)."""
    return [a for a in alerts if at_or_above(a.severity, fail_on) and (a.active or not active_only)]


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
        console.print(alerts_table(alerts))
    spots = blind_spots(summary)
    for line in spots:
        console.print(_text(f"blind spot: {line}"), style="yellow")
    if summary["checks"]:
        health = health_line(summary["checks"][-1])
        if health:
            console.print(_text(f"last check: {health}"))
    scope = "active alerts" if args.active_only else "alerts"
    if args.strict and spots and not failing:
        console.print(
            f"FAIL: {len(spots)} blind spot(s) (--strict), no {scope} at or above {args.fail_on}.",
            style="bold red",
            markup=False,
        )
        return EXIT_ALERTS
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
    alerts = sorted_alerts(run_events(summary))
    console.print(_text(" ".join(verdict(summary, alerts))), style="bold")
    for line in blind_spots(summary):
        console.print(_text(f"blind spot: {line}"), style="yellow")
    if summary["checks"]:
        health = health_line(summary["checks"][-1])
        if health:
            console.print(_text(f"model at the last check: {health}"))

    if summary["checks"]:
        console.print(drift_table(summary["checks"]))
        if any(check.get("faithfulness") for check in summary["checks"]):
            console.print(faithfulness_table(summary["checks"]))
        if args.wide:
            for table in drift_detail_tables(summary["checks"]):
                console.print(table)
        last = summary["checks"][-1]
        if last.get("top_tokens"):
            console.print(top_words_table(last))
        else:
            console.print(f"No top words recorded at the last check ({_describe_check(last)}).", markup=False)
    else:
        console.print("No checks recorded.", markup=False)

    if alerts:
        console.print(alerts_table(alerts))
    else:
        console.print("No alerts.", markup=False)

    if summary["candidates"]:
        labels = (summary.get("config") or {}).get("labels")
        alerted = sorted({str(a.token) for a in alerts if a.rule == "shortcut" and a.token})
        console.print(candidates_table(summary["candidates"], labels if isinstance(labels, list) else None,
                                       limit=None if args.wide else 5, first=alerted))
    else:
        console.print("No shortcut candidates.", markup=False)
    return EXIT_CLEAN


def _compare(args: argparse.Namespace) -> int:
    from explain_callbacks.run.compare import compare_runs
    from explain_callbacks.run.console import comparison_tables
    from explain_callbacks.run.directory import strict_json, write_text_atomic
    from explain_callbacks.run.report import render_compare_html

    if not 0 <= args.min_change <= 1 or args.min_probes < 1:
        raise RunDirError("--min-change must be a share in [0, 1] and --min-probes at least 1.")
    comparison = compare_runs(args.base_path, args.run_path, args.base_repeat,
                              min_change=args.min_change, min_probes=args.min_probes)
    console = _console()
    b, r, p = comparison.base, comparison.run, comparison.probes
    console.print(_text(f"base {b['name']} (check {b['check_index']}, step {b['step']}) vs run {r['name']} "
                        f"(check {r['check_index']}, step {r['step']})"))
    console.print(_text(f"{p['shared']} shared probes ({p['matched_by']}; base {p['base']}, run {p['run']}); "
                        f"noise: {comparison.noise['method']}"))
    for note in comparison.notes:
        console.print(_text(f"note: {note}"), style="yellow")
    for table in comparison_tables(comparison):
        console.print(table)
    changed = sum(c.prediction_changed for c in comparison.probe_changes)
    console.print(_text(f"{changed} of {len(comparison.probe_changes)} predictions changed; mean top-word overlap "
                        f"(RBO) {format_number(comparison.mean_rbo)}"))
    if args.output:
        write_text_atomic(args.output, render_compare_html(comparison, args.fail_on))
        console.print(_text(f"wrote {args.output}"))
    if args.json:
        write_text_atomic(args.json, strict_json(comparison.to_dict(), indent=2))
    failures = comparison.failures(args.fail_on)
    if failures:
        console.print(_text(f"FAIL: {len(failures)} change(s) at or above {args.fail_on}: " + "; ".join(failures)),
                      style="bold red")
        return EXIT_ALERTS
    console.print(_text(f"OK: no significant change at or above {args.fail_on}."), style="green")
    return EXIT_CLEAN


def _describe_check(check: dict[str, Any]) -> str:
    return f"check {check.get('check_index')}, step {check.get('step')}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
