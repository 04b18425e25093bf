"""The ``Sink`` protocol: where each check's results go."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import CheckResult


@dataclass
class RunInfo:
    """What a sink learns once, before the first check.

    ``resume``: continue a recorded run. ``restored``: whether the monitor loaded checkpoint
    state (``None``: the caller does not say, as when a sink is driven by hand); a run that
    resumes with ``restored=False`` has none of the recorded history and is refused. A restored
    run says the last check its checkpoint holds (``last_check_index``, -1 for none), so a sink
    that kept later checks drops them, and its ``summary``.
    """

    name: str
    probes: ProbeSet
    config: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    restored: bool | None = None
    last_check_index: int | None = None
    summary: dict[str, Any] | None = None


@runtime_checkable
class Sink(Protocol):
    """Receives every check. The monitor logs and skips a sink that raises; it never stops
    training nor the other sinks.

    ``summary`` is the current ``summary.json`` content (see ``AttributionMonitor.summary``).
    Optional members, which the monitor uses when a sink has them: ``required = True`` (a
    failing :meth:`start` stops set-up instead of being skipped), ``update(summary)`` (the
    summary changed without a check, as when a check failed) and ``abandon()`` (set-up failed
    after this sink started: let go of what it holds and write nothing).
    """

    def start(self, run: RunInfo) -> None: ...

    def log_check(self, result: CheckResult, summary: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...
