"""Fleets: a colour of tens of hosts said in one line instead of one row per host.

``summarize(env)`` turns an environment's health into a ``FleetSummary`` whose ``line()``
reads ``green: 20 hosts, 19 up, 1 down: app7 (connection refused); version 1.1.0``. The
CLI's ``status`` collapses to it beyond ``COLLAPSE_ABOVE`` hosts; the console can use the
same (it is headless data, no formatting of its own beyond the one line).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from console.core.models import Colour, EnvHealth
from console.core.text import printable

COLLAPSE_ABOVE = 8
"""More hosts than this in a colour: one summary line, not a row per host."""
NAMES_SHOWN = 8
"""Host names listed before ``... (N more)``."""


def name_list(names: Sequence[str], limit: int = NAMES_SHOWN) -> str:
    """``app1, app2, app3`` or, beyond ``limit``, ``app1, ..., app8 and 12 more``."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """One colour's hosts counted: up, down (with each host's cause), versions."""

    colour: Colour
    total: int
    up: int
    down: tuple[tuple[str, str], ...]
    """(host, cause) for every host not up, in config order."""
    versions: tuple[tuple[str, int], ...]
    """(version, hosts reporting it), most common first; hosts without one are left out."""

    @property
    def healthy(self) -> bool:
        return not self.down and self.total > 0

    def causes(self) -> list[tuple[str, tuple[str, ...]]]:
        """(cause, hosts) for the down hosts, hosts sharing a cause grouped, most first."""
        by_cause: dict[str, list[str]] = {}
        for host, cause in self.down:
            by_cause.setdefault(cause, []).append(host)
        return sorted(
            ((cause, tuple(hosts)) for cause, hosts in by_cause.items()),
            key=lambda item: -len(item[1]),
        )

    def line(self) -> str:
        """``green: 20 hosts, 19 up, 1 down: app7 (connection refused); version 1.1.0``.

        Causes and versions are the hosts' text: escaped, so they cannot forge lines.
        """
        text = f"{self.colour}: {self.total} hosts, {self.up} up, {len(self.down)} down"
        if self.down:
            groups = [
                f"{name_list(hosts, 5)} ({printable(cause)})" for cause, hosts in self.causes()
            ]
            shown = groups[:3]
            if len(groups) > len(shown):
                shown.append(f"{len(groups) - len(shown)} more cause(s)")
            text += ": " + "; ".join(shown)
        if len(self.versions) == 1:
            text += f"; version {printable(self.versions[0][0])}"
        elif self.versions:
            mix = ", ".join(f"{printable(v)} ({n})" for v, n in self.versions[:4])
            more = f", {len(self.versions) - 4} more" if len(self.versions) > 4 else ""
            text += f"; versions {mix}{more}"
        return text


def summarize(env: EnvHealth) -> FleetSummary:
    """Count ``env``'s hosts: up after hysteresis, down with the last probe's error."""
    down = tuple(
        (
            h.host,
            (h.last.error if h.last else None) or ("no probe yet" if h.last is None else "down"),
        )
        for h in env.hosts
        if not h.up
    )
    versions = Counter(h.version for h in env.hosts if h.version is not None)
    return FleetSummary(
        env.colour,
        len(env.hosts),
        len(env.hosts) - len(down),
        down,
        tuple(sorted(versions.items(), key=lambda item: (-item[1], item[0]))),
    )


def collapses(env: EnvHealth, limit: int = COLLAPSE_ABOVE) -> bool:
    """Whether ``env`` has too many hosts for a row each (more than ``limit``)."""
    return len(env.hosts) > limit
