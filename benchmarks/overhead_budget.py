"""The overhead budget over several epochs: the Lightning callback at its defaults (a check due
every epoch within ``max_overhead=0.05``, and one at the end), with ``every_n_epochs=1`` and
``max_overhead=0.05``, and with ``every_n_epochs=1`` alone (exactly every epoch), against the
same fit without the callback, in one process.

Reference workload (``overhead_workload.py``): all-MiniLM-L6-v2 with a two-class head, 2,000
generated reviews an epoch, 300 validation reviews, 32 probes, one torch thread. Runs alternate
``without, defaults, budget, every-epoch, every-epoch, budget, defaults, without`` (``--rounds``
such mirrored blocks) so slow drift in machine load hits every arm alike; every run starts from
the same weights and seed, after one untimed warm-up fit. Printed: each arm's fit wall time, its
ratio to the runs without the callback (the wall-time overhead), the share the callback recorded
for itself (``summary.json`` ``overhead.share``: checks' seconds over the wall time since set-up),
and the checks that ran (epoch of each; the last is the end of training).

    python benchmarks/overhead_budget.py                  # 5 epochs, 1 round (about 25 minutes on 2 cores)
    python benchmarks/overhead_budget.py --tiny --epochs 3 --out /tmp/x   # tiny BERT, a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from overhead_workload import TimedAttributionCallback, fit, reference_workload, tiny_workload
from tables import markdown_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ARMS = {  # name -> the callback's options (None: no callback)
    "without": None,
    "defaults": {},
    "every epoch, max_overhead 0.05": {"every_n_epochs": 1, "max_overhead": 0.05},
    "every epoch, no budget": {"every_n_epochs": 1},
}
TARGET = 0.05


def run_order(rounds: int) -> list[str]:
    names = list(ARMS)
    order: list[str] = []
    for r in range(rounds):
        order += names + names[::-1] if r % 2 == 0 else names[::-1] + names
    return order


def timed(work: Any, args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    warm = TimedAttributionCallback(work.tokenizer, list(work.probes)[:4], run_dir=scratch, run_name="warm-up",
                                    verbose=False, every_n_epochs=1)
    fit(work, 1, args.seed, warm, limit_batches=3)
    runs = []
    for i, arm in enumerate(run_order(args.rounds)):
        options = ARMS[arm]
        callback = None
        if options is not None:
            callback = TimedAttributionCallback(work.tokenizer, work.probes, run_dir=scratch, run_name=f"run-{i}",
                                                training_texts=work.train.texts, training_labels=work.train.labels,
                                                verbose=False, **options)
        _, took, _, _ = fit(work, args.epochs, args.seed, callback)
        run: dict[str, Any] = {"arm": arm, "wall_s": took.wall_s}
        if callback is not None:
            summary = json.loads((scratch / f"run-{i}" / "summary.json").read_text())
            run["checks"] = [c["epoch"] for c in summary["checks"]]
            run["check_s"] = [c["timings"]["total_s"] for c in summary["checks"]]
            run["recorded_share"] = summary["overhead"]["share"]
            run["skipped"] = summary["overhead"]["skipped"]
        runs.append(run)
        print(f"  run {i} {arm:32s} {took.wall_s:7.1f} s" + (
            f"  checks at epochs {run['checks']} ({sum(run['check_s']):.1f} s), recorded share "
            f"{run['recorded_share']:.1%}" if callback is not None else ""), flush=True)
    return runs


def figures(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    base = statistics.mean(r["wall_s"] for r in runs if r["arm"] == "without")
    rows = []
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        wall = statistics.mean(r["wall_s"] for r in mine)
        row = {"arm": arm, "runs": len(mine), "fit_s": wall, "overhead": wall / base - 1}
        if ARMS[arm] is not None:
            row["recorded_share"] = statistics.mean(r["recorded_share"] for r in mine)
            row["checks"] = "; ".join(",".join(map(str, r["checks"])) for r in mine)
            row["min_checks"] = min(len(r["checks"]) for r in mine)
        rows.append(row)
    return rows


def verdicts(rows: Sequence[dict[str, Any]], epochs: int) -> list[str]:
    by = {r["arm"]: r for r in rows}
    defaults, budget = by["defaults"], by["every epoch, max_overhead 0.05"]
    last = epochs - 1
    out = []
    met = max(defaults["overhead"], defaults["recorded_share"]) <= TARGET and defaults["min_checks"] >= 2 and all(
        c.split(",")[-1] == str(last) for c in defaults["checks"].split("; "))
    out.append(f"- defaults: overhead {defaults['overhead']:+.1%} wall, {defaults['recorded_share']:.1%} recorded, "
               f"at least {defaults['min_checks']} checks, the last at epoch {last} (target <= 5% with >= 2 checks, "
               f"one at the end): **{'met' if met else 'missed'}**")
    close = abs(budget["recorded_share"] - TARGET) <= 0.01 or budget["recorded_share"] <= TARGET
    out.append(f"- every_n_epochs=1, max_overhead=0.05: recorded share {budget['recorded_share']:.1%}, wall "
               f"{budget['overhead']:+.1%} (target: within one point of 5%): **{'met' if close else 'missed'}**")
    return out


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1, help="mirrored blocks of the four arms (default 1: 8 fits)")
    p.add_argument("--tiny", action="store_true", help="tiny BERT from a config, 200 examples (a smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--name", default="overhead_budget")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        work = (tiny_workload(200, 50, 8, args.seed, scratch) if args.tiny
                else reference_workload(2000, 300, 32, args.seed))
        runs = timed(work, args, scratch)
    rows = figures(runs)
    table = markdown_table(
        [("arm", "arm", "{}"), ("runs", "runs", "{}"), ("fit", "fit (s)", "{:.1f}"),
         ("overhead_text", "wall overhead", "{}"), ("share_text", "recorded share", "{}"),
         ("checks", "checks (epochs, per run)", "{}")],
        [{**r, "overhead_text": "-" if r["arm"] == "without" else f"{r['overhead']:+.1%}",
          "share_text": f"{r['recorded_share']:.1%}" if "recorded_share" in r else "-",
          "fit": r["fit_s"], "checks": r.get("checks", "-")} for r in rows],
    )
    text = "\n".join([f"# Overhead budget: {work.name}, {args.epochs} epochs, {len(runs)} fits", "", table, "",
                      *verdicts(rows, args.epochs)])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text + "\n")
    (args.out / f"{args.name}.json").write_text(json.dumps({"runs": runs, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
