"""Milliseconds per probe of a check, per architecture, on tiny models (ratios, not absolutes).

Every classifier of ``examples/tiny_models.py`` (the ones ``tests/test_architectures.py`` checks) is built the same way (hidden 32, 2 layers,
trained a few steps, tokenizer written here) and checked with the engine's defaults (adaptive
trapezoid from 12 intervals, 5% relative tolerance, up to 128) on the same generated reviews,
target class 1. The first check also probes the model (padding invariance, degenerate baseline):
its extra cost is the ``first check`` column. Tiny models make the forward cheap next to Python
overhead, so only ratios between rows mean anything; real models scale with their size.

    python benchmarks/architectures.py [--probes 32] [--repeats 3] [--threads 1] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))  # the tiny models
sys.path.insert(0, str(HERE))

from tables import markdown_table  # noqa: E402
from tiny_models import ARCH_TABLE, ARCHITECTURES, ArchitectureUnavailable, build_architecture, sentiment_data  # noqa: E402

from explain_callbacks import AttributionEngine, ProbeSet  # noqa: E402


def family(case: str) -> str:
    if case.startswith("peft") or case == "compiled":
        return "wrapped BERT"
    arch = case
    if arch in ("bart", "t5"):
        return "encoder-decoder"
    if ARCH_TABLE[arch][2] == "bpe":
        return "decoder-only"
    return "encoder"


def measure(case: str, directory: Path, probes: ProbeSet, repeats: int) -> dict:
    try:
        tok, model = build_architecture(case, directory)
    except ArchitectureUnavailable as why:
        return {"case": ARCHITECTURES[case], "family": family(case), "note": f"skipped: {why}"}
    engine = AttributionEngine(model, tok, target=1)
    start = time.perf_counter()
    records = engine.attribute(probes)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        records = engine.attribute(probes)
        times.append(time.perf_counter() - start)
    steady = statistics.median(times)
    cal = engine.calibration
    notes = []
    if cal.degenerate_baseline is not None:
        notes.append(f"baseline {cal.degenerate_baseline} -> {cal.baseline_id}")
    if not cal.mix_lengths:
        notes.append("reads padding: batched by length")
    if cal.padding_side == "left":
        notes.append("left padding")
    return {
        "case": ARCHITECTURES[case], "family": family(case),
        "ms_per_probe": 1000 * steady / len(probes),
        "first_extra_ms": 1000 * (first - steady) / len(probes),
        "points": statistics.mean(r.n_steps for r in records),
        "converged": sum(r.converged for r in records) / len(records),
        "note": ", ".join(notes) or "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="case ids (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    texts, labels = sentiment_data(args.probes, seed=21)
    probes = ProbeSet([{"text": t, "label": y} for t, y in zip(texts, labels)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.only or list(ARCHITECTURES):
            row = measure(case, Path(tmp), probes, args.repeats)
            rows.append(row)
            print(row, flush=True)
    bert = next((r["ms_per_probe"] for r in rows if r["case"] == "BERT" and "ms_per_probe" in r), None)
    for r in rows:
        if bert and "ms_per_probe" in r:
            r["vs_bert"] = r["ms_per_probe"] / bert
    import transformers

    columns = [("case", "architecture", "{}"), ("family", "family", "{}"), ("ms_per_probe", "ms/probe", "{:.1f}"),
               ("vs_bert", "x BERT", "{:.2f}"), ("first_extra_ms", "first check +ms/probe", "{:.1f}"),
               ("points", "points/probe", "{:.1f}"), ("converged", "converged", "{:.0%}"), ("note", "first check found", "{}")]
    header = (f"# Check cost per architecture (tiny models)\n\n`python benchmarks/architectures.py --probes {args.probes} "
              f"--repeats {args.repeats} --threads {args.threads}`; transformers {transformers.__version__}, torch "
              f"{torch.__version__}, CPU. Engine defaults, target class 1, median of {args.repeats} checks after the "
              "first. Tiny models (hidden 32, 2 layers): ratios only.\n\n")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "architectures" if transformers.__version__.startswith("4.") else "architectures_tf5"
    (args.out / f"{name}.md").write_text(header + markdown_table(columns, rows) + "\n")
    (args.out / f"{name}.json").write_text(json.dumps(rows, indent=2, allow_nan=False))
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
