"""Running out of memory inside a check: recognise it, and give back what the check held.

A check must not end a training run. The engine's chunk loop (``AttributionEngine``) catches an
out-of-memory error, frees what the failed chunk allocated, halves its token budget and runs the
chunks not yet done again, down to one probe a chunk; past that the check fails with
``CheckOutOfMemory``, which the monitor records as a failed check while training goes on.
"""

from __future__ import annotations

import gc

import torch


class CheckOutOfMemory(RuntimeError):
    """The check ran out of memory even with one probe (one path point) a chunk."""


def is_out_of_memory(err: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (CUDA, and MPS where torch raises it), or a ``RuntimeError``
    whose message says the allocator ran out (MPS, CPU's ``DefaultCPUAllocator``, older torch)."""
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    """Collect what the failed chunk left (its tensors die with the exception's frames) and hand
    cached accelerator blocks back, so the retry starts from the training step's footprint."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()
