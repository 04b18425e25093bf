"""Checks of option values that several classes share, with one wording for each error."""

from __future__ import annotations

from typing import Any


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` is an ``int`` in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any, name: str, owner: str | None = None, *, minimum: int = 1, optional: bool = False) -> Any:
    """``value`` when it is an int (not a bool) ``>= minimum`` (or ``None`` with ``optional``);
    else ``ValueError``: ``"<owner>: <name> must be ... , got <value>."``"""
    if (optional and value is None) or (is_int(value) and value >= minimum):
        return value
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    prefix = f"{owner}: " if owner else ""
    raise ValueError(f"{prefix}{name} must be {what}{' or None' if optional else ''}, got {value!r}.")
