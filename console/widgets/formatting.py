"""Small text helpers the widgets share: ages, clock times, colour and verdict markup."""

from __future__ import annotations

import datetime

from textual.content import Content

from console.core.models import Colour, Verdict

VERDICT_VARIABLE: dict[Verdict, str] = {
    Verdict.HEALTHY: "$status-ok",
    Verdict.DEGRADED: "$status-degraded",
    Verdict.DOWN: "$status-down",
    Verdict.UNKNOWN: "$text-muted",
}


def ago(at: float, now: float) -> str:
    """How long before ``now`` a wall-clock time was, compactly (``3.2s``, ``5m``, ``2h``)."""
    seconds = max(0.0, now - at)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def clock(at: float) -> str:
    """A wall-clock time as local ``HH:MM:SS``."""
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def stamp(at: float) -> str:
    """A wall-clock time as local ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def colour_name(colour: Colour | None) -> Content:
    """``BLUE`` / ``GREEN`` in the environment's colour (``-`` for none)."""
    if colour is None:
        return Content("-")
    return Content.styled(colour.value.upper(), f"bold $env-{colour.value}")


def verdict_text(verdict: Verdict) -> Content:
    """A verdict word in its status colour."""
    return Content.styled(verdict.value, f"bold {VERDICT_VARIABLE[verdict]}")
