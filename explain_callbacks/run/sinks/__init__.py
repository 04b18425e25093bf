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
    "framework_sink",
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


def framework_sink(*, writer: Any = None, log_dir: Any = None, run: Any = None, step_key: str | None = None) -> Sink:
    """The sink for a logger a training framework already holds, the one way every integration
    wires one: a TensorBoard ``writer`` (or a ``log_dir`` to open one in) gives a
    ``TensorBoardSink``, a W&B ``run`` (with the framework's ``step_key``) a ``WandbSink``."""
    if (writer is not None or log_dir is not None) == (run is not None):
        raise ValueError("framework_sink: give a TensorBoard writer or log_dir, or a W&B run (one of them).")
    if run is not None:
        from explain_callbacks.run.sinks.wandb import WandbSink

        return WandbSink(run=run, step_key=step_key)
    from explain_callbacks.run.sinks.tensorboard import TensorBoardSink

    return TensorBoardSink(writer=writer, log_dir=log_dir)


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
