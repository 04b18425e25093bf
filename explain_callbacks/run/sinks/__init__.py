"""Sinks: the run directory (default), TensorBoard and Weights & Biases.

``TensorBoardSink`` and ``WandbSink`` load on first use, so importing this package imports
neither tensorboard nor wandb.
"""

from __future__ import annotations

import importlib
from typing import Any

from explain_callbacks.run.sinks.base import RunInfo, Sink
from explain_callbacks.run.sinks.run_dir import (
    ProbeSetChangedError,
    ResumeWithoutStateError,
    RunDirectoryExistsError,
    RunDirectoryInUseError,
    RunDirectorySink,
    write_json_atomic,
)

_LAZY = {"TensorBoardSink": ".tensorboard", "WandbSink": ".wandb"}

__all__ = [
    "same_target",
    "ProbeSetChangedError",
    "ResumeWithoutStateError",
    "RunDirectoryExistsError",
    "RunDirectoryInUseError",
    "RunDirectorySink",
    "RunInfo",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "write_json_atomic",
]


def same_target(a: Any, b: Any) -> bool:
    """Whether two sinks write to one place: the same class and the same ``target`` (a
    TensorBoard writer or log folder, a W&B run), so a logger a user passed and one the
    integration found are not both added. Sinks without a ``target`` are never the same."""
    ta, tb = getattr(a, "target", None), getattr(b, "target", None)
    return type(a) is type(b) and ta is not None and (ta is tb or ta == tb)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
