"""The options every integration takes, validated once, at construction.

``MonitorOptions`` is the one place the monitor's options are spelled and checked: the
integrations build one in their ``__init__`` (so bad options fail before training starts), the
bare ``AttributionMonitor`` builds one from its keyword arguments, and everything below trusts
them. ``Schedule`` is the one rule for when a check is due.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from explain_callbacks.attribution.engine import (
    ADAPTIVE,
    DEFAULT_MAX_STEPS,
    DEFAULT_N_STEPS,
    validate_engine_options,
)
from explain_callbacks.attribution.probes import ProbeError, ProbeSet, as_probe_set
from explain_callbacks.attribution.records import FAIL_ON
from explain_callbacks.attribution.validation import positive_int
from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.statistics import DEFAULT_MAX_EXAMPLES
from explain_callbacks.run.directory import PROBES_FILE, validate_run_name
from explain_callbacks.run.readers import read_probes
from explain_callbacks.run.sinks.base import Sink

VERBOSE = (True, False, "full")
DEFAULT_MAX_OVERHEAD = 0.05  # the budget of the default schedule: a check's share of training wall time


@dataclass
class Schedule:
    """When a check is due: every ``every_n_epochs`` epochs or every ``every_n_steps`` steps."""

    every_n_epochs: int | None = 1
    every_n_steps: int | None = None

    def __post_init__(self) -> None:
        if self.every_n_steps is not None and self.every_n_epochs not in (None, 1):
            raise ValueError("give every_n_epochs or every_n_steps, not both.")
        if self.every_n_steps is not None:
            self.every_n_epochs = None
        for name in ("every_n_epochs", "every_n_steps"):
            positive_int(getattr(self, name), name, optional=True)
        if self.every_n_epochs is None and self.every_n_steps is None:
            raise ValueError("set every_n_epochs or every_n_steps.")

    def boundary(self, step: int | None = None, epochs: float | None = None) -> int | None:
        """How many schedule boundaries training has passed after ``step`` optimizer steps or
        ``epochs`` completed epochs (fractional allowed): a check is due when this grows.
        ``None`` when the schedule counts the one that was not given."""
        if self.every_n_steps is not None:
            return None if step is None else int(step) // self.every_n_steps
        if epochs is None:
            return None
        return math.floor(epochs + 1e-6) // self.every_n_epochs


# The options that shape the engine; a monitor given a built engine refuses them.
ENGINE_OPTIONS = ("n_steps", "max_steps", "method", "target", "rel_tolerance", "tokens_per_chunk", "max_length",
                  "adapter_options")


@dataclass
class MonitorOptions:
    """The options shared by the Lightning, Hugging Face and Flair integrations and the bare
    ``AttributionMonitor``.

    The schedule: ``every_n_epochs`` / ``every_n_steps`` give exactly that schedule; given
    neither, a check is due every epoch but runs only while the checks' share of training wall
    time stays within ``max_overhead`` (default 5%), and a last check runs when training ends.
    ``max_overhead`` next to an explicit schedule applies the budget to it.

    ``n_steps`` / ``max_steps`` are the Integrated Gradients integration steps of one check
    (first pass / refinement cap), not training steps: the names are kept because they are
    ``AttributionEngine``'s public arguments (DESIGN.md) and Captum's ``n_steps``; the training
    schedule is ``every_n_steps`` / ``every_n_epochs``.
    """

    probes: Any = None
    probe_sample_size: int = 32
    every_n_epochs: int | None = None  # neither given: every epoch, within the default max_overhead
    every_n_steps: int | None = None
    max_overhead: float | None = None
    n_steps: int = DEFAULT_N_STEPS
    max_steps: int = DEFAULT_MAX_STEPS
    method: str = ADAPTIVE
    target: str | int = "auto"
    rel_tolerance: float = 0.05
    tokens_per_chunk: int = 8192
    top_k: int = 10
    watch_tokens: Sequence[str] = ()
    invariance_pairs: Sequence[tuple[str, str]] = ()
    rules: AlertRules | None = None
    training_texts: Sequence[str] | None = None
    training_labels: Sequence[Any] | None = None
    max_training_examples: int = DEFAULT_MAX_EXAMPLES
    run_dir: str | Path | None = "explain_runs"
    run_name: str | None = None
    resume: bool = False
    sinks: Sequence[Sink] = ()
    fail_on: str = "never"
    verbose: bool | str = True  # one line per check on stderr; "full": the per-check table; False: silent
    max_length: int | None = None  # attribute probes up to this many tokens (set the training truncation)
    adapter_options: dict[str, Any] = field(default_factory=dict)
    faithfulness: bool = True  # comprehensiveness / sufficiency per check (attribution/faithfulness.py)
    schedule: Schedule = field(init=False)

    def __post_init__(self) -> None:
        if self.every_n_epochs is None and self.every_n_steps is None:
            self.every_n_epochs = 1
            if self.max_overhead is None:
                self.max_overhead = DEFAULT_MAX_OVERHEAD
        self.schedule = Schedule(self.every_n_epochs, self.every_n_steps)
        if self.max_overhead is not None and (isinstance(self.max_overhead, bool) or not isinstance(
                self.max_overhead, (int, float)) or not 0 < self.max_overhead < 1):
            raise ValueError(
                f"max_overhead must be a fraction of training wall time in (0, 1), e.g. 0.05, got {self.max_overhead!r}."
            )
        if self.fail_on not in FAIL_ON:
            raise ValueError(f"fail_on must be one of {FAIL_ON}, got {self.fail_on!r}.")
        if self.verbose not in VERBOSE:
            raise ValueError(f"verbose must be True (one line per check), 'full' or False, got {self.verbose!r}.")
        if self.run_name is not None:
            validate_run_name(self.run_name)
        positive_int(self.probe_sample_size, "probe_sample_size")
        positive_int(self.top_k, "top_k")
        positive_int(self.max_training_examples, "max_training_examples")
        positive_int(self.max_length, "max_length", optional=True)
        validate_engine_options(self.n_steps, self.max_steps, self.method, self.rel_tolerance, self.tokens_per_chunk,
                                owner="options")
        if self.probes is not None:
            self.probes = as_probe_set(self.probes)
        if isinstance(self.watch_tokens, str):
            raise ValueError("watch_tokens must be a list of words, not one string.")
        if (self.training_texts is None) != (self.training_labels is None):
            raise ValueError("give training_texts and training_labels together (one label per text).")
        for sink in self.sinks:
            if not isinstance(sink, Sink):
                raise TypeError(f"{type(sink).__name__} is not a Sink (needs start, log_check, finish).")
        if self.rules is None:
            self.rules = AlertRules(watch_tokens=self.watch_tokens, invariance_pairs=self.invariance_pairs)
        if self.probes is not None:
            self.rules.validate(self.probes)
        if not isinstance(self.faithfulness, bool):
            raise ValueError(f"faithfulness must be True or False, got {self.faithfulness!r}.")

    def adapter_kwargs(self) -> dict[str, Any]:
        """What the model adapter is built with: ``adapter_options`` plus ``max_length``."""
        kwargs = dict(self.adapter_options)
        if self.max_length is not None:
            kwargs.setdefault("max_length", self.max_length)
        return kwargs

    def engine_kwargs(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "max_steps": self.max_steps, "method": self.method, "target": self.target,
                "rel_tolerance": self.rel_tolerance, "tokens_per_chunk": self.tokens_per_chunk}

    def run_probes(self, state: Mapping[str, Any] | None = None, *, sample_from: Any = None, where: str = "the dataset",
                   **sampling: Any) -> ProbeSet:
        """The probes a run uses; the one rule of every integration.

        ``probes=`` when given; else the probes a checkpoint stored (``state["probes"]``, the
        integration's saved state); else, with ``resume=True`` and a ``run_name``, the run
        directory's ``probes.jsonl``; else ``probe_sample_size`` probes sampled from
        ``sample_from`` (seeded, stratified: :meth:`ProbeSet.sample` with ``sampling``; ``where``
        names it in errors). A resumed run never resamples, so a changed eval/validation set
        cannot change its probes."""
        if self.probes is not None:
            return self.probes
        if state and state.get("probes"):
            return ProbeSet(state["probes"])
        if self.resume and self.run_dir is not None and self.run_name is not None:
            recorded = read_probes(Path(self.run_dir) / self.run_name / PROBES_FILE)
            if recorded:
                return ProbeSet(recorded)
        if sample_from is None:
            raise ValueError(f"no probes: pass probes=, or give {where} to sample them from.")
        try:
            return ProbeSet.sample(sample_from, self.probe_sample_size, seed=0, **sampling)
        except ProbeError as err:
            raise ProbeError(f"sampling probes from {where}: {err} Or pass probes=[...].") from None
