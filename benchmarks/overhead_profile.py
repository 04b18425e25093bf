"""Single checks of the overhead benchmark, measured from the outside: the work model (tokens
by kind of pass at calibrated costs), the parts of one check, and other settings timed on the
same trained model.

Nothing of the package is patched or wrapped. The parts of a check come from ``cProfile`` run
around ``monitor.check`` and read at the package's public functions (``engine.attribute``,
``engine.predict``, ``discovery.rank``, ...); the Integrated Gradients passes from a forward hook
on the model's embedding layer, which sees every pass through the model with its rows and width.
"""

from __future__ import annotations

import copy
import cProfile
import pstats
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from overhead_workload import Collate, Workload, counting_tokens, pass_kind

from explain_callbacks import AttributionEngine, ProbeSet
from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.drift import DriftTracker
from explain_callbacks.detection.shortcuts import ShortcutDiscovery
from explain_callbacks.monitor import AttributionMonitor

TOLERANCE = 0.05


# ------------------------------------------------------------------------------ work model
def calibrate_costs(model: Any, work: Workload, repeats: int = 3) -> dict[str, float]:
    """Seconds per token of a training step, a check's gradient evaluation and a forward pass.

    Short passes on the trained model, interleaved ``repeats`` times, medians: slow changes in
    machine load hit all three alike, so their ratios hold where minute-long runs drift apart.
    """
    collate = Collate(work.tokenizer, work.max_length)
    rows = work.train.rows()
    batches = [collate(rows[i : i + work.batch_size]) for i in range(0, 4 * work.batch_size, work.batch_size)]
    trainee = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=work.lr)
    probes = ProbeSet(list(work.probes)[:8])
    engine = AttributionEngine(copy.deepcopy(model), work.tokenizer, n_steps=16, max_steps=16)
    per_token: dict[str, list[float]] = {"train": [], "gradient": [], "forward": []}

    def train_steps() -> None:
        for batch in batches:
            trainee(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def forwards() -> None:
        trainee.eval()
        with torch.no_grad():
            for batch in batches:
                trainee(**batch)
        trainee.train()

    for _ in range(repeats):
        for kind, work_fn, layer in (("train", train_steps, trainee.get_input_embeddings()),
                                     ("gradient", lambda: engine.attribute(probes), engine.adapter.embedding_layer),
                                     ("forward", forwards, trainee.get_input_embeddings())):
            with counting_tokens(layer) as tokens:
                start = time.perf_counter()
                work_fn()
                seconds = time.perf_counter() - start
            if kind == "gradient":  # take out the check's own forwards, if any
                seconds -= tokens["forward"] * (statistics.median(per_token["forward"]) if per_token["forward"] else 0)
            per_token[kind].append(seconds / tokens[kind])
    return {kind: statistics.median(values) for kind, values in per_token.items()}


def modelled_seconds(tokens: dict[str, int], costs: dict[str, float]) -> float:
    """Time the tokens would take at the calibrated costs (validation passes are forwards)."""
    kinds = {"validation": "forward"}
    return sum(n * costs[kinds.get(kind, kind)] for kind, n in tokens.items())


def modelled_overhead(with_tokens: dict[str, int], without_tokens: dict[str, int], costs: dict[str, float]) -> dict[str, Any]:
    """The overhead from work done and calibrated costs: a run's check tokens (its gradient and
    forward passes) against a run without the callback's training and validation tokens."""
    check = {k: v for k, v in with_tokens.items() if k in ("gradient", "forward")}
    check_s, fit_s = modelled_seconds(check, costs), modelled_seconds(without_tokens, costs)
    return {"costs_s_per_token": costs, "check_tokens": check, "fit_tokens": dict(without_tokens),
            "check_s": check_s, "fit_s": fit_s, "overhead": check_s / fit_s}


# ------------------------------------------------------------------------------ settings
@dataclass
class Variant:
    """A setting to time: engine options, shortcut-discovery options, and how many of the probes."""

    name: str
    engine: dict[str, Any] = field(default_factory=dict)
    discovery: dict[str, Any] = field(default_factory=dict)
    probe_share: float = 1.0


VARIANTS = [
    Variant("defaults (trapezoid 12, bisected to 128)"),
    Variant("Gauss-Legendre 16, doubled to 128 (previous default)", engine={"method": "gausslegendre"}),
    Variant("n_steps 16, bisected to 128", engine={"n_steps": 16}),
    Variant("half of the probes", probe_share=0.5),
    Variant("n_steps 16, fixed (no adaptive redo)", engine={"n_steps": 16, "max_steps": 16}),
    Variant("counterfactual_probes 4", discovery={"counterfactual_probes": 4}),
    Variant("n_steps 8, bisected to 128", engine={"n_steps": 8}),
    Variant("n_steps 32, bisected to 128", engine={"n_steps": 32}),
    Variant("n_steps 8, fixed", engine={"n_steps": 8, "max_steps": 8}),
    Variant("tokens_per_chunk 4096", engine={"tokens_per_chunk": 4096}),
    Variant("tokens_per_chunk 16384", engine={"tokens_per_chunk": 16384}),
    Variant("no counterfactuals", discovery={"counterfactual_words": 0}),
    Variant("riemann_trapezoid, 16 adaptive to 128", engine={"method": "riemann_trapezoid"}),
]
DEFAULT_VARIANTS = 4  # the first four; --full times them all


def build_monitor(model: Any, work: Workload, run_dir: Path, name: str, variant: Variant) -> AttributionMonitor:
    engine = AttributionEngine(model, work.tokenizer, **variant.engine)
    probes = ProbeSet(list(work.probes)[: max(1, round(variant.probe_share * len(work.probes)))])
    monitor = AttributionMonitor(engine, probes, run_dir=run_dir, run_name=name,
                                 training_texts=work.train.texts, training_labels=work.train.labels)
    if variant.discovery:
        monitor.discovery = ShortcutDiscovery(work.train.texts, work.train.labels, **variant.discovery)
    return monitor


@contextmanager
def in_training_mode(model: Any) -> Iterator[None]:
    """The trained model as the callback sees it at a check: in training mode."""
    model.train()
    try:
        yield
    finally:
        model.eval()


def path_evaluations(attributions: Sequence[Any], engine_options: dict[str, Any]) -> float:
    """Mean gradient evaluations along the path per probe, discarded adaptive passes included
    (the trapezoid rule keeps all its points, so its final count is the whole cost)."""
    if engine_options.get("method", "adaptive_trapezoid") == "adaptive_trapezoid":
        return sum(a.n_steps for a in attributions) / len(attributions)
    total = 0
    for a in attributions:
        steps = engine_options.get("n_steps", 12)
        while steps <= a.n_steps:
            total += steps
            steps *= 2
    return total / len(attributions)


def top_words(result: Any, k: int = 10) -> list[str]:
    return [row["word"] for row in result.token_table[:k]]


def time_variants(model: Any, work: Workload, scratch: Path, variants: Sequence[Variant], repeats: int,
                  costs: dict[str, float]) -> list[dict[str, Any]]:
    """Each variant's check on the same trained model, repeats interleaved; median time reported."""
    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    tokens: dict[str, dict[str, int]] = {}
    outcome: dict[str, Any] = {}
    with in_training_mode(model):
        for r in range(repeats):
            for i, v in enumerate(variants):
                monitor = build_monitor(model, work, scratch, f"variant-{i}-{r}", v)
                monitor.setup()
                with counting_tokens(monitor.engine.adapter.embedding_layer) as count:
                    start = time.perf_counter()
                    result = monitor.check(step=0, epoch=0)
                    seconds[v.name].append(time.perf_counter() - start)
                tokens[v.name] = dict(count)
                outcome[v.name] = result
    reference = top_words(outcome[variants[0].name])
    rows = []
    for v in variants:
        result = outcome[v.name]
        conv = result.convergence
        rel = [a.rel_delta for a in result.snapshot.attributions]
        rows.append({
            "variant": v.name,
            "engine": v.engine,
            "discovery": v.discovery,
            "probes": len(result.snapshot.attributions),
            "check_s": statistics.median(seconds[v.name]),
            "check_s_all": seconds[v.name],
            "model_tokens": sum(tokens[v.name].values()),
            "tokens": tokens[v.name],
            "modelled_check_s": modelled_seconds(tokens[v.name], costs),
            "share_under_tolerance": sum(x <= TOLERANCE for x in rel) / len(rel),
            "share_converged": conv["share_converged"],
            "mean_rel_delta": conv["mean_rel_delta"],
            "p95_rel_delta": conv["p95_rel_delta"],
            "mean_steps": conv["mean_steps"],
            "path_evaluations": path_evaluations(result.snapshot.attributions, v.engine),
            "top10_overlap_with_defaults": len(set(top_words(result)) & set(reference)) / max(1, len(reference)),
            "top_candidates": [c["word"] for c in result.candidates[:3]],
        })
    base = rows[0]
    for row in rows:
        row["speedup_vs_defaults"] = base["check_s"] / row["check_s"]
        row["tokens_vs_defaults"] = row["model_tokens"] / base["model_tokens"]
    return rows


# ------------------------------------------------------------------------------ one check's parts
WHOLE_CHECK = "the rest of monitor.check (records, drift tables, convergence figures)"


def _key(fn: Callable[..., Any]) -> tuple[str, int, str]:
    """How ``cProfile`` names a Python function."""
    code = fn.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


@contextmanager
def recording_passes(layer: torch.nn.Module) -> Iterator[list[dict[str, Any]]]:
    """Every pass through the model, as its embedding layer sees it: kind, rows and padded width."""
    passes: list[dict[str, Any]] = []

    def record(module: torch.nn.Module, inputs: tuple, _out: Any) -> None:
        ids = inputs[0]
        passes.append({"kind": pass_kind(module), "rows": int(ids.shape[0]), "width": int(ids.shape[-1])})

    handle = layer.register_forward_hook(record)
    try:
        yield passes
    finally:
        handle.remove()


def profile_check(monitor: AttributionMonitor) -> tuple[Any, dict[str, Any]]:
    """One check of ``monitor`` (set up, model in the state the callback sees), measured by
    ``cProfile`` and a pass-recording hook. Returns the check's result and its profile.

    Each part is the cumulative time of a public function during the check, less the parts
    nested in it, so the parts add up to the profiled ``monitor.check`` exactly.
    """
    engine = monitor.engine
    profiler = cProfile.Profile()
    with recording_passes(engine.adapter.embedding_layer) as passes:
        profiler.enable()
        try:
            result = monitor.check(step=0, epoch=0)
        finally:
            profiler.disable()
    if result is None:
        raise RuntimeError("the profiled check failed; see the log above.")
    stats = pstats.Stats(profiler).stats

    def cumulative(fn: Callable[..., Any], caller: Callable[..., Any] | None = None) -> float:
        entry = stats.get(_key(fn))
        if entry is None:
            return 0.0
        if caller is None:
            return entry[3]
        via = entry[4].get(_key(caller))
        return via[3] if via else 0.0

    attribute, encode = type(engine).attribute, type(engine.adapter).encode
    tokenise = cumulative(encode, attribute)
    predict = cumulative(type(engine).predict)
    parts = {
        "Integrated Gradients (engine.attribute besides tokenising)": cumulative(attribute) - tokenise,
        "tokenise the probes": tokenise,
        "counterfactual predictions (engine.predict)": predict,
        "shortcut discovery, besides its predictions": cumulative(ShortcutDiscovery.rank) - predict,
        "drift tracker (update)": cumulative(DriftTracker.update),
        "alert rules": cumulative(AlertRules.evaluate),
        "summary dict": cumulative(AttributionMonitor.summary),
    }
    for sink in monitor.sinks:
        parts[f"{type(sink).__name__}.log_check"] = cumulative(type(sink).log_check)
    whole = cumulative(AttributionMonitor.check)
    parts[WHOLE_CHECK] = whole - sum(parts.values())
    attributions = result.snapshot.attributions
    return result, {
        "check_wall_s": whole,
        "timings_total_s": result.snapshot.timings["total_s"],
        "timings_attribute_s": result.snapshot.timings["attribute_s"],
        "parts_s": parts,
        "rounds": integration_rounds(passes, len(attributions), engine.method, engine.n_steps),
        "probes_refined": sum(a.n_steps > engine.n_steps + 1 for a in attributions),
        "passes": {kind: sum(p["kind"] == kind for p in passes) for kind in ("gradient", "forward")},
        "convergence": result.convergence,
    }


def integration_rounds(passes: Sequence[dict[str, Any]], tasks: int, method: str, n_steps: int) -> list[dict[str, Any]]:
    """The check's gradient passes, split into the first pass and the refinements.

    The trapezoid rule's first pass evaluates ``n_steps + 1`` points of every (probe, target)
    before any refinement, so its passes are the first ones whose rows add up to that; the
    other methods' rounds are not told apart here.
    """
    gradient = [p for p in passes if p["kind"] == "gradient"]
    first_points = tasks * (n_steps + 1) if method == "adaptive_trapezoid" else sum(p["rows"] for p in gradient)
    rounds = {"first pass": [], "refinements": []}
    seen = 0
    for p in gradient:
        rounds["first pass" if seen < first_points else "refinements"].append(p)
        seen += p["rows"]
    total = sum(p["rows"] * p["width"] for p in gradient) or 1
    return [{"round": name, "passes": len(ps), "points": sum(p["rows"] for p in ps),
             "tokens": sum(p["rows"] * p["width"] for p in ps),
             "share_of_path_tokens": sum(p["rows"] * p["width"] for p in ps) / total}
            for name, ps in rounds.items() if ps]
