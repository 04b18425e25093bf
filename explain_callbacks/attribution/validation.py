"""Checks of option values that several classes share, with one wording for each error."""

from __future__ import annotations

from collections.abc import Mapping
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


def versioned_state(state: Any, version: int, owner: str) -> Mapping[str, Any]:
    """``state`` when it is what ``<owner>.state_dict()`` returns (a mapping with ``version``)
    or an empty mapping (nothing recorded yet); else ``ValueError`` naming ``owner``."""
    if isinstance(state, Mapping) and (not state or state.get("version") == version):
        return state
    article = "an" if owner[:1] in "AEIOU" else "a"
    raise ValueError(
        f"{owner}.load_state_dict: not {article} {owner} state (expected a mapping with version {version}, "
        f"as {owner}.state_dict() returns)."
    )
