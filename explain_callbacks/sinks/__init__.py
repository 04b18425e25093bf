"""The sinks at their old path, ``explain_callbacks.sinks``; they live in
:mod:`explain_callbacks.run.sinks` (``TensorBoardSink`` and ``WandbSink`` still load on first use)."""

from __future__ import annotations

from typing import Any

from explain_callbacks.run import sinks as _sinks
from explain_callbacks.run.sinks import (  # noqa: F401  (re-exported at the old path)
    ProbeSetChangedError,
    ResumeWithoutStateError,
    RunDirectoryExistsError,
    RunDirectoryInUseError,
    RunDirectorySink,
    RunInfo,
    Sink,
    write_json_atomic,
)

__all__ = _sinks.__all__


def __getattr__(name: str) -> Any:
    return getattr(_sinks, name)
