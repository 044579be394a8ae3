"""EventStrip: the last few control-plane events, newest last, one line each."""

from __future__ import annotations

from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from console.core.models import Event
from console.core.text import printable
from console.widgets.formatting import clock

OUTCOME_STYLE: dict[str, str] = {
    "ok": "$status-ok",
    "started": "$text-muted",
    "failed": "bold $status-down",
    "refused": "bold $status-degraded",
    "conflict": "bold $status-degraded",
    "held": "bold $status-degraded",
}
EVIDENCE_KINDS = frozenset({"failover", "failback", "failover_held"})
"""Events whose details are the agent's evidence (per-host probe results)."""


def evidence_text(event: Event) -> str:
    """``green/green: 2 failures: HTTP 500 (want 200); blue: healthy 1/1 hosts up``."""
    return "; ".join(
        f"{printable(k)}: {printable(v)}" for k, v in event.details.items() if k != "code"
    )


def event_line(event: Event, *, narrow: bool = False) -> Content:
    """``12:03:04  switch    alice@jump  switch blue -> green (epoch 7) verified  ok``.

    ``narrow`` shortens the actor column so the summary keeps its room.
    """
    # Every field is someone else's text: escaped, so a newline cannot forge a line.
    actor = printable(event.actor)
    width = 12 if narrow else 22
    if len(actor) > width:
        actor = actor[: width - 1] + "…"
    outcome = printable(event.outcome)
    parts: list[str | tuple[str, str]] = [
        (clock(event.at), "$text-muted"),
        "  ",
        (f"{printable(event.kind):<9}", "bold"),
        (f"{actor:<{width}} ", "$text-muted"),
        printable(event.summary),
        (f"  {outcome}", OUTCOME_STYLE.get(event.outcome, "bold")),
    ]
    if event.reason:
        parts.append((f'  "{printable(event.reason)}"', "italic $text-muted"))
    return Content.assemble(*parts)


def event_lines(event: Event, *, narrow: bool = False) -> list[Content]:
    """The event's line, plus an evidence line for failovers (what the agent saw)."""
    lines = [event_line(event, narrow=narrow)]
    if event.kind in EVIDENCE_KINDS and event.details:
        lines.append(
            Content.assemble(("          evidence: ", "$text-muted"), evidence_text(event))
        )
    return lines


class EventStrip(Widget):
    """The newest ``size`` events; the screen sets ``events`` (oldest first).

    Each event is one line cut at the edge (Enter on it in the events screen, e, shows
    it whole), so a long event never wraps and pushes the newest out of view; when the
    strip is shorter than its events, the newest are the ones shown.
    """

    DEFAULT_CSS = """
    EventStrip {
        height: auto;
        min-height: 3;
        border-top: solid $panel-lighten-2;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    """

    events: reactive[tuple[Event, ...]] = reactive((), layout=True)
    """Recent events, oldest first (layout: the strip grows with them)."""

    def __init__(self, size: int = 8, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.count = size
        self.border_title = "recent events (e: all)"

    def _lines(self, width: int) -> list[Content]:
        narrow = width < 100
        return [line for e in self.events[-self.count :] for line in event_lines(e, narrow=narrow)]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self._lines(width)))

    def render(self) -> Content:
        width = max(self.size.width, 1)
        lines = self._lines(width)
        if not lines:
            return Content.styled("no events yet", "$text-muted")
        room = max(self.size.height, 1)
        return Content("\n").join(line.truncate(width, ellipsis=True) for line in lines[-room:])
