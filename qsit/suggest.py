"""Helpful errors for unknown names: say what exists and suggest the close matches."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """" Did you mean x?" for close matches, else " Known: a, b, c." — to append to a message."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3)
    return f" Did you mean {', '.join(close)}?" if close else f" Known: {', '.join(known)}."
