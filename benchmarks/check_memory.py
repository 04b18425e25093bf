"""What a check costs in memory next to a training step: peak extra CPU RSS (and, where a GPU
is present, peak extra CUDA memory) of one ``AttributionEngine.attribute`` over the probes
against one optimizer step of the same model, for the tiny BERT and MiniLM (all-MiniLM-L6-v2
with a 2-class head), at the token budgets given (``tokens_per_chunk``; 8192 is the default).

Extra memory is the peak above the process's footprint just before (RSS sampled every
millisecond from ``/proc/self/statm``), after a warm-up step has allocated the optimizer state.
Memory the allocator kept from earlier work is reused and not counted, so both figures are what
each adds to a process that has trained already (as a check does), not what each needs alone;
the ratio is left out where the step adds under 1 MB.

    python benchmarks/check_memory.py                    # 16 probes, budgets 8192 and 2048, ~2 minutes
    python benchmarks/check_memory.py --probes 8 --budgets 8192
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from overhead_workload import Collate, reference_workload, tiny_workload  # noqa: E402
from tables import markdown_table  # noqa: E402

from explain_callbacks import AttributionEngine  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 2**20


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakExtra:
    """Peak memory above the level at entry while the block runs (RSS; CUDA where present)."""

    def __enter__(self) -> "PeakExtra":
        gc.collect()
        self.base, self.peak, self._stop = rss(), rss(), False
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, rss())
        self.rss_mb = (self.peak - self.base) / MB
        self.cuda_mb = None
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.cuda_mb = (torch.cuda.max_memory_allocated() - self.cuda_base) / MB


def training_step(model, opt, batch) -> None:
    model.train()
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(workload, budgets: list[int], device: str) -> list[dict]:
    model = copy.deepcopy(workload.model).to(device)
    batch = Collate(workload.tokenizer, workload.max_length)(workload.train.rows()[: workload.batch_size])
    batch = {k: v.to(device) for k, v in batch.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=workload.lr)
    training_step(model, opt, batch)  # warm-up: the optimizer state exists from here on
    with PeakExtra() as train:
        training_step(model, opt, batch)
    rows = []
    for budget in budgets:
        engine = AttributionEngine(model, workload.tokenizer, tokens_per_chunk=budget)
        engine.prepare(workload.probes)
        started = time.perf_counter()
        with PeakExtra() as check:
            records = engine.attribute(workload.probes)
        rows.append({
            "model": workload.name, "params": sum(p.numel() for p in model.parameters()) / 1e6, "budget": budget,
            "probes": len(records), "steps": sum(r.n_steps for r in records) / len(records),
            "train_mb": train.rss_mb, "check_mb": check.rss_mb, "ratio": check.rss_mb / train.rss_mb if train.rss_mb >= 1 else None,
            "train_cuda": train.cuda_mb, "check_cuda": check.cuda_mb, "check_s": time.perf_counter() - started,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--budgets", type=int, nargs="+", default=[8192, 2048])
    parser.add_argument("--models", nargs="+", default=["tiny", "minilm"], choices=["tiny", "minilm"])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            workload = (tiny_workload(64, 16, args.probes, 0, Path(folder)) if name == "tiny"
                        else reference_workload(64, 16, args.probes, 0))
            rows += measure(workload, args.budgets, device)
    columns = [("model", "model", "{}"), ("params", "params (M)", "{:.2f}"), ("budget", "tokens_per_chunk", "{}"),
               ("probes", "probes", "{}"), ("steps", "mean points a probe", "{:.1f}"),
               ("train_mb", "training step, extra RSS (MB)", "{:.1f}"), ("check_mb", "check, extra RSS (MB)", "{:.1f}"),
               ("ratio", "check / step", "{:.2f}"), ("check_s", "check (s)", "{:.1f}")]
    if device == "cuda":
        columns += [("train_cuda", "step, extra CUDA (MB)", "{:.1f}"), ("check_cuda", "check, extra CUDA (MB)", "{:.1f}")]
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
