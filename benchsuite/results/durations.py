"""Durations as a reader wants them: seconds, minutes or hours, whichever keeps the number small."""

from __future__ import annotations


def readable_duration(seconds: float) -> str:
    """``12.3 s`` below two minutes, ``4.5 min`` below two hours, else ``2.1 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
