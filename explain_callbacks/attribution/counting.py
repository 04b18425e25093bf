"""What a check costs, by phase: the model's forward passes, the texts and tokens they carried,
the gradient evaluations along the integration path, and the seconds spent.

The engine counts every forward pass it runs (path evaluations, predictions, the calibration's
probing) into the phase that is open when it runs; whoever runs the engine names the phases
(``attribution`` and ``calibration`` are the engine's own; the monitor opens ``discovery`` around
the counterfactual tests, which predict through the engine). Phases nest, and a phase's seconds
exclude the phases opened inside it, so the calibration that the first ``attribute`` runs is not
counted twice.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator

OTHER = "other"


@dataclass
class PhaseCount:
    """One phase's work: forward passes (batches), texts (rows) and padded tokens through the
    model, the rows whose gradient was taken (path evaluations), the (probe, target) records
    attributed, and its own seconds."""

    forwards: int = 0
    texts: int = 0
    tokens: int = 0
    gradient_evaluations: int = 0
    records: int = 0
    seconds: float = 0.0

    def minus(self, earlier: "PhaseCount") -> "PhaseCount":
        return PhaseCount(**{k: v - getattr(earlier, k) for k, v in asdict(self).items()})


class ForwardCounter:
    """Counts the engine's forward passes into the open phase (see the module docstring)."""

    def __init__(self) -> None:
        self.phases: dict[str, PhaseCount] = {}
        self._open: list[tuple[str, float]] = []  # (phase, perf_counter when it last resumed)

    @property
    def current(self) -> str:
        return self._open[-1][0] if self._open else OTHER

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count and time what runs inside under ``name``; the enclosing phase pauses meanwhile."""
        now = time.perf_counter()
        if self._open:
            self._stop_clock(now)
        self._open.append((name, now))
        try:
            yield
        finally:
            now = time.perf_counter()
            self._stop_clock(now)
            self._open.pop()
            if self._open:
                self._open[-1] = (self._open[-1][0], now)

    def _stop_clock(self, now: float) -> None:
        name, since = self._open[-1]
        self.phases.setdefault(name, PhaseCount()).seconds += now - since
        self._open[-1] = (name, now)

    def count(self, input_ids: Any, gradients: bool = False) -> None:
        """One forward pass of the batch ``input_ids`` (rows x padded length)."""
        rows = int(input_ids.shape[0]) if input_ids.dim() else 1
        entry = self.phases.setdefault(self.current, PhaseCount())
        entry.forwards += 1
        entry.texts += rows
        entry.tokens += int(input_ids.numel())
        if gradients:
            entry.gradient_evaluations += rows

    def count_records(self, n: int) -> None:
        """``n`` (probe, target) records attributed in the open phase."""
        self.phases.setdefault(self.current, PhaseCount()).records += n

    def totals(self) -> dict[str, PhaseCount]:
        """A copy of the counts so far (running phases' seconds up to their last pause)."""
        return {k: PhaseCount(**asdict(v)) for k, v in self.phases.items()}

    def since(self, earlier: dict[str, PhaseCount]) -> dict[str, PhaseCount]:
        """The counts added since ``earlier`` (a ``totals()``), per phase."""
        return {k: v.minus(earlier.get(k, PhaseCount())) for k, v in self.totals().items()}
