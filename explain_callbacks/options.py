"""The options every integration takes, validated once at construction.

Integrations build a ``MonitorOptions`` in their ``__init__`` (so bad options fail before
training starts) and call ``build_monitor`` when the model and tokenizer are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from explain_callbacks.attribution.adapters import ModelAdapter
from explain_callbacks.attribution.engine import ADAPTIVE, DEFAULT_MAX_STEPS, DEFAULT_N_STEPS, AttributionEngine
from explain_callbacks.attribution.probes import ProbeSet, as_probe_set
from explain_callbacks.attribution.validation import positive_int
from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.statistics import DEFAULT_MAX_EXAMPLES
from explain_callbacks.monitor import FAIL_ON, AttributionMonitor
from explain_callbacks.run.directory import PROBES_FILE, validate_run_name
from explain_callbacks.run.readers import read_probes
from explain_callbacks.run.sinks.base import Sink


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

    def due_at_epoch_end(self, epoch: int) -> bool:
        """``epoch`` counts from 0; the first check runs after epoch ``every_n_epochs - 1``."""
        return self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0

    def due_at_step(self, step: int) -> bool:
        return self.every_n_steps is not None and step > 0 and step % self.every_n_steps == 0

    def boundaries_passed(self, step: int, epoch: float) -> int:
        """How many schedule boundaries (every n steps, or every n whole epochs) training has
        passed at ``step`` and fractional ``epoch``: a check is due when this grows."""
        if self.every_n_steps is not None:
            return step // self.every_n_steps
        return math.floor(epoch + 1e-6) // self.every_n_epochs


@dataclass
class MonitorOptions:
    """Core options shared by the Lightning, Hugging Face and Flair integrations.

    Validated here once (the integrations pass their ``**options`` through; the layers below
    trust them). ``n_steps`` / ``max_steps`` are the Integrated Gradients integration steps of
    one check (first pass / refinement cap), not training steps: the names are kept because
    they are ``AttributionEngine``'s public arguments (DESIGN.md) and Captum's ``n_steps``; the
    training schedule is ``every_n_steps`` / ``every_n_epochs``.
    """

    probes: Any = None
    probe_sample_size: int = 32
    every_n_epochs: int | None = 1
    every_n_steps: int | None = None
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
        self.schedule = Schedule(self.every_n_epochs, self.every_n_steps)
        if self.fail_on not in FAIL_ON:
            raise ValueError(f"fail_on must be one of {FAIL_ON}, got {self.fail_on!r}.")
        if self.run_name is not None:
            validate_run_name(self.run_name)
        positive_int(self.probe_sample_size, "probe_sample_size")
        if self.probes is not None:
            self.probes = as_probe_set(self.probes)
        if isinstance(self.watch_tokens, str):
            raise ValueError("watch_tokens must be a list of words, not one string.")
        if self.rules is None:
            self.rules = AlertRules(watch_tokens=self.watch_tokens, invariance_pairs=self.invariance_pairs)
        if self.probes is not None:
            self.rules.validate(self.probes)
        positive_int(self.top_k, "top_k")
        positive_int(self.max_training_examples, "max_training_examples")
        if not isinstance(self.faithfulness, bool):
            raise ValueError(f"faithfulness must be True or False, got {self.faithfulness!r}.")
        positive_int(self.n_steps, "n_steps", minimum=2)
        positive_int(self.max_steps, "max_steps", minimum=self.n_steps)

    def resumed_probes(self, state: Mapping[str, Any] | None = None) -> ProbeSet | None:
        """The probes a run uses before any are sampled; the one rule of every integration.

        ``probes=`` when given; else the probes a checkpoint stored (``state["probes"]``, the
        integration's saved state); else, with ``resume=True`` and a ``run_name``, the run
        directory's ``probes.jsonl``. ``None``: nothing recorded, sample new probes. A resumed
        run never resamples, so a changed eval/validation set cannot change its probes."""
        if self.probes is not None:
            return self.probes
        if state and state.get("probes"):
            return ProbeSet(state["probes"])
        if self.resume and self.run_dir is not None and self.run_name is not None:
            recorded = read_probes(Path(self.run_dir) / self.run_name / PROBES_FILE)
            if recorded:
                return ProbeSet(recorded)
        return None

    def build_monitor(self, adapter_or_model: Any, tokenizer: Any = None, probes: ProbeSet | None = None) -> AttributionMonitor:
        """Bind the options to a model; ``probes`` fills in when none were given."""
        probe_set = self.probes if self.probes is not None else probes
        if probe_set is None:
            raise ValueError("no probes: pass probes=, or give the trainer a validation/eval dataset to sample them from.")
        adapter_options = dict(self.adapter_options)
        if self.max_length is not None:
            adapter_options.setdefault("max_length", self.max_length)
        if adapter_options and isinstance(adapter_or_model, ModelAdapter):
            raise ValueError(
                f"{', '.join(sorted(adapter_options))}= cannot be applied to an already built "
                f"{type(adapter_or_model).__name__}; it tokenizes (and truncates) as the model was trained."
            )
        engine = AttributionEngine(
            adapter_or_model,
            tokenizer,
            n_steps=self.n_steps,
            max_steps=self.max_steps,
            method=self.method,
            target=self.target,
            rel_tolerance=self.rel_tolerance,
            tokens_per_chunk=self.tokens_per_chunk,
            **adapter_options,
        )
        return AttributionMonitor(
            engine,
            probe_set,
            top_k=self.top_k,
            rules=self.rules,
            training_texts=self.training_texts,
            training_labels=self.training_labels,
            max_training_examples=self.max_training_examples,
            run_dir=self.run_dir,
            run_name=self.run_name,
            resume=self.resume,
            sinks=self.sinks,
            fail_on=self.fail_on,
            verbose=self.verbose,
            faithfulness=self.faithfulness,
        )
