"""``explain-callbacks compare`` on the planted-shortcut recipe: does it name the planted word,
and does it stay quiet between two seeds of the same clean recipe?

The recipe is the detection benchmark's tiny BERT (``shortcut_detection.tiny_bert``: hidden 64, 2
layers, trained from scratch on 2000 generated reviews, 3 epochs, lr 1e-3, label noise 0.2 on the
reviews without the planted word), with the Lightning ``AttributionDriftCallback`` at its
defaults (one check an epoch, training statistics gathered by the callback). MiniLM does not fit
the ~20 minutes of two shared cores for 23 runs, so this is the tiny-BERT version of the
demo's recipe (``--model minilm``: all-MiniLM-L6-v2 fine-tuned on 1200 reviews, 2 epochs, lr 5e-5,
the detection benchmark's MiniLM setting, for fewer pairs). Every run checks the same 32 probes: 24 stratified validation reviews and 8 that
contain ``zorblax`` (``shortcut_detection.build_probes`` on a planted validation split, seed 0),
so a clean base and a planted run share them (one fingerprint).

* Planted: base = the clean recipe at seed s, run = the same seed with ``zorblax`` in 5% of the
  training reviews, all positive (purity 1). Target: compare names ``zorblax`` first among the
  words whose share rose and exits 1.
* Clean pairs: base = the clean recipe at seed 2i, run = seed 2i + 1 (disjoint pairs). Target:
  exit 0 in at least 9 of 10 pairs.

Every comparison runs twice with the CLI's thresholds (``run/compare.py``: q <= 0.05, change >=
0.15, at least 3 probes; fixed before these runs): at compare's defaults (no seed repeat: a
bootstrap over probes and the words' own spread), and with ``--base-repeat`` (the clean recipe at
the next seed: s + 1 for a planted run, 2i + 2 for pair i).

    python benchmarks/compare_runs.py                       # 10 clean pairs + 3 planted (~12 min on 2 cores)
    python benchmarks/compare_runs.py --pairs 1 --planted 1 --out /tmp/x   # smoke run
    python benchmarks/compare_runs.py --model minilm --pairs 5 --planted 1  # MiniLM (~20 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shortcut_detection import (
    LABEL_NOISE,
    N_VALIDATION,
    PLANTED,
    ReviewClassifier,
    build_probes,
    loader,
    minilm,
    planted_reviews,
    tiny_bert,
)
from tables import cells_table

from explain_callbacks.integrations.lightning import AttributionDriftCallback
from explain_callbacks.run.compare import compare_runs

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCH = 32
MODELS = {  # builder, training reviews, epochs, learning rate: the detection benchmark's settings
    "tiny-bert": (tiny_bert, 2000, 3, 1e-3),
    "minilm": (minilm, 1200, 2, 5e-5),
}
RATE, PURITY = 0.05, 1.0


def probe_set():
    validation = planted_reviews(N_VALIDATION, shortcut=PLANTED, rate=RATE, purity=PURITY, label_noise=0.0,
                                 seed=1000).rows()
    probes, _ = build_probes(validation, PLANTED, 0)
    return probes, validation[:300]


def train_run(work: Path, name: str, seed: int, planted: bool, probes, validation, model_name: str) -> Path:
    build, train_size, epochs, lr = MODELS[model_name]
    pl.seed_everything(seed, verbose=False)
    model, tokenizer = build(seed, work)
    train = planted_reviews(train_size, shortcut=PLANTED if planted else None, rate=RATE if planted else 0.0,
                            purity=PURITY, label_noise=LABEL_NOISE, seed=seed)
    callback = AttributionDriftCallback(tokenizer, probes, run_dir=work / "runs", run_name=name, verbose=False,
                                        every_n_epochs=1)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[callback])
    trainer.fit(ReviewClassifier(model, lr), loader(train.rows(), tokenizer, BATCH, True, seed),
                loader(validation, tokenizer, 128, False))
    return work / "runs" / name


def judged(base: Path, run: Path, repeat: Path | None = None) -> dict[str, Any]:
    comparison = compare_runs(base, run, repeat)
    failures = comparison.failures("warning")
    rising = comparison.rising
    largest = max(comparison.words, key=lambda w: w.change) if comparison.words else None
    return {
        "base": base.name, "run": run.name, "repeat": repeat.name if repeat else None,
        "exit": 1 if failures else 0, "failures": failures,
        "first_rising": rising[0].word if rising else None,
        "first_rising_change": rising[0].change if rising else None,
        "n_rising": len(rising), "n_falling": len(comparison.falling),
        "largest_rise": None if largest is None else {"word": largest.word, "change": largest.change,
                                                     "q": largest.q_value, "n_probes": largest.n_probes},
        "new_alerts": [f"{a.severity}:{a.rule}:{a.token}" for a in comparison.new_alerts],
        "mean_rbo": comparison.mean_rbo,
        "predictions_changed": sum(p.prediction_changed for p in comparison.probe_changes),
        "faithfulness": comparison.faithfulness,
    }


def render(report: dict[str, Any]) -> str:
    def row(r: dict[str, Any]) -> list[str]:
        largest = r["largest_rise"] or {}
        q = largest.get("q")
        return [f"{r['base']} → {r['run']}" + (f" (repeat {r['repeat']})" if r["repeat"] else ""), str(r["exit"]),
                r["first_rising"] or "–",
                f"{largest.get('word', '–')} {largest.get('change', 0):+.2f} (q {q:.2g})" if q is not None else
                f"{largest.get('word', '–')} {largest.get('change', 0):+.2f} (untested)",
                ", ".join(r["new_alerts"]) or "–", "–" if r["mean_rbo"] is None else f"{r['mean_rbo']:.2f}",
                str(r["predictions_changed"])]

    headers = ["pair", "exit", "first rising", "largest rise", "new alerts", "RBO", "pred. changed"]
    s = report["settings"]
    lines = [f"# compare on the planted-shortcut recipe ({s['model']}, {s['train_size']} reviews, {s['epochs']} epochs, "
             f"lr {s['lr']:g})", "",
             f"Planted: `{PLANTED}` in {RATE:.0%} of the training reviews, purity {PURITY:g}; label noise "
             f"{LABEL_NOISE} elsewhere. 32 shared probes, 8 with `{PLANTED}`. compare at its defaults "
             "(no seed repeat unless marked). Total {:.1f} min, {} torch thread(s).".format(
                 report["wall_s"] / 60, report["settings"]["threads"]), ""]
    for title, rows in (("Planted run against its clean base", report["planted"]),
                        ("Two seeds of the clean recipe", report["clean_pairs"])):
        lines += [f"## {title}", "", cells_table(headers, [row(r) for r in rows], "lrllllr"), ""]
    for mode, targets in report["targets"].items():
        for name, target in targets.items():
            lines.append(f"- Target {'met' if target['met'] else 'MISSED'} ({mode}): {name} ({target['figure']}).")
    lines += ["", "exit: compare's exit code (1: a significant rise or a new warning); first rising: the word "
              "that leads the significant rises; largest rise: the word whose mean share rose most, with its "
              "q-value (untested: in fewer than 3 shared probes); RBO: mean rank-biased overlap of the probes' "
              "top words; pred. changed: probes whose prediction differs."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=10, help="clean seed pairs")
    p.add_argument("--planted", type=int, default=3, help="planted runs (seeds 0..n-1)")
    p.add_argument("--model", choices=sorted(MODELS), default="tiny-bert")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep", type=Path, help="keep the run folders here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="compare-runs-"))
    work.mkdir(parents=True, exist_ok=True)
    probes, validation = probe_set()
    clean: dict[int, Path] = {}

    def clean_run(seed: int) -> Path:
        if seed not in clean:
            clean[seed] = train_run(work, f"clean-s{seed}", seed, False, probes, validation, args.model)
        return clean[seed]

    planted_rows, pair_rows = [], []
    for seed in range(args.planted):
        base = clean_run(seed)
        run = train_run(work, f"planted-s{seed}", seed, True, probes, validation, args.model)
        planted_rows += [judged(base, run), judged(base, run, clean_run(seed + 1))]
        print(json.dumps(planted_rows[-2]["failures"]), flush=True)
    for i in range(args.pairs):
        base, run = clean_run(2 * i), clean_run(2 * i + 1)
        pair_rows += [judged(base, run), judged(base, run, clean_run(2 * i + 2))]
        print(base.name, run.name, pair_rows[-2]["exit"], pair_rows[-2]["failures"], flush=True)

    def targets(with_repeat: bool) -> dict[str, Any]:
        planted = [r for r in planted_rows if (r["repeat"] is not None) == with_repeat]
        pairs = [r for r in pair_rows if (r["repeat"] is not None) == with_repeat]
        named = [r for r in planted if r["exit"] == 1 and r["first_rising"] == PLANTED]
        quiet = [r for r in pairs if r["exit"] == 0]
        return {
            "planted word named first and exit 1": {"met": len(named) == len(planted),
                                                    "figure": f"{len(named)} of {len(planted)} planted comparisons"},
            "exit 0 in at least 9 of 10 clean seed pairs": {"met": len(quiet) >= 0.9 * len(pairs),
                                                            "figure": f"{len(quiet)} of {len(pairs)} pairs"},
        }

    report = {
        "settings": {"model": args.model, "pairs": args.pairs, "planted": args.planted,
                     "train_size": MODELS[args.model][1], "epochs": MODELS[args.model][2], "lr": MODELS[args.model][3],
                     "rate": RATE, "purity": PURITY, "label_noise": LABEL_NOISE,
                     "threads": torch.get_num_threads()},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()},
        "planted": planted_rows, "clean_pairs": pair_rows,
        "targets": {"defaults, no repeat": targets(False), "with --base-repeat": targets(True)},
        "wall_s": time.perf_counter() - started,
    }
    text = render(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "compare_runs" if args.model == "tiny-bert" else f"compare_runs_{args.model}"
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2, allow_nan=False, default=str) + "\n")
    return report


if __name__ == "__main__":
    main()
