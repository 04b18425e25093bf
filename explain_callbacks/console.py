"""Terminal output of a check while training runs (rich tables; user text is never markup)."""

from __future__ import annotations

from typing import Any

from .records import CheckResult


def _fmt(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def print_check(result: CheckResult, console: Any = None) -> None:
    """One line of drift and convergence for this check, its top words, and any new alerts."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(stderr=True)
    snap = result.snapshot
    prev = result.drift.get("vs_previous", {})
    ref = result.drift.get("vs_reference", {})
    table = Table(title=f"attribution check {snap.check_index} (step {snap.step}, epoch {snap.epoch})", title_justify="left")
    for name in ("RBO prev", "Jaccard prev", "RBO ref", "converged", "mean steps", "time s", "top words"):
        table.add_column(name)
    top = ", ".join(row["word"] for row in result.token_table[:6])
    table.add_row(
        _fmt(prev.get("rbo")),
        _fmt(prev.get("jaccard")),
        _fmt(ref.get("rbo")),
        _fmt(result.convergence.get("share_converged")),
        f"{result.convergence.get('mean_steps', 0):.0f}",
        f"{snap.timings.get('total_s', 0):.1f}",
        Text(top),
    )
    console.print(table)
    for alert in result.new_alerts:
        line = Text(f"  ALERT [{alert.severity}] {alert.rule}: ", style="bold red" if alert.severity != "info" else "yellow")
        line.append(alert.message)
        console.print(line)
