"""EventStrip: the last few control-plane events, newest last, one line each."""

from __future__ import annotations

from textual.content import Content
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
}


def event_line(event: Event) -> Content:
    """``12:03:04  switch    alice@jump  switch blue -> green (epoch 7) verified  ok``."""
    # Every field is someone else's text: escaped, so a newline cannot forge a line.
    parts: list[str | tuple[str, str]] = [
        (clock(event.at), "$text-muted"),
        "  ",
        (f"{printable(event.kind):<9}", "bold"),
        (f"{printable(event.actor):<22} ", "$text-muted"),
        printable(event.summary),
    ]
    if event.reason:
        parts.append((f'  "{printable(event.reason)}"', "italic $text-muted"))
    outcome = printable(event.outcome)
    parts.append((f"  {outcome}", OUTCOME_STYLE.get(event.outcome, "bold")))
    return Content.assemble(*parts)


class EventStrip(Widget):
    """The newest ``size`` events; the screen sets ``events`` (oldest first)."""

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

    def render(self) -> Content:
        shown = self.events[-self.count :]
        if not shown:
            return Content.styled("no events yet", "$text-muted")
        return Content("\n").join(event_line(e) for e in shown)
