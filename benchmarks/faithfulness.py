"""Faithfulness of the engine's attributions, and what measuring it costs a check.

The speed benchmark's model (all-MiniLM-L6-v2 with a two-class head, ``speed.load_classifier``)
is fine-tuned on generated reviews in ``--chunks`` pieces; after each piece (and once before
any) two monitors on the same model check the same 32 probes (with the training data, as an
integration gathers it at its defaults, so shortcut discovery runs as in a real check), one with
faithfulness on and one with it off, in alternating order, so a check's cost with and without it is measured side by side
under the same load. Per check it prints comprehensiveness and sufficiency (ERASER, AOPC over the
top 1, 5, 10, 20, 50% of words, ``attribution/faithfulness.py``) beside the random-words baseline,
the share of probes whose comprehensiveness beats random, the forwards per probe, and the time.

Targets (issue 26): comprehensiveness above the random baseline at 100% of checks;
faithfulness at most 15% of a check's time (``faithfulness_s / total_s`` of the check with it on;
the side-by-side difference of the two checks' total time is printed too).

    python benchmarks/faithfulness.py                     # 32 probes, 3 chunks of 100 reviews (~4 min)
    python benchmarks/faithfulness.py --probes 8 --chunks 1 --out /tmp/x   # smoke run
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
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from speed import fine_tune, load_classifier
from synthetic_reviews import planted_reviews
from tables import markdown_table

from explain_callbacks import AttributionEngine, AttributionMonitor, ProbeSet

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAX_SHARE_OF_CHECK = 0.15


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    model, tokenizer, info = load_classifier(False, args.seed, 0)
    data = planted_reviews(args.probes, shortcut=None, seed=args.seed + 1000)
    probes = ProbeSet([{"text": t, "label": y, "id": f"p{i}"} for i, (t, y) in enumerate(zip(data.texts, data.labels))])
    work = Path(tempfile.mkdtemp(prefix="faithfulness-"))
    chunks = [planted_reviews(args.chunk_size, shortcut=None, seed=args.seed + c) for c in range(1, args.chunks + 1)]
    # the training data as an integration gathers it at its defaults, so discovery runs as it would
    texts, labels = [t for c in chunks for t in c.texts], [y for c in chunks for y in c.labels]
    monitors = {on: AttributionMonitor(AttributionEngine(model, tokenizer), probes, run_dir=work, verbose=False,
                                       run_name=f"faithfulness-{'on' if on else 'off'}", faithfulness=on,
                                       training_texts=texts, training_labels=labels)
                for on in (True, False)}
    rows = []
    for chunk in range(args.chunks + 1):
        if chunk:
            fine_tune(model, tokenizer, chunks[chunk - 1], seed=args.seed + chunk, lr=args.lr)
        order = (True, False) if chunk % 2 == 0 else (False, True)
        results = {on: monitors[on].check(step=chunk * args.chunk_size, epoch=chunk) for on in order}
        on, off = results[True], results[False]
        f = on.faithfulness
        timings = on.snapshot.timings
        rows.append({
            "check": chunk, "trained_examples": chunk * args.chunk_size,
            "accuracy": on.health.get("accuracy"),
            **{k: f.get(k) for k in ("comprehensiveness", "random_comprehensiveness", "sufficiency",
                                     "share_above_random", "n_probes", "forwards_per_probe")},
            "above_random": f["comprehensiveness"] > f["random_comprehensiveness"],
            "faithfulness_s": timings["faithfulness_s"], "check_s": timings["total_s"],
            "check_off_s": off.snapshot.timings["total_s"],
            "share_of_check": timings["faithfulness_s"] / timings["total_s"],
            "side_by_side_extra": timings["total_s"] / off.snapshot.timings["total_s"] - 1,
        })
    for monitor in monitors.values():
        monitor.finish(raise_on_alert=False)
    share = statistics.median(r["share_of_check"] for r in rows)
    return {
        "settings": {"probes": args.probes, "chunks": args.chunks, "chunk_size": args.chunk_size, "lr": args.lr,
                     "seed": args.seed, "threads": torch.get_num_threads()},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()},
        "model": info["model"],
        "rows": rows,
        "targets": {
            "comprehensiveness above random on every check": all(r["above_random"] for r in rows),
            f"faithfulness at most {MAX_SHARE_OF_CHECK:.0%} of a check (median over checks)": share <= MAX_SHARE_OF_CHECK,
        },
        "median_share_of_check": share,
    }


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    columns = [("check", "check", "{}"), ("trained_examples", "trained", "{}"), ("accuracy", "acc", "{:.2f}"),
               ("comprehensiveness", "compr.", "{:.3f}"), ("random_comprehensiveness", "random", "{:.3f}"),
               ("sufficiency", "suff.", "{:.3f}"),
               ("share_above_random", "> random", "{:.0%}"), ("forwards_per_probe", "fwd/probe", "{:.1f}"),
               ("faithfulness_s", "faith. s", "{:.2f}"), ("check_s", "check s", "{:.2f}"),
               ("check_off_s", "check off s", "{:.2f}"), ("share_of_check", "share of check", "{:.1%}")]
    lines = [f"# Faithfulness per check: {s['probes']} probes, {report['model']}",
             "",
             f"Fine-tuned in {s['chunks']} chunks of {s['chunk_size']} generated reviews (lr {s['lr']:g}), a check "
             f"before and after each; {s['threads']} torch thread(s). Each check ran twice on the same model, "
             "faithfulness on and off, in alternating order.",
             "", markdown_table(columns, report["rows"]), ""]
    for name, met in report["targets"].items():
        lines.append(f"- Target {'met' if met else 'MISSED'}: {name}.")
    lines += ["", "compr.: comprehensiveness, mean drop of the gold class's probability when the top 1/5/10/20/50% "
              "of words are replaced by the baseline token; suff.: sufficiency, the drop when only they are kept; "
              "random: the same number of random words (seeded per probe). > random: share of probes whose "
              "comprehensiveness beats the random one. share of check: faithfulness_s / total_s of the check "
              "with it on; check off s: the same check with faithfulness off, side by side."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probes", type=int, default=32)
    p.add_argument("--chunks", type=int, default=3, help="fine-tuning pieces (a check after each, and one before)")
    p.add_argument("--chunk-size", type=int, default=100, help="generated reviews per piece")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    started = time.perf_counter()
    report = run(args)
    report["wall_s"] = time.perf_counter() - started
    text = render(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faithfulness.md").write_text(text)
    (args.out / "faithfulness.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


if __name__ == "__main__":
    main()
