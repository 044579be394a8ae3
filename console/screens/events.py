"""EventsScreen: the full audit trail, newest at the bottom, following live, with details."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, Static

from console.core.errors import ConsoleError
from console.core.models import Event
from console.core.services import Services
from console.core.text import printable
from console.widgets.event_strip import EVIDENCE_KINDS, OUTCOME_STYLE
from console.widgets.formatting import clock, stamp
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
"""Labels and widths at 120 columns; :func:`column_widths` fits them to the screen."""


def column_widths(width: int, events: Iterable[Event] = ()) -> dict[str, int]:
    """Widths of the columns for a table ``width`` cells wide (each cell has 2 of padding).

    TIME shrinks to HH:MM:SS and ACTOR to 12 below 120 columns; SUMMARY and REASON share
    what is left (SUMMARY at most 3/5, less when the summaries are shorter), so OUTCOME
    and REASON are always there (cut with an ellipsis; the pane below shows it whole).
    """
    narrow = width < 120
    fixed = {"TIME": 8 if narrow else 19, "KIND": 8, "ACTOR": 12 if narrow else 16, "OUTCOME": 8}
    rest = max(width - sum(fixed.values()) - 2 * len(COLUMNS) - 2, 20)
    longest = max((len(printable(e.summary)) for e in events), default=rest)
    summary = max(min(rest * 3 // 5, longest), min(20, rest // 2))
    return {**fixed, "SUMMARY": summary, "REASON": rest - summary}


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def event_cells(event: Event, widths: dict[str, int] | None = None) -> list[Content]:
    """The row of one event: time, kind, actor, summary, reason, outcome.

    Content, not markup, and every field escaped: the text is someone else's. With
    ``widths``, long fields end in an ellipsis rather than being cut silently.
    """
    w = widths or dict(COLUMNS)
    when = stamp(event.at) if w["TIME"] >= 19 else clock(event.at)
    return [
        Content.styled(when, "$text-muted"),
        Content.styled(_cut(printable(event.kind), w["KIND"]), "bold"),
        Content(_cut(printable(event.actor), w["ACTOR"])),
        Content(_cut(printable(event.summary), w["SUMMARY"])),
        Content.styled(_cut(printable(event.reason), w["REASON"]), "italic"),
        Content.styled(
            _cut(printable(event.outcome), w["OUTCOME"]), OUTCOME_STYLE.get(event.outcome, "bold")
        ),
    ]


def event_detail(event: Event) -> Content:
    """Every field of an event, whole: actor, time, before → after, reason, outcome, and
    its details (for a failover, the agent's evidence: each host's probe results)."""
    label = "$text-muted"
    lines = [
        Content.assemble(
            (printable(event.kind), "bold"),
            (f"  {stamp(event.at)}  by ", label),
            printable(event.actor),
            (f"  (id {printable(event.id)})", label),
        ),
        Content.assemble(("summary  ", label), printable(event.summary)),
    ]
    if event.before or event.after:
        change = f"{printable(event.before) or '-'} → {printable(event.after) or '-'}"
        lines.append(Content.assemble(("change   ", label), change))
    lines.append(Content.assemble(("reason   ", label), printable(event.reason) or "-"))
    lines.append(
        Content.assemble(
            ("outcome  ", label),
            (printable(event.outcome), OUTCOME_STYLE.get(event.outcome, "bold")),
        )
    )
    if event.details:
        title = "evidence" if event.kind in EVIDENCE_KINDS else "details"
        lines.append(Content.styled(title, "bold"))
        for key, value in event.details.items():
            lines.append(Content.assemble((f"  {printable(key)}: ", "bold"), printable(value)))
    return Content("\n").join(lines)


class EventDetailScreen(ModalScreen[None]):
    """One event in full, scrollable; Escape, Enter or q closes."""

    DEFAULT_CSS = """
    EventDetailScreen { align: center middle; }
    EventDetailScreen > VerticalScroll {
        width: 100%; max-width: 110; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "event (Escape closes)"
            yield Static(event_detail(self.event))

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        """Back to the audit trail."""
        self.dismiss(None)


class EventsScreen(Screen[None]):
    """Every recorded switch, failover, flag change, deploy, migration, lock, arm/disarm.

    The highlighted event is shown whole in the pane below the table (reason, outcome,
    the failover evidence); Enter opens it on its own.
    """

    DEFAULT_CSS = """
    EventsScreen .screen-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    EventsScreen DataTable { height: 1fr; }
    EventsScreen #filter { display: none; height: 1; border: none; padding: 0 1; }
    EventsScreen #filter.-shown { display: block; }
    EventsScreen #event-detail {
        height: auto; max-height: 40%; border-top: solid $panel-lighten-2; padding: 0 1;
    }
    EventsScreen.-short #event-detail { max-height: 50%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_or_back", "Back"),
        Binding("q", "app.back", "Back"),
        Binding("enter", "open_event", "Details"),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("g", "cursor('top')", "Top", show=False),
        Binding("G", "cursor('bottom')", "Bottom", show=False),
        Binding("slash", "filter", "Filter"),
    ]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]  # noqa: RUF012 (Textual's type)

    def __init__(self, services: Services, *, live_updates: bool = True) -> None:
        super().__init__()
        self.services = services
        self.live_updates = live_updates
        self._events: dict[str, Event] = {}
        self._filter = ""
        self._widths: dict[str, int] = {}
        self._last_id: str | None = None
        """The newest event read (None before the history is loaded)."""

    def compose(self) -> ComposeResult:
        yield Static("Audit trail (who did what, when, with what result)", classes="screen-title")
        yield Input(
            placeholder="filter: any text (kind, actor, reason, …); Escape clears", id="filter"
        )
        table: DataTable[Content] = DataTable(cursor_type="row", zebra_stripes=True)
        yield table
        with VerticalScroll(id="event-detail", can_focus=False):
            yield Static("", id="event-detail-text")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def on_screen_resume(self) -> None:
        # Shown (again: the app keeps this screen): what was appended meanwhile is read
        # from where the follow stopped, then followed again.
        self.follow_events(self._last_id if self.live_updates else None)

    def on_screen_suspend(self) -> None:
        # Hidden or covered: stop following until shown again.
        self.workers.cancel_group(self, "events")

    def on_resize(self, event: events.Resize) -> None:
        widths = column_widths(event.size.width, self._events.values())
        if widths != self._widths:
            self._rebuild(widths)

    def _rebuild(self, widths: dict[str, int]) -> None:
        """Lay the table out again for new widths, keeping the highlighted event."""
        self._widths = widths
        table: DataTable[Content] = self.query_one(DataTable)
        row = table.cursor_row
        table.clear(columns=True)
        # Fixed widths: styled cells are not measured for auto-width columns.
        for label, _ in COLUMNS:
            table.add_column(label, key=label.lower(), width=widths[label])
        for event in self._events.values():
            if self._matches(event):
                table.add_row(*self._cells(event), key=event.id)
        if table.row_count:
            table.move_cursor(row=min(max(row, 0), table.row_count - 1))

    def add_events(self, batch: Iterable[Event]) -> None:
        """Add a batch (the history) with one layout, the newest highlighted."""
        count = len(self._events)
        for event in batch:
            self._events.setdefault(event.id, event)
            self._last_id = event.id
        if self._widths and len(self._events) == count:
            return  # read again, nothing new: the table is as it was
        self._rebuild(column_widths(self.size.width or 120, self._events.values()))
        table: DataTable[Content] = self.query_one(DataTable)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def add_event(self, event: Event) -> None:
        """Append one event (ignoring one already shown) and keep the newest in view."""
        if event.id in self._events:
            return
        self._events[event.id] = event
        self._last_id = event.id
        table: DataTable[Content] = self.query_one(DataTable)
        widths = column_widths(self.size.width or 120, self._events.values())
        if widths != self._widths:
            # A longer summary than any before: lay the columns out again.
            self._rebuild(widths)
            table.move_cursor(row=table.row_count - 1)
            return
        if not self._matches(event):
            return
        at_end = table.cursor_row >= table.row_count - 1
        table.add_row(*self._cells(event), key=event.id)
        if at_end:
            table.move_cursor(row=table.row_count - 1)

    def _matches(self, event: Event) -> bool:
        if not self._filter:
            return True
        fields = (event.kind, event.actor, event.summary, event.reason, event.outcome)
        text = " ".join(map(printable, (*fields, *event.details.values())))
        return self._filter.lower() in text.lower()

    def _cells(self, event: Event) -> list[Content]:
        cells = event_cells(event, self._widths)
        if self._filter:
            pattern = re.compile(re.escape(self._filter), re.IGNORECASE)
            cells = [c.highlight_regex(pattern, style="reverse $accent") for c in cells]
        return cells

    def action_filter(self) -> None:
        """Filter the events by any text (matches are highlighted); Escape clears it."""
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._filter = event.value.strip()
        self._rebuild(self._widths or column_widths(self.size.width or 120))

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def action_clear_or_back(self) -> None:
        """Clear the filter if one is set, else back to the dashboard."""
        box = self.query_one("#filter", Input)
        if self._filter or box.has_focus:
            box.value = ""
            box.remove_class("-shown")
            self.query_one(DataTable).focus()
        else:
            self.app.pop_screen()

    def highlighted(self) -> Event | None:
        """The event under the cursor."""
        table: DataTable[Content] = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._events.get(key or "")

    @on(DataTable.RowHighlighted)
    def _show_detail(self) -> None:
        event = self.highlighted()
        text = event_detail(event) if event else Content("")
        self.query_one("#event-detail-text", Static).update(text)

    @on(DataTable.RowSelected)
    def _open_selected(self) -> None:
        self.action_open_event()

    def action_open_event(self) -> None:
        """Open the highlighted event whole: reason, outcome, evidence."""
        event = self.highlighted()
        if event is not None:
            self.app.push_screen(EventDetailScreen(event))

    def action_cursor(self, where: str) -> None:
        """Move the highlight (j/k/g/G as in less and k9s)."""
        table: DataTable[Content] = self.query_one(DataTable)
        if where == "down":
            table.action_cursor_down()
        elif where == "up":
            table.action_cursor_up()
        elif table.row_count:
            table.move_cursor(row=0 if where == "top" else table.row_count - 1)

    @work(exclusive=True, group="events", exit_on_error=False)
    async def follow_events(self, after: str | None = None) -> None:
        """Load the history (or, with ``after``, what came after that event), then follow
        new events; retry when the control plane returns."""
        last_error: str | None = None
        while True:
            try:
                if after is None:
                    events = await self.services.events(limit=HISTORY)
                    self.add_events(events)
                    if not self.live_updates:
                        return
                    after = events[-1].id if events else "$"
                async for event in self.services.follow_events(after=after):
                    after = event.id
                    self.add_event(event)
            except ConsoleError as e:
                # Once per distinct error: a control plane that stays down must not stack
                # a toast every retry.
                message = f"events: {printable(str(e))}"
                if message != last_error:
                    self.notify(message, severity="error", markup=False, timeout=10)
                last_error = message
                await asyncio.sleep(RETRY_SECONDS)
            else:
                last_error = None
