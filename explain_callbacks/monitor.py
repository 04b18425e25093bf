"""``AttributionMonitor``: the framework-free loop one check at a time.

An integration calls ``setup()`` once before training, ``check(step, epoch)`` at its cadence
and ``finish()`` after training. The monitor attributes the probes (each rank its share under
``torch.distributed``), tracks drift, ranks shortcut candidates, evaluates alert rules and fans
the result out to its sinks. Everything it needs to continue after a resume is in
``state_dict()``.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch

from explain_callbacks.attribution.adapters import ModelAdapter
from explain_callbacks.attribution.convergence import convergence_summary
from explain_callbacks.attribution.counting import PhaseCount
from explain_callbacks.attribution.engine import AttributionEngine
from explain_callbacks.attribution.faithfulness import evaluate_faithfulness, faithfulness_summary
from explain_callbacks.attribution.probes import ProbeSet, as_probe_set
from explain_callbacks.attribution.records import (
    SCHEMA_VERSION,
    CheckResult,
    ProbeAttribution,
    Snapshot,
    at_or_above,
    json_safe,
)
from explain_callbacks.attribution.words import adjacent_phrases, text_words
from explain_callbacks.detection.alerts import AlertRules, probe_health
from explain_callbacks.detection.drift import DriftTracker
from explain_callbacks.detection.shortcuts import ShortcutDiscovery
from explain_callbacks.detection.statistics import TrainingStatistics, batch_examples, dataset_examples
from explain_callbacks.options import ENGINE_OPTIONS, MonitorOptions
from explain_callbacks.run.directory import REPORT_FILE, default_run_name
from explain_callbacks.run.sinks import same_target
from explain_callbacks.run.sinks.base import RunInfo, Sink
from explain_callbacks.run.sinks.run_dir import RunDirectorySink
from explain_callbacks.schedule import CheckSchedule

log = logging.getLogger(__name__)



class AttributionAlertError(RuntimeError):
    """Raised after training when alerts reach the ``fail_on`` severity (or a check failed)."""


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class AttributionMonitor:
    """Runs checks on a fixed probe set and reports drift, convergence and alerts.

    Args:
        engine: the ``AttributionEngine`` bound to the model being trained.
        probes: a ``ProbeSet``, a list of texts/dicts, or a probe file (default: ``options.probes``).
        options: a validated ``MonitorOptions`` (what the integrations pass); else the keyword
            arguments below build one, validated there:
        top_k: words per probe (and globally) that drift and alerts compare.
        watch_tokens, invariance_pairs: see ``AlertRules``; ignored when ``rules`` is given.
        training_texts, training_labels: the training data (or a sample) for shortcut discovery.
            Not needed where the integration gathers the statistics itself (every integration
            does) or a custom loop calls :meth:`observe`.
        max_training_examples: how many distinct training examples the statistics sample.
        run_dir: root of the local run directory (``None`` turns it off); ``run_name`` its folder.
        resume: continue an existing run directory with the same probes.
        sinks: more sinks (TensorBoard, W&B).
        fail_on: ``"never"``, ``"warning"`` or ``"error"``: the alert severity at which
            ``finish()`` raises ``AttributionAlertError``. ``"error"`` also stops at a failing check.
        verbose: what a check prints to stderr: ``True`` (default) one line (what was checked,
            how long it took against the time since the previous check, accuracy, new alerts),
            ``"full"`` the per-check table with the top words and alerts, ``False`` nothing.
        every_n_epochs, every_n_steps: the schedule :meth:`due` answers by (a custom loop may
            call :meth:`check` whenever it likes instead).
        faithfulness: measure each check's comprehensiveness and sufficiency against a random
            baseline (:mod:`~.faithfulness`; up to 15 forwards a probe, no gradients).
    """

    def __init__(self, engine: AttributionEngine, probes: Any = None, *, options: MonitorOptions | None = None,
                 fallback_name: str | None = None, **kwargs: Any):
        if not isinstance(engine, AttributionEngine):
            raise TypeError(f"engine must be an AttributionEngine, got {type(engine).__name__}.")
        if options is None:
            built = sorted(set(kwargs) & set(ENGINE_OPTIONS))
            if built:
                raise TypeError(
                    f"{', '.join(built)}= shape the engine, which is already built: pass them to "
                    "AttributionEngine(...), or use AttributionMonitor.from_options(MonitorOptions(...), model)."
                )
            options = MonitorOptions(probes=probes, **kwargs)
        elif kwargs:
            raise TypeError(f"give options= or keyword options, not both (got {', '.join(sorted(kwargs))}=).")
        if probes is None and options.probes is None:
            raise ValueError("no probes: pass probes=, or give the trainer a validation/eval dataset to sample them from.")
        self.options = options
        self.engine = engine
        self.probes: ProbeSet = options.probes if probes is None else as_probe_set(probes)
        if options.probes is None or self.probes is not options.probes:
            options.rules.validate(self.probes)  # the options could not: the probes were not known yet
        self.top_k = options.top_k
        self.fail_on = options.fail_on
        self.verbose = options.verbose
        self.faithfulness = options.faithfulness
        self._faithfulness_s = 0.0
        self.rules: AlertRules = options.rules
        self.tracker = DriftTracker(top_k=options.top_k)
        self.statistics = TrainingStatistics(options.max_training_examples,
                                             phrases=_probe_phrases(self.probes, self.rules))
        self.statistics.bind_tokenizer(getattr(engine.adapter, "tokenizer", None))
        self.discovery = ShortcutDiscovery(
            training_texts=options.training_texts, training_labels=options.training_labels, statistics=self.statistics
        )
        self.run_name = options.run_name or fallback_name or default_run_name()
        self.resume = options.resume
        self.run_dir = None if options.run_dir is None else Path(options.run_dir)
        self.sinks: list[Sink] = [RunDirectorySink(self.run_dir)] if self.run_dir is not None else []
        self.sinks.extend(options.sinks)
        self._candidates: list[dict[str, Any]] = []
        self._failed_checks: list[str] = []
        self._sink_errors: list[str] = []
        self._status = "running"
        self._started = False
        self._refused = False  # set-up failed: the run never started, and writes nothing
        self._finished = False
        self._restored = False
        self.schedule = CheckSchedule(options.schedule, options.max_overhead)  # position and overhead clock
        self._last_check_end: float | None = None  # perf_counter at set-up, then after each check
        self._counted = engine.counter.totals()  # the engine's forwards up to the previous check
        self.engine.prepare(self.probes)

    @classmethod
    def from_options(cls, options: MonitorOptions, adapter_or_model: Any, tokenizer: Any = None,
                     probes: ProbeSet | None = None, *, adapter_built: bool = False,
                     run_name: str | None = None) -> "AttributionMonitor":
        """Bind validated ``options`` to a model (or an adapter; ``adapter_built=True`` says the
        caller built it with ``options.adapter_kwargs()``); ``probes`` fill in when the options
        hold none, and ``run_name`` (the framework's own run name) when ``options.run_name`` is
        not set."""
        adapter_kwargs = {} if adapter_built else options.adapter_kwargs()
        if adapter_kwargs and isinstance(adapter_or_model, ModelAdapter):
            raise ValueError(
                f"{', '.join(sorted(adapter_kwargs))}= cannot be applied to an already built "
                f"{type(adapter_or_model).__name__}; it tokenizes (and truncates) as the model was trained."
            )
        engine = AttributionEngine(adapter_or_model, tokenizer, **options.engine_kwargs(), **adapter_kwargs)
        return cls(engine, probes, options=options, fallback_name=run_name)

    # --------------------------------------------------------------- lifecycle
    @property
    def is_rank_zero(self) -> bool:
        return _distributed()[0] == 0

    @property
    def run_path(self) -> Path | None:
        """This run's folder in the run directory (``None`` without one)."""
        return self.run_dir / self.run_name if self.run_dir is not None else None

    def config(self) -> dict[str, Any]:
        e = self.engine
        return {
            "top_k": self.top_k,
            "fail_on": self.fail_on,
            "n_steps": e.n_steps,
            "max_steps": e.max_steps,
            "method": e.method,
            "rel_tolerance": e.rel_tolerance,
            "target": e.target,
            "tokens_per_chunk": e.tokens_per_chunk,
            "chunk_tokens": e.chunk_tokens,  # the budget in use: halved after running out of memory
            "model": type(e.adapter.model).__name__,
            "labels": list(e.adapter.label_names),
            "max_length": getattr(e.adapter, "max_length", None),
            "precision": e.precision,
            "sharding": e.lockstep.sharding if e.lockstep is not None else None,
            "every_n_epochs": self.options.schedule.every_n_epochs,
            "every_n_steps": self.options.schedule.every_n_steps,
            "max_overhead": self.options.max_overhead,
            "shortcut_evidence": self.discovery.evidence_config(),
            "shortcut_thresholds": asdict(self.rules.shortcut),
            "faithfulness": self.faithfulness,
        }

    def add_sink(self, sink: Sink) -> None:
        """Add a sink before the first check (integrations add the framework's loggers here). A
        sink that writes where one already does (the same TensorBoard writer or W&B run, see
        :func:`~explain_callbacks.run.sinks.same_target`) is not added twice."""
        if not isinstance(sink, Sink):
            raise TypeError(f"{type(sink).__name__} is not a Sink (needs start, log_check, finish).")
        if any(same_target(sink, other) for other in self.sinks):
            return
        if self._started and not self._refused:
            sink.start(self._run_info())
        self.sinks.append(sink)

    def _run_info(self) -> RunInfo:
        history = self.tracker.history
        return RunInfo(
            name=self.run_name, probes=self.probes, config=self.config(), resume=self.resume, restored=self._restored,
            last_check_index=(history[-1]["check_index"] if history else -1) if self._restored else None,
            summary=self.summary() if self._restored else None,
        )

    def setup(self) -> None:
        """Start the sinks (rank zero only). Called by the first ``check`` if not before. A sink
        that must not be skipped (``required``, as the run directory is: a folder another run
        holds) stops set-up with its error, and the monitor then writes nothing anywhere."""
        if self._refused:
            raise RuntimeError("this monitor's set-up was refused; build a new one (another run_name or run_dir).")
        if self._started:
            return
        if self.is_rank_zero:
            info = self._run_info()
            started: list[Sink] = []
            for sink in list(self.sinks):
                if not getattr(sink, "required", False):
                    continue
                try:
                    sink.start(info)
                except BaseException:
                    self._refused = True
                    for done in started:
                        self._call_sink(done, "abandon")
                    raise
                started.append(sink)
            for sink in self.sinks:
                if not getattr(sink, "required", False):
                    self._call_sink(sink, "start", info)
        self._started = True
        self._last_check_end = time.perf_counter()
        self.schedule.start_clock()

    # ---------------------------------------------------------------- schedule
    def start_schedule(self, step: int = 0, epochs: float = 0.0, recorded: int | None = None) -> None:
        """Where the schedule stands when training starts (or resumes at ``step`` / ``epochs``
        completed): see :meth:`CheckSchedule.start`. A resumed run without state does not check
        at once; ``recorded`` is an older checkpoint's position."""
        self.schedule.start(step, epochs, recorded)

    def due(self, step: int | None = None, epochs: float | None = None) -> bool:
        """Whether a check is due after ``step`` optimizer steps or ``epochs`` completed epochs
        (fractional allowed), by ``every_n_steps`` / ``every_n_epochs``: once per boundary
        passed, however often a framework's events repeat. Answering yes takes the boundary.
        With ``max_overhead``, a boundary whose check would lift the checks' share of the wall
        time above the budget is passed over (rank zero decides for every rank)."""
        if not self.schedule.passed(step, epochs):
            return False
        if self.options.max_overhead is None:
            return True
        run = self.schedule.within_budget() if self.is_rank_zero else False
        if _distributed()[1] > 1:
            box = [run]
            torch.distributed.broadcast_object_list(box, src=0)
            run = bool(box[0])
        if not run:
            self.schedule.skipped += 1
        return run

    def final_check(self, step: int, epoch: int | None = None) -> CheckResult | None:
        """The check at the end of training, which always runs under ``max_overhead`` (unless
        the last check was at this step): call it on every rank when training ends."""
        if self.options.max_overhead is None or self.schedule.last_check_step == step or self._refused:
            return None
        return self.check(step=step, epoch=epoch)

    def overhead(self) -> dict[str, Any]:
        """The checks' share of the wall time since set-up (a resumed run's time included): the
        seconds spent in checks, the wall seconds, their ratio, the budget and the boundaries
        passed over to keep it."""
        return self.schedule.overhead()

    def _call_sink(self, sink: Sink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception as err:
            log.exception("%s.%s failed; skipping it for this call.", type(sink).__name__, method)
            self._sink_errors.append(f"{type(sink).__name__}.{method}: {type(err).__name__}: {err}")

    # ------------------------------------------------------------ statistics
    def observe(
        self, texts: Sequence[str] | None = None, input_ids: Any = None, labels: Any = None, epoch: int | None = None
    ) -> int:
        """Count training examples for shortcut discovery: a batch of ``texts`` or of
        ``input_ids`` (the model's tokenizer's, padding allowed) with their class ``labels``.
        Call it from a custom loop with each batch; the integrations call it themselves.
        Reads only what it is given (no RNG, no change to training); an example seen again
        is not counted twice, and with ``epoch`` only the first epoch is read. Returns how many
        examples were new. Under ``torch.distributed`` each rank observes its own batches and
        the checks combine them."""
        return self.statistics.observe(texts=texts, input_ids=input_ids, labels=labels, epoch=epoch)

    def observe_batch(self, batch: Any, epoch: int | None = None, batches_per_epoch: Any = None) -> int:
        """:meth:`observe` a training batch as a framework hands it over (see
        :func:`~.statistics.batch_examples`); ``batches_per_epoch`` (when known) spreads the
        sample over the whole epoch. Batches without input ids and labels are skipped. It runs
        inside the user's epoch, so a batch it cannot read stops the gathering with a warning
        instead of stopping training."""
        if self.statistics.complete:
            return 0
        try:
            found = batch_examples(batch)
            if found is None:
                return 0
            texts, input_ids, labels = found
            if self.statistics.n_examples == 0 and isinstance(batches_per_epoch, int):
                self.statistics.expect(batches_per_epoch * len(labels))
            return self.observe(texts=texts, input_ids=input_ids, labels=labels, epoch=epoch)
        except Exception as err:
            self.statistics.complete = True
            log.warning("training statistics: a training batch could not be read (%s: %s); shortcut "
                        "discovery uses the %d examples counted so far.", type(err).__name__, err,
                        self.statistics.n_examples)
            return 0

    def observe_dataset(self, dataset: Any, text_key: str = "text") -> int:
        """Count a training set (the same on every rank) at once, as
        :func:`~.statistics.dataset_examples` reads it (a text column, else input ids, with
        labels); returns 0 when it holds neither, or when restored statistics are complete."""
        if self.statistics.complete:
            return 0
        found = dataset_examples(dataset, text_key, self.statistics.max_examples)
        if found is None:
            return 0
        return self.observe_examples(*found)

    def observe_examples(self, texts: Sequence[str] | None = None, input_ids: Any = None, labels: Any = None) -> int:
        """Count a whole training set (the same on every rank) at once: texts or input ids, with
        labels. Skipped when restored statistics are already complete."""
        if self.statistics.complete or labels is None or (texts is None and input_ids is None):
            return 0
        n = len(texts if texts is not None else input_ids)
        self.statistics.expect(n)
        added = self.statistics.observe(texts=texts, input_ids=input_ids, labels=labels, distinct=False)
        self.statistics.complete = True
        self.statistics.mark_replicated()
        return added

    # ------------------------------------------------------------------- check
    def check(self, step: int, epoch: int | None = None) -> CheckResult | None:
        """Run one check. Returns the result on rank zero, ``None`` on other ranks or on failure."""
        self.setup()
        started = time.perf_counter()
        try:
            attributions = self._attribute_all()
        except Exception as err:
            self._check_failed(step, err, "attribution check")
            return None
        attribute_s = time.perf_counter() - started - self._faithfulness_s
        self.schedule.add_check(step)  # on every rank: final_check() must agree across ranks
        self._gather_statistics()
        lockstep = self.engine.lockstep
        if not self.is_rank_zero:
            if lockstep is not None:  # run the model calls rank zero's evaluation makes with it
                try:
                    lockstep.serve(self.engine.predict)
                except Exception as err:
                    self._check_failed(step, err, "evaluating the check")
            return None
        try:
            result = self._evaluate(attributions, step, epoch, attribute_s, started)
        except Exception as err:
            self._check_failed(step, err, "evaluating the check")
            return None
        finally:
            if lockstep is not None:
                try:
                    lockstep.end_requests()
                except Exception:
                    log.exception("telling the other ranks that the check's evaluation ended failed.")
        summary = self.summary()
        for sink in self.sinks:
            self._call_sink(sink, "log_check", result, summary)
        if self.verbose == "full":
            from explain_callbacks.run.console import print_check

            print_check(result)
        elif self.verbose:
            from explain_callbacks.run.console import progress_line

            print(progress_line(result, len(self.probes)), file=sys.stderr, flush=True)
        return result

    def _gather_statistics(self) -> TrainingStatistics:
        """Every rank's training statistics together (collective under ``torch.distributed``);
        discovery reads them, and the checkpoint keeps them."""
        try:
            gathered = self.statistics.gathered()
        except Exception:
            log.exception("combining the ranks' training statistics failed; this check uses the local ones.")
            gathered = self.statistics
        self.discovery.statistics = gathered
        return gathered

    def _check_failed(self, step: int, err: Exception, stage: str) -> None:
        """Put a failed check in ``summary.json`` at once, then raise it under
        ``fail_on="error"``; otherwise log it and let training continue."""
        self._failed_checks.append(f"step {step}: {type(err).__name__}: {err}")
        if self.is_rank_zero:
            summary = self.summary()
            for sink in self.sinks:
                if hasattr(sink, "update"):
                    self._call_sink(sink, "update", summary)
        if self.fail_on == "error":
            raise err
        log.exception("%s at step %s failed; training continues.", stage, step)

    def _attribute_share(self, probes: Any) -> list[ProbeAttribution]:
        """This rank's probes attributed, each with its faithfulness figures when that is on."""
        attributions = self.engine.attribute(probes)
        self._faithfulness_s = 0.0
        if not self.faithfulness:
            return attributions
        if self.engine.lockstep is not None:  # its forwards are not gated: one rank's failure would desync FSDP
            for attribution in attributions:
                attribution.faithfulness = {"skipped": "not computed on a sharded model"}
            return attributions
        started = time.perf_counter()
        try:
            calibration = self.engine.calibration
            figures = evaluate_faithfulness(self.engine.adapter, attributions, tokens_per_forward=self.engine.tokens_per_chunk,
                                            mix_lengths=calibration is None or calibration.mix_lengths)
        except Exception as err:  # the attributions stand without it; the reason is kept per probe
            log.exception("faithfulness failed; the check keeps its attributions without it.")
            figures = [{"skipped": f"failed: {type(err).__name__}: {err}"} for _ in attributions]
        for attribution, figure in zip(attributions, figures):
            attribution.faithfulness = figure
        self._faithfulness_s = time.perf_counter() - started
        return attributions

    def _attribute_all(self) -> list[ProbeAttribution]:
        rank, world = _distributed()
        if world == 1 or self.engine.lockstep is not None:
            # a sharded model: every rank runs every probe, in lockstep (``attribution.distributed``)
            return self._attribute_share(self.probes)
        try:  # every rank must reach the gather, so a local failure travels as a message
            local: Any = [a.to_dict() for a in self._attribute_share(self.probes.shard(rank, world))]
        except Exception as err:
            log.exception("attribution failed on rank %s.", rank)
            local = f"rank {rank}: {type(err).__name__}: {err}"
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, local)
        errors = [part for part in gathered if isinstance(part, str)]
        if errors:
            raise RuntimeError("attribution failed on " + "; ".join(errors))
        order = {p.id: i for i, p in enumerate(self.probes)}
        merged = [ProbeAttribution.from_dict(d) for part in gathered for d in part]
        merged.sort(key=lambda a: (order[a.probe_id], a.target))
        self.engine.remember_targets(merged)
        return merged

    def _evaluate(
        self, attributions: list[ProbeAttribution], step: int, epoch: int | None, attribute_s: float, started: float
    ) -> CheckResult:
        snapshot = Snapshot(
            check_index=len(self.tracker.history),
            step=int(step),
            epoch=None if epoch is None else int(epoch),
            attributions=attributions,
            created_at=time.time(),
        )
        # what can fail (discovery runs the model) comes before the tracker records the check,
        # so a failed evaluation leaves no history row behind
        lockstep = self.engine.lockstep
        predict = self.engine.predict if lockstep is None else lockstep.lead(self.engine.predict)
        with self.engine.counter.phase("discovery"):
            ranked = self.discovery.rank(snapshot, predict_fn=partial(predict, probabilities=True))
        self._candidates = [dict(c) for c in self.rules.lead_with_alerting(ranked)]
        new_alerts = self.rules.evaluate(snapshot, self._candidates)
        convergence = convergence_summary(attributions)
        faithfulness = faithfulness_summary(attributions)
        health = probe_health(snapshot)
        drift = self.tracker.update(snapshot)
        token_table = self.tracker.token_table(snapshot)
        now = time.perf_counter()
        snapshot.timings = {"attribute_s": attribute_s, "total_s": now - started, **self._phase_timings()}
        if self.faithfulness:
            snapshot.timings["faithfulness_s"] = self._faithfulness_s
        if self._last_check_end is not None:  # training time plus this check, since the last one
            snapshot.timings["since_previous_s"] = now - self._last_check_end
        self._last_check_end = now
        self.schedule.add_check(step, now - started)
        overhead = self.overhead()
        if overhead["share"] is not None:
            snapshot.timings["overhead_share"] = overhead["share"]
        self.tracker.annotate(
            snapshot.check_index, convergence=convergence, health=health, timings=dict(snapshot.timings),
            faithfulness=faithfulness,
        )
        return CheckResult(
            snapshot=snapshot,
            drift=drift,
            convergence=convergence,
            health=health,
            token_table=token_table,
            new_alerts=new_alerts,
            alerts=list(self.rules.alerts),
            candidates=self._candidates,
            schedule_note=self.schedule.next_check_note(),
            faithfulness=faithfulness,
        )

    def _phase_timings(self) -> dict[str, float]:
        """Seconds, forward passes and texts of attribution, discovery (counterfactual tests) and
        calibration (the model probing of the first check, or of set-up) since the previous check,
        and the gradient evaluations per (probe, target) this rank attributed."""
        counts = self.engine.counter.since(self._counted)
        self._counted = self.engine.counter.totals()
        timings: dict[str, float] = {}
        for phase in ("attribution", "discovery", "calibration"):
            count = counts.get(phase)
            timings[f"{phase}_s"] = count.seconds if count else 0.0
            timings[f"{phase}_forwards"] = count.forwards if count else 0
            timings[f"{phase}_texts"] = count.texts if count else 0
        attribution = counts.get("attribution", PhaseCount())
        timings["gradient_evaluations"] = attribution.gradient_evaluations
        timings["gradient_evaluations_per_probe"] = attribution.gradient_evaluations / max(1, attribution.records)
        return timings

    # ----------------------------------------------------------------- results
    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json`` (strict JSON: undefined figures are ``null``)."""
        return json_safe({
            "schema_version": SCHEMA_VERSION,
            "run_name": self.run_name,
            "status": self._status,
            "probe_fingerprint": self.probes.fingerprint,
            "n_probes": len(self.probes),
            "config": self.config(),
            "checks": self.tracker.history,  # one row per check: drift, top words, and the fields annotate() added
            "alerts": [a.to_dict() for a in self.rules.alerts],
            "candidates": list(self._candidates),
            "stabilisation": self.tracker.stabilisation(),
            "trajectories": self.tracker.trajectories(),
            "failed_checks": list(self._failed_checks),
            "sink_errors": list(self._sink_errors),
            "coverage": self.coverage(),
            "overhead": self.overhead(),  # the checks' share of the wall time, against max_overhead
        })

    def coverage(self) -> dict[str, Any]:
        """The options that decide what can fire, so a reader sees what the run could not see
        (``summary.json`` ``coverage``; :func:`~.verdict.blind_spots` says it in lines)."""
        statistics = self.discovery.statistics
        return {
            "watch_tokens": list(self.rules.watch_tokens),
            "watched_absent": self.rules.absent_watch_tokens(self.probes),
            "invariance_pairs": len(self.rules.invariance_pairs),
            "training_statistics": bool(statistics.has_data),
            "n_training_examples": int(statistics.n_examples),
            "n_labelled_probes": sum(p.label is not None for p in self.probes),
        }

    def should_fail(self) -> bool:
        """Whether ``fail_on`` is met by the alerts (or failed checks) so far."""
        if self.fail_on == "never":
            return False
        if self._failed_checks:  # a failed check is an error-level event, so "warning" fails too
            return True
        return any(at_or_above(a.severity, self.fail_on) for a in self.rules.alerts)

    def should_stop(self, result: CheckResult | None) -> bool:
        """Whether the check that gave ``result`` raised a new alert at or above ``fail_on``
        (``"warning"`` when ``fail_on="never"``): rank zero's answer on every rank, so that all
        ranks stop together. Collective under ``torch.distributed``: call it on every rank."""
        threshold = "warning" if self.fail_on == "never" else self.fail_on
        stop = result is not None and any(at_or_above(a.severity, threshold) for a in result.new_alerts)
        if _distributed()[1] > 1:
            box = [stop]
            torch.distributed.broadcast_object_list(box, src=0)
            stop = bool(box[0])
        return stop

    def finish(self, raise_on_alert: bool = True, collective: bool = True, status: str = "finished") -> dict[str, Any]:
        """Flush every sink, render the report, and raise ``AttributionAlertError`` if ``fail_on``
        is met. Under ``torch.distributed`` rank zero decides and every rank raises alike; pass
        ``collective=False`` after an exception, when other ranks may never arrive, and
        ``status="crashed"`` so the summary does not call the run finished."""
        if self._finished:
            return self.summary()
        self._finished = True
        self.schedule.stop_clock()  # the summary stays as written
        if self._refused:  # its run directory belongs to another run: write nothing there
            return self.summary()
        self._status = status
        summary = self.summary()
        message = None
        if self.is_rank_zero:
            if self._started:
                for sink in self.sinks:
                    self._call_sink(sink, "finish", summary)
            if self.should_fail():
                message = self._failure_message()
        if collective and _distributed()[1] > 1:
            box = [message]
            torch.distributed.broadcast_object_list(box, src=0)
            message = box[0]
        if message is not None and raise_on_alert:
            raise AttributionAlertError(message)
        return summary

    def _failure_message(self) -> str:
        hits = [a for a in self.rules.alerts if at_or_above(a.severity, self.fail_on)]
        lines = [f"{len(hits)} attribution alert(s) at or above {self.fail_on!r}:"]
        lines += [f"  [{a.severity}] {a.rule}: {a.message}" for a in hits[:10]]
        lines += [f"  check failed: {msg}" for msg in self._failed_checks[:5]]
        if self.run_path is not None:
            lines.append(f"details: {self.run_path / REPORT_FILE}")
        return "\n".join(lines)

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as strict JSON values (the Hugging Face callback
        stores it in ``trainer_state.json``): undefined figures are ``None``."""
        return json_safe({
            "schema_version": SCHEMA_VERSION,
            "run_name": self.run_name,
            "probe_fingerprint": self.probes.fingerprint,
            "engine": self.engine.state_dict(),
            "tracker": self.tracker.state_dict(),
            "rules": self.rules.state_dict(),  # the check history is the tracker's, stored once
            "candidates": list(self._candidates),
            "failed_checks": list(self._failed_checks),
            "sink_errors": list(self._sink_errors),
            "statistics": self.discovery.statistics.state_dict(self.discovery.min_count),
            "schedule": self.schedule.state_dict(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run: same probes required. The run directory resumes with it."""
        fingerprint = state.get("probe_fingerprint")
        if fingerprint != self.probes.fingerprint:
            raise ValueError(
                "the checkpoint's attribution state was made with a different probe set "
                f"(fingerprint {str(fingerprint)[:12]} vs {self.probes.fingerprint[:12]}). Resume with "
                "the same probes (the run directory's probes.jsonl), or start a new run_name."
            )
        self.engine.load_state_dict(state.get("engine", {}))
        self.tracker.load_state_dict(state.get("tracker", {}))
        for old in state.get("checks") or []:  # a checkpoint from before the history had one owner
            fields = ("convergence", "health", "timings")
            self.tracker.annotate(old.get("check_index"), **{k: old[k] for k in fields if k in old})
        self.rules.load_state_dict(state.get("rules", {}))
        if state.get("statistics"):
            self.statistics.load_state_dict(state["statistics"])
            self.statistics.add_phrases(_probe_phrases(self.probes, self.rules))
            self.discovery.statistics = self.statistics
        self._candidates = list(state.get("candidates", []))
        self._failed_checks = list(state.get("failed_checks", []))
        self._sink_errors = list(state.get("sink_errors", []))
        self.schedule.load_state_dict(state.get("schedule") or {})
        self.run_name = state.get("run_name", self.run_name)
        self.resume = True
        self._restored = True


def _probe_phrases(probes: ProbeSet, rules: AlertRules) -> set[str]:
    """The phrases the probes hold (discovery asks about them), with the watched phrases' own."""
    phrases: set[str] = set()
    for probe in probes:
        for text in (probe.text, probe.text_pair or ""):
            phrases.update(adjacent_phrases(text_words(text)))
    for token in rules.watch_tokens:
        phrases.update(adjacent_phrases(text_words(token)))
    return phrases
