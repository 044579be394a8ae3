"""EventsScreen: the full audit trail, newest at the bottom, following live."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Static

from console.core.errors import ConsoleError
from console.core.models import Event
from console.core.services import Services
from console.core.text import printable
from console.widgets.event_strip import OUTCOME_STYLE
from console.widgets.formatting import stamp
from console.widgets.key_footer import KeyFooter

HISTORY = 500
"""Events loaded when the screen opens."""
RETRY_SECONDS = 2.0
COLUMNS: tuple[tuple[str, int], ...] = (
    ("TIME", 19),
    ("KIND", 8),
    ("ACTOR", 16),
    ("SUMMARY", 40),
    ("REASON", 14),
    ("OUTCOME", 8),
)


def event_cells(event: Event) -> list[Content]:
    """The row of one event: time, kind, actor, summary, reason, outcome.

    Content, not markup, and every field escaped: the text is someone else's.
    """
    return [
        Content.styled(stamp(event.at), "$text-muted"),
        Content.styled(printable(event.kind), "bold"),
        Content(printable(event.actor)),
        Content(printable(event.summary)),
        Content.styled(printable(event.reason), "italic"),
        Content.styled(printable(event.outcome), OUTCOME_STYLE.get(event.outcome, "bold")),
    ]


class EventsScreen(Screen[None]):
    """Every recorded switch, failover, flag change, deploy, migration, lock, arm/disarm."""

    DEFAULT_CSS = """
    EventsScreen .screen-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    EventsScreen DataTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, services: Services, *, live_updates: bool = True) -> None:
        super().__init__()
        self.services = services
        self.live_updates = live_updates

    def compose(self) -> ComposeResult:
        yield Static("Audit trail (who did what, when, with what result)", classes="screen-title")
        table: DataTable[Content] = DataTable(cursor_type="row", zebra_stripes=True)
        yield table
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        # Fixed widths: styled cells are not measured for auto-width columns.
        for label, width in COLUMNS:
            table.add_column(label, key=label.lower(), width=width)
        table.focus()
        self.follow_events()

    def add_event(self, event: Event) -> None:
        """Append one event (ignoring one already shown) and keep the newest in view."""
        table: DataTable[Content] = self.query_one(DataTable)
        if event.id in table.rows:
            return
        at_end = table.cursor_row >= table.row_count - 1
        table.add_row(*event_cells(event), key=event.id)
        if at_end:
            table.move_cursor(row=table.row_count - 1)

    @work(exclusive=True, group="events", exit_on_error=False)
    async def follow_events(self) -> None:
        """Load the history, then follow new events; retry when the control plane returns."""
        while True:
            try:
                events = await self.services.events(limit=HISTORY)
                for event in events:
                    self.add_event(event)
                if not self.live_updates:
                    return
                after = events[-1].id if events else "$"
                async for event in self.services.follow_events(after=after):
                    self.add_event(event)
            except ConsoleError as e:
                self.notify(f"events: {printable(str(e))}", severity="error", markup=False)
                await asyncio.sleep(RETRY_SECONDS)
