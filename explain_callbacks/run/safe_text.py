"""User text made safe to show: no control sequence reaches a terminal, no invisible character
hides in a page.

Probe texts, words and names are user data. ``visible`` replaces every character that could act
instead of being read (C0/C1 controls such as ESC, DEL, the bidirectional overrides and isolates
such as RLO, and zero-width characters) by a visible ``[U+XXXX]``, so the reader sees that it
was there. Tabs and newlines are kept.
"""

from __future__ import annotations

import re

_ACTIVE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 (but tab, newline) and C1 controls: ESC, CSI, BEL, ...
    "\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"  # bidi and zero-width
)


def _codepoint(match: re.Match[str]) -> str:
    return f"[U+{ord(match.group()):04X}]"


def visible(text: str) -> str:
    """``text`` with controls, bidi overrides and zero-width characters shown as ``[U+XXXX]``."""
    return _ACTIVE.sub(_codepoint, text) if _ACTIVE.search(text) else text


def one_line(text: str) -> str:
    """``visible`` text folded to one line (for error messages on stderr)."""
    return " ".join(visible(text).split())


__all__ = ["one_line", "visible"]
