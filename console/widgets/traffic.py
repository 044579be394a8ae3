"""Traffic rates per colour from the builtin proxy's counters (in the agent's heartbeat)."""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.content import Content

from console.core.models import Colour
from console.core.status import StatusReport

BARS = "▁▂▃▄▅▆▇█"
POINTS = 60
"""Rates kept per colour (one per heartbeat that moved)."""


@dataclass(slots=True)
class TrafficRates:
    """Requests/s and errors/s per colour, from the difference between two heartbeats."""

    requests: dict[Colour, list[float]] = field(default_factory=dict)
    errors: dict[Colour, list[float]] = field(default_factory=dict)
    _last: tuple[float, dict[str, int]] | None = None

    def observe(self, report: StatusReport) -> bool:
        """Take the leader agent's counters; True when new rates were added."""
        leader = next((a for a in report.agents if a.leader and a.proxy), None)
        if leader is None:
            return False
        last, self._last = self._last, (leader.at, dict(leader.proxy))
        if last is None or leader.at <= last[0]:
            return False
        seconds = leader.at - last[0]
        for colour in Colour:
            for kind, series in (("requests", self.requests), ("errors", self.errors)):
                key = f"{kind}.{colour.value}"
                # A restarted agent starts its counters again from 0: no negative rate.
                delta = max(0, leader.proxy.get(key, 0) - last[1].get(key, 0))
                values = series.setdefault(colour, [])
                values.append(delta / seconds)
                del values[:-POINTS]
        return True


def spark(values: list[float], width: int) -> str:
    """``▁▂▅█▃`` of the newest ``width`` values, scaled to their own maximum."""
    shown = values[-width:]
    top = max(shown, default=0.0)
    if top <= 0:
        return BARS[0] * len(shown)
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] for v in shown)


def traffic_line(rates: TrafficRates | None, colour: Colour) -> Content:
    """``traffic 4.2 req/s · 0.0 err/s ▂▃▅▃▂`` for one colour's panel."""
    requests = rates.requests.get(colour) if rates else None
    if not requests:
        return Content.styled("traffic: no proxy counters (builtin router only)", "$text-muted")
    errors = (rates.errors.get(colour) if rates else None) or [0.0]
    now, failing = requests[-1], errors[-1]
    # The sparkline last: on a narrow panel it is what the ellipsis takes.
    return Content.assemble(
        ("traffic ", "$text-muted"),
        (f"{now:.1f} req/s", "bold" if now > 0 else "$text-muted"),
        (" · ", "$text-muted"),
        (f"{failing:.1f} err/s ", "bold $status-down" if failing > 0 else "$text-muted"),
        (spark(requests, 12), f"$env-{colour.value}"),
    )
