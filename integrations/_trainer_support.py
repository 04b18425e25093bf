"""Reading what a Hugging Face ``Trainer`` holds, for ``integrations.transformers``: the
``report_to`` list, this callback's state in a resumed ``TrainerState``, the Trainer's TensorBoard
writer, and (fallback only) the Trainer up the call stack."""

from __future__ import annotations

import sys
from typing import Any


def report_targets(args: Any) -> list[str]:
    return [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])


def stored_state(state: Any, name: str) -> dict[str, Any]:
    """This callback's attributes in a resumed ``TrainerState`` (the first, if several were saved)."""
    stored = (getattr(state, "stateful_callbacks", None) or {}).get(name) or {}
    if isinstance(stored, list):
        stored = stored[0] if stored else {}
    return dict(stored.get("attributes") or {})


def trainer_on_stack(callback: Any) -> Any:
    """Fallback only (see the module doc): the Trainer whose callback handler is calling
    ``callback`` now, found a few frames up the call stack (no ``gc`` scan)."""
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        handler = getattr(owner, "callback_handler", None)
        if handler is not None and any(cb is callback for cb in getattr(handler, "callbacks", ())):
            return owner
        frame = frame.f_back
    return None


def trainer_tb_writer(trainer: Any) -> Any:
    from transformers.integrations import TensorBoardCallback

    handler = getattr(trainer, "callback_handler", None)
    for cb in getattr(handler, "callbacks", ()):
        if isinstance(cb, TensorBoardCallback) and cb.tb_writer is not None:
            return cb.tb_writer
    return None
