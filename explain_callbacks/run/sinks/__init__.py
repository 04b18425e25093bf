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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
