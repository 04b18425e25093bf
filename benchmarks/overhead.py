"""Training overhead of the Lightning ``AttributionDriftCallback``: the same training run timed
with and without it, in one process.

Reference workload (``overhead_workload.py``): all-MiniLM-L6-v2 with a two-class head, fine-tuned
by a Lightning Trainer on the CPU on 2,000 generated reviews an epoch (5% carry a planted word)
with a 300-review validation set. The callback runs at its defaults (32 probes, one check an
epoch after validation, the trapezoid rule on 12 intervals, bisected up to 128 where the relative
delta is above 5%), its run directory in a temporary folder, and gets the training texts and
labels so shortcut discovery runs as in real use.

Runs alternate ``without, with, with, without, ...`` so slow drift in machine load (other
processes share the cores) hits both arms alike; every run starts from the same weights and
seed, after one untimed warm-up fit. Reported: each run's ``trainer.fit`` wall time, the time
spent inside the callback's hooks, each check's ``timings.total_s`` from ``summary.json``, the
overhead ratio, and the check's share of an epoch. Then, on the trained model
(``overhead_profile.py``): one check at the runs' settings split into its parts, measured by
``cProfile`` and a hook on the embedding layer (nothing of the package is patched), and
alternative settings timed with their convergence figures, so that a faster setting is not
bought with worse integrals.

Runs minutes apart still differ by 10-20% on a shared machine, so two estimates free of that
drift come with the wall-time ratio: the time inside the callback's hooks against the rest of
the same run, and a work model (tokens through the model by kind of pass, priced at per-token
costs calibrated by short interleaved passes). One torch thread by default: on a shared 2-core
machine, two threads stalled each other and made runs 4-5x slower and erratic.

    python benchmarks/overhead.py            # 1 epoch, 1 pair of runs, 4 settings (about 4 minutes)
    python benchmarks/overhead.py --full     # 2 epochs, 2 pairs, 13 settings x 3 (about 20 minutes)
    python benchmarks/overhead.py --tiny --out /tmp/x   # tiny BERT from a config, under 10 seconds
    python benchmarks/overhead.py --n-steps 8           # time the runs at another setting
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from overhead_profile import (
    DEFAULT_VARIANTS,
    VARIANTS,
    Variant,
    build_monitor,
    calibrate_costs,
    in_training_mode,
    modelled_overhead,
    profile_check,
    time_variants,
)
from overhead_workload import TimedAttributionCallback, Workload, fit, reference_workload, tiny_workload
from tables import markdown_table

from explain_callbacks import ProbeSet

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_OVERHEAD = 0.05


@dataclass
class RunTiming:
    """One timed ``trainer.fit``."""

    order: int
    with_callback: bool
    fit_s: float
    cpu_s: float
    epoch_s: list[float]
    validation_s: list[float]
    hook_s: dict[str, float] = field(default_factory=dict)
    check_total_s: list[float] = field(default_factory=list)
    check_attribute_s: list[float] = field(default_factory=list)
    share_converged: list[float] = field(default_factory=list)
    val_acc: float | None = None
    tokens: dict[str, int] = field(default_factory=dict)

    @property
    def callback_s(self) -> float:
        return sum(self.hook_s.values())


ENGINE_SETTINGS = ("n_steps", "max_steps", "tokens_per_chunk")
DISCOVERY_SETTINGS = ("counterfactual_probes",)


def callback_settings(args: argparse.Namespace) -> Variant:
    """The callback's defaults but for the settings asked for on the command line."""
    chosen = {name: getattr(args, name) for name in ENGINE_SETTINGS + DISCOVERY_SETTINGS}
    return Variant("the runs' settings",
                   engine={k: v for k, v in chosen.items() if k in ENGINE_SETTINGS and v is not None},
                   discovery={k: v for k, v in chosen.items() if k in DISCOVERY_SETTINGS and v is not None})


def callback_for(work: Workload, run_dir: Path, run_name: str, settings: Variant,
                 probes: ProbeSet | None = None) -> TimedAttributionCallback:
    return TimedAttributionCallback(
        work.tokenizer, probes or work.probes, run_dir=run_dir, run_name=run_name,
        training_texts=work.train.texts, training_labels=work.train.labels,
        discovery_options=settings.discovery, **settings.engine,
    )


def run_order(pairs: int) -> list[bool]:
    """``without, with, with, without, ...``: each pair mirrors the last, cancelling linear drift."""
    order: list[bool] = []
    for p in range(pairs):
        order += [False, True] if p % 2 == 0 else [True, False]
    return order


def timed_runs(work: Workload, args: argparse.Namespace, scratch: Path) -> tuple[list[RunTiming], Any]:
    """The timed fits in alternating order; returns them and the last trained model."""
    settings = callback_settings(args)
    warm = callback_for(work, scratch, "warm-up", settings, probes=ProbeSet(list(work.probes)[:4]))
    fit(work, 1, args.seed, warm, limit_batches=3)  # first-call costs (allocator, imports) out of the timings
    runs, trained = [], None
    for i, with_callback in enumerate(run_order(args.pairs)):
        callback = callback_for(work, scratch, f"run-{i}", settings) if with_callback else None
        trained, took, clock, acc = fit(work, args.epochs, args.seed, callback)
        run = RunTiming(i, with_callback, took.wall_s, took.cpu_s, clock.epoch_s, clock.validation_s, val_acc=acc,
                        tokens=dict(clock.tokens))
        if callback is not None:
            run.hook_s = dict(callback.hook_seconds)
            summary = json.loads((scratch / f"run-{i}" / "summary.json").read_text())
            run.check_total_s = [c["timings"]["total_s"] for c in summary["checks"]]
            run.check_attribute_s = [c["timings"]["attribute_s"] for c in summary["checks"]]
            run.share_converged = [c["convergence"]["share_converged"] for c in summary["checks"]]
        runs.append(run)
        print(f"  run {i} {'with   ' if with_callback else 'without'} callback: {took.wall_s:7.1f} s"
              + (f"  (checks {', '.join(f'{s:.1f}' for s in run.check_total_s)} s)" if with_callback else ""),
              flush=True)
    return runs, trained


def overhead_figures(runs: Sequence[RunTiming], epochs: int) -> dict[str, Any]:
    """The overhead ratio, per pair and over all runs, and the check's share of an epoch."""
    with_s = [r.fit_s for r in runs if r.with_callback]
    without_s = [r.fit_s for r in runs if not r.with_callback]
    pair_ratios = [runs[i + 1].fit_s / runs[i].fit_s if runs[i + 1].with_callback else runs[i].fit_s / runs[i + 1].fit_s
                   for i in range(0, len(runs) - 1, 2)]
    checks = [s for r in runs for s in r.check_total_s]
    epoch_without = statistics.mean(s for r in runs if not r.with_callback for s in r.epoch_s)
    hooks = [r.callback_s for r in runs if r.with_callback]
    ratio = statistics.mean(with_s) / statistics.mean(without_s)
    cpu_ratio = statistics.mean(r.cpu_s for r in runs if r.with_callback) / statistics.mean(
        r.cpu_s for r in runs if not r.with_callback)
    validation = statistics.mean(s for r in runs if not r.with_callback for s in r.validation_s)
    check_s = statistics.mean(checks) if checks else float("nan")
    in_run = statistics.mean(r.callback_s / (r.fit_s - r.callback_s) for r in runs if r.with_callback)
    return {
        "fit_with_s": with_s,
        "fit_without_s": without_s,
        "pair_ratios": pair_ratios,
        "ratio": ratio,
        "overhead": ratio - 1,
        "cpu_ratio": cpu_ratio,
        "check_total_s_mean": check_s,
        "callback_hooks_s_mean_per_run": statistics.mean(hooks),
        "callback_hooks_share_of_fit_without": statistics.mean(hooks) / statistics.mean(without_s),
        "epoch_without_s_mean": epoch_without,
        "validation_without_s_mean": validation,
        "check_share_of_epoch": check_s / epoch_without,
        "in_run_overhead": in_run,
        "target_overhead": TARGET_OVERHEAD,
        # Runs minutes apart differ by more than the target on a shared machine, so a low wall
        # ratio alone is not taken as met: the in-run estimate must agree.
        "target_met": max(ratio - 1, in_run) <= TARGET_OVERHEAD,
        "epochs_per_run": epochs,
    }


def break_even(check_s: float, validation_s: float, train_s_per_example: float) -> float:
    """Training examples an epoch at which one check is ``TARGET_OVERHEAD`` of the epoch."""
    return max(0.0, (check_s / TARGET_OVERHEAD - validation_s) / train_s_per_example)


# ------------------------------------------------------------------------------ reporting
RUN_COLUMNS = [
    ("order", "run", "{}"),
    ("arm", "callback", "{}"),
    ("fit_s", "fit s", "{:.1f}"),
    ("epochs", "epoch s", "{}"),
    ("validation", "validation s", "{}"),
    ("checks", "check total_s", "{}"),
    ("callback_s", "in callback hooks s", "{:.1f}"),
    ("val_acc", "val acc", "{:.1%}"),
]

VARIANT_COLUMNS = [
    ("variant", "setting", "{}"),
    ("check_s", "check s", "{:.2f}"),
    ("speedup_vs_defaults", "x defaults", "{:.2f}"),
    ("modelled_check_s", "modelled s", "{:.1f}"),
    ("share_under_tolerance", "rel.d <= 5%", "{:.0%}"),
    ("mean_rel_delta", "mean rel.d", "{:.4f}"),
    ("p95_rel_delta", "p95 rel.d", "{:.3f}"),
    ("mean_steps", "mean steps", "{:.1f}"),
    ("path_evaluations", "path evals", "{:.1f}"),
    ("tokens_vs_defaults", "work x defaults", "{:.2f}"),
    ("top10_overlap_with_defaults", "top-10 = defaults", "{:.0%}"),
    ("candidates", "top candidates", "{}"),
]


def run_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    def seconds(values: Sequence[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values) or "-"

    return [{
        "order": r["order"], "arm": "with" if r["with_callback"] else "without", "fit_s": r["fit_s"],
        "epochs": seconds(r["epoch_s"]), "validation": seconds(r["validation_s"]),
        "checks": seconds(r["check_total_s"]), "callback_s": sum(r["hook_s"].values()) if r["with_callback"] else None,
        "val_acc": r["val_acc"],
    } for r in runs]


def profile_rows(profile: dict[str, Any]) -> list[str]:
    total = profile["check_wall_s"]
    lines = ["| part of one check | s | share |", "|---|---:|---:|"]
    for label, s in sorted(profile["parts_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {s:.2f} | {s / total:.0%} |")
    lines.append(f"| whole check (profiled) | {total:.2f} | 100% |")
    lines += ["", "| Integrated Gradients | passes | path points | tokens | share of path tokens |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['round']} | {r['passes']} | {r['points']} | {r['tokens']:,} | {r['share_of_path_tokens']:.0%} |"
              for r in profile["rounds"]]
    return lines


def title_of(report: dict[str, Any]) -> str:
    s = report["settings"]
    return (f"Training overhead: {s['train_examples']} examples an epoch, {s['epochs']} epoch(s), "
            f"{s['pairs']} pair(s) of runs, {s['probes']} probes")


def write_results(report: dict[str, Any], stem: Path) -> None:
    """``stem``.json (everything) and ``stem``.md (the tables with settings, load and verdict)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    s, o, m, env = report["settings"], report["overhead"], report["modelled"], report["environment"]
    variants = [dict(r, candidates=", ".join(r["top_candidates"])) for r in report["variants"]]
    lines = [
        f"# {title_of(report)}", "",
        f"Model: {report['model']}. Trainer on the CPU, batch {s['batch_size']}, AdamW lr {s['lr']:g}, dynamic "
        f"padding to at most {s['max_length']} tokens, {s['val_examples']} validation examples; callback settings: "
        f"{s['callback'] or 'defaults'}.",
        f"Environment: Python {env['python']}, torch {env['torch']}, lightning {env['lightning']}, "
        f"{env['cpu_count']} CPUs, {s['threads']} torch threads. Load average (1, 5, 15 min) at start "
        f"{fmt_load(report['load_average']['start'])}, at end {fmt_load(report['load_average']['end'])}.", "",
        "## Runs (order: without, with, with, without, ...)", "",
        markdown_table(RUN_COLUMNS, run_rows(report["runs"])), "",
        f"- Overhead: **{o['overhead']:+.1%}** (mean fit with / without = {o['ratio']:.3f}; per pair: "
        + ", ".join(f"{x:.3f}" for x in o["pair_ratios"]) + f"; CPU time with / without = {o['cpu_ratio']:.3f}).",
        f"- Check (summary.json `timings.total_s`): {o['check_total_s_mean']:.1f} s, "
        f"{o['check_share_of_epoch']:.1%} of an epoch without the callback ({o['epoch_without_s_mean']:.1f} s).",
        f"- Time inside the callback's hooks (set-up, checks, report at the end): "
        f"{o['callback_hooks_s_mean_per_run']:.1f} s a run, {o['callback_hooks_share_of_fit_without']:.1%} of a fit "
        f"without it; within the same run, hooks / (fit - hooks) = **{o['in_run_overhead']:+.1%}**, the estimate "
        "that load changes between runs cannot skew.",
        f"- Work model (load-free): the check pushed {fmt_tokens(m['check_tokens'])} tokens through the model, the "
        f"fit without it {fmt_tokens(m['fit_tokens'])}; at calibrated costs of "
        + ", ".join(f"{k} {v * 1e6:.0f}" for k, v in m["costs_s_per_token"].items())
        + f" us per token that is {m['check_s']:.1f} s against {m['fit_s']:.1f} s: **{m['overhead']:+.1%}**.",
        f"- Target (overhead <= {TARGET_OVERHEAD:.0%}, judged on the larger of the wall ratio and the in-run "
        f"estimate, {max(o['overhead'], o['in_run_overhead']):+.1%}): {'met' if o['target_met'] else 'MISSED'}. "
        "At this check time, "
        f"one check an epoch stays under {TARGET_OVERHEAD:.0%} from about {report['break_even_train_examples']:,.0f} "
        f"training examples an epoch (training time per example {report['train_s_per_example'] * 1000:.0f} ms, "
        f"validation {o['validation_without_s_mean']:.1f} s an epoch).", "",
        "## Where one check's time goes (one check on the trained model at the runs' settings)", "",
        *profile_rows(report["profile"]), "",
        f"Measured by cProfile around `monitor.check` (nothing patched): each part is a public function's "
        f"cumulative time less the parts nested in it. Profiling costs time itself: the same check's own "
        f"`timings.total_s` was {report['profile']['timings_total_s']:.2f} s. {report['profile']['probes_refined']} "
        f"of {s['probes']} probes needed refinement. The summary dict and the run-directory writes come after "
        "`timings.total_s` is taken; writing summary.json and report.html at the end of the run "
        f"took {report['profile']['finish_s']:.2f} s once.", "",
        f"## Settings compared on the same trained model (median of {s['variant_repeats']})", "",
        markdown_table(VARIANT_COLUMNS, variants), "",
        "rel.d: |sum(attributions) - (F(x) - F(b))| / |F(x) - F(b)| per probe. path evals: gradient evaluations "
        "along the path per probe, discarded adaptive passes included. work x defaults: padded tokens through the "
        "model's forward passes (a gradient evaluation counts once) against the defaults', free of load noise; "
        "modelled s: those tokens at the calibrated costs per token. top-10 = defaults: overlap of the check's "
        "ten top words with the defaults'. check s: wall time of `monitor.check` (run-directory writes included).", "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))


def fmt_tokens(tokens: dict[str, int]) -> str:
    return " + ".join(f"{n / 1000:,.0f}k {kind}" for kind, n in sorted(tokens.items()))


def fmt_load(load: Sequence[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="2 epochs, 2 pairs of runs, 3 timings per variant")
    p.add_argument("--tiny", action="store_true", help="tiny BERT from a config, 200 examples (a smoke run)")
    p.add_argument("--epochs", type=int, help="epochs per run (default 1, 2 with --full)")
    p.add_argument("--pairs", type=int, help="pairs of runs with and without the callback (default 1, 2 with --full)")
    p.add_argument("--train-examples", type=int, help="training examples an epoch (default 2000, 200 with --tiny)")
    p.add_argument("--val-examples", type=int, help="validation examples (default 300, 50 with --tiny)")
    p.add_argument("--probes", type=int, help="probes (default 32, 8 with --tiny)")
    p.add_argument("--variant-repeats", type=int, help="timings per variant, median reported (default 1, 3 with --full)")
    p.add_argument("--variants", help="comma-separated indices of the settings to time after the runs: "
                   + "; ".join(f"{i} {v.name}" for i, v in enumerate(VARIANTS))
                   + f" (default 0-{DEFAULT_VARIANTS - 1}, all with --full; 'none' skips them)")
    p.add_argument("--n-steps", type=int, help="callback n_steps in the timed runs (default: the callback's)")
    p.add_argument("--max-steps", type=int, help="callback max_steps in the timed runs")
    p.add_argument("--tokens-per-chunk", type=int, help="callback tokens_per_chunk in the timed runs")
    p.add_argument("--counterfactual-probes", type=int, help="shortcut discovery's counterfactual_probes in the timed runs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine, threads beyond the free cores stall "
                        "each other; 0 keeps torch's default, one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results")
    p.add_argument("--name", default="overhead", help="results go to OUT/NAME.md and OUT/NAME.json")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (2 if args.full else 1)
    args.pairs = args.pairs or (2 if args.full else 1)
    args.train_examples = args.train_examples or (200 if args.tiny else 2000)
    args.val_examples = args.val_examples or (50 if args.tiny else 300)
    args.probes = args.probes or (8 if args.tiny else 32)
    args.variant_repeats = args.variant_repeats or (3 if args.full else 1)
    if min(args.epochs, args.pairs, args.train_examples, args.val_examples, args.probes, args.variant_repeats) < 1:
        p.error("counts must be at least 1")
    args.variant_list = select_variants(p, args.variants, args.full)
    return args


def select_variants(parser: argparse.ArgumentParser, spec: str | None, full: bool) -> list[Variant]:
    if spec is None:
        return list(VARIANTS) if full else VARIANTS[:DEFAULT_VARIANTS]
    if spec == "none":
        return []
    try:
        chosen = [VARIANTS[int(i)] for i in spec.split(",")]
    except (ValueError, IndexError):
        parser.error(f"--variants takes indices 0..{len(VARIANTS) - 1} or 'none', got {spec!r}")
    return chosen if chosen[0] is VARIANTS[0] else [VARIANTS[0], *chosen]  # defaults are the reference


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    print(f"load average at start: {fmt_load(load_start)}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        scratch = Path(tmp)
        if args.tiny:
            work = tiny_workload(args.train_examples, args.val_examples, args.probes, args.seed, scratch)
        else:
            work = reference_workload(args.train_examples, args.val_examples, args.probes, args.seed)
        runs, trained = timed_runs(work, args, scratch)
        figures = overhead_figures(runs, args.epochs)
        stage = time.perf_counter()
        costs = calibrate_costs(trained, work)
        with_run = next(r for r in runs if r.with_callback)
        modelled = modelled_overhead(with_run.tokens, next(r for r in runs if not r.with_callback).tokens, costs)
        with in_training_mode(trained):
            monitor = build_monitor(trained, work, scratch, "profile", callback_settings(args))
            monitor.setup()
            _, profile = profile_check(monitor)
        profile["finish_s"] = runs[max(i for i, r in enumerate(runs) if r.with_callback)].hook_s.get("on_fit_end", 0.0)
        print(f"  calibrated costs per token in {time.perf_counter() - stage:.0f} s; "
              f"timing {len(args.variant_list)} settings ...", flush=True)
        stage = time.perf_counter()
        variants = (time_variants(trained, work, scratch, args.variant_list, args.variant_repeats, costs)
                    if args.variant_list else [])
        print(f"  timed the settings in {time.perf_counter() - stage:.0f} s", flush=True)
    load_end = os.getloadavg()
    per_example_s = (figures["epoch_without_s_mean"] - figures["validation_without_s_mean"]) / args.train_examples
    import lightning

    report = {
        "schema_version": 1,
        "settings": {"train_examples": args.train_examples, "val_examples": args.val_examples, "probes": args.probes,
                     "epochs": args.epochs, "pairs": args.pairs, "variant_repeats": args.variant_repeats,
                     "batch_size": work.batch_size, "lr": work.lr, "max_length": work.max_length,
                     "threads": torch.get_num_threads(), "seed": args.seed, "tiny": args.tiny,
                     "callback": {**callback_settings(args).engine, **callback_settings(args).discovery}},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "lightning": lightning.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine()},
        "model": work.name,
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "runs": [asdict(r) for r in runs],
        "overhead": figures,
        "modelled": modelled,
        "train_s_per_example": per_example_s,
        "break_even_train_examples": break_even(figures["check_total_s_mean"], figures["validation_without_s_mean"],
                                                per_example_s),
        "profile": profile,
        "variants": variants,
        "wall_s": time.perf_counter() - started,
    }
    write_results(report, args.out / args.name)
    print((args.out / args.name).with_suffix(".md").read_text())
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
