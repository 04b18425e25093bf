"""Where a run stands in its schedule: the boundary last taken and the overhead clock.

``CheckSchedule`` is the monitor's; it knows no training framework and no rank (the monitor
decides on rank zero and shares the answer). Its state is part of the monitor's ``state_dict``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from explain_callbacks.options import Schedule


class CheckSchedule:
    """The schedule position (the boundary last taken) and, under ``max_overhead``, the checks'
    share of training wall time: the seconds spent in checks over the wall seconds since set-up
    (a resumed run's time included)."""

    def __init__(self, schedule: Schedule, max_overhead: float | None):
        self.schedule = schedule
        self.max_overhead = max_overhead
        self.last_boundary: int | None = None
        self.last_check_step: int | None = None
        self.last_check_s: float | None = None
        self.check_s = 0.0
        self.elapsed_s = 0.0  # before the clock started (a resumed run's)
        self.skipped = 0
        self._clock_from: float | None = None

    def start(self, step: int = 0, epochs: float = 0.0, recorded: int | None = None) -> None:
        """Where training starts or resumes: the restored boundary, else ``recorded`` (an older
        checkpoint's), else the one training is at; a position ahead of training (a second fit
        that counts from 0 again) moves back to it."""
        here = self.schedule.boundary(step, epochs) or 0
        if self.last_boundary is None:
            self.last_boundary = recorded if recorded is not None else here
        self.last_boundary = min(self.last_boundary, here)

    def passed(self, step: int | None, epochs: float | None) -> bool:
        """Whether a new boundary is passed at ``step`` / ``epochs``; if so it is taken."""
        boundary = self.schedule.boundary(step, epochs)
        if boundary is None or boundary <= (self.last_boundary or 0):
            return False
        self.last_boundary = boundary
        return True

    def within_budget(self) -> bool:
        """Whether one more check, costing what the last one did, keeps the share in budget."""
        if self.max_overhead is None or self.last_check_s is None:
            return True  # no budget, or nothing measured yet: the first check measures the cost
        now = self.overhead()
        return (now["check_s"] + self.last_check_s) / (now["elapsed_s"] + self.last_check_s) <= self.max_overhead

    def start_clock(self) -> None:
        self._clock_from = time.perf_counter()

    def stop_clock(self) -> None:
        self.elapsed_s = self.overhead()["elapsed_s"]
        self._clock_from = None

    def add_check(self, step: int, seconds: float | None = None) -> None:
        """A check ran at ``step`` (on every rank), taking ``seconds`` (where it was measured)."""
        self.last_check_step = int(step)
        if seconds is not None:
            self.check_s += seconds
            self.last_check_s = seconds

    def overhead(self) -> dict[str, Any]:
        elapsed = self.elapsed_s
        if self._clock_from is not None:
            elapsed += time.perf_counter() - self._clock_from
        return {"max_overhead": self.max_overhead, "check_s": self.check_s, "elapsed_s": elapsed,
                "share": self.check_s / elapsed if elapsed > 0 else None, "skipped": self.skipped}

    def next_check_note(self) -> str | None:
        """When the next check should run under the budget, from the training time per boundary so
        far and the last check's cost; ``None`` without a budget or a check."""
        if self.max_overhead is None or self.last_check_s is None:
            return None
        now, cost, boundary = self.overhead(), self.last_check_s, self.last_boundary or 0
        per_boundary = (now["elapsed_s"] - now["check_s"]) / boundary if boundary > 0 else 0.0
        needed = (now["check_s"] + cost) / self.max_overhead - cost - now["elapsed_s"]
        ahead = 1 if needed <= 0 or per_boundary <= 0 else max(1, math.ceil(needed / per_boundary))
        if self.schedule.every_n_steps is not None:
            at = f"step {(boundary + ahead) * self.schedule.every_n_steps}"
        else:
            at = f"epoch {(boundary + ahead) * self.schedule.every_n_epochs - 1}"
        return f"overhead {now['share'] or 0.0:.1%} of {self.max_overhead:.0%}; next check about {at} (and at the end)"

    def state_dict(self) -> dict[str, Any]:
        return {"last_boundary": self.last_boundary, "check_s": self.check_s, "elapsed_s": self.overhead()["elapsed_s"],
                "skipped": self.skipped, "last_check_s": self.last_check_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_boundary = state.get("last_boundary", self.last_boundary)
        for name in ("check_s", "elapsed_s", "last_check_s"):
            if isinstance(state.get(name), (int, float)):
                setattr(self, name, float(state[name]))
        if isinstance(state.get("skipped"), int):
            self.skipped = state["skipped"]
