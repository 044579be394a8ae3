"""FlagsScreen: every flag in both colours; enter/space toggles the selected cell."""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

from console.core.errors import ConsoleError
from console.core.flags import FlagTable
from console.core.models import Colour
from console.core.services import Services
from console.core.text import printable
from console.screens.confirm import ConfirmScreen
from console.widgets.flag_grid import FlagGrid
from console.widgets.key_footer import KeyFooter

REFRESH_SECONDS = 2.0
TITLE = (
    "Feature flags: each colour reads its own Redis.  enter/space toggles the selected "
    "cell; the live colour asks first."
)
READING = "  (reading…)"
"""Added to the title from showing the screen again until its flags are read again."""


class FlagsScreen(Screen[None]):
    """The flags table, re-read every few seconds and after every toggle."""

    DEFAULT_CSS = """
    FlagsScreen .screen-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    FlagsScreen .flag-errors { height: auto; padding: 0 1; color: $status-degraded; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.back", "Back"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, services: Services, *, refresh_seconds: float = REFRESH_SECONDS) -> None:
        super().__init__()
        self.services = services
        self.refresh_seconds = refresh_seconds
        self._due = asyncio.Event()

    def compose(self) -> ComposeResult:
        yield Static(TITLE, classes="screen-title")
        yield FlagGrid()
        yield Static("", classes="flag-errors")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(FlagGrid).focus()

    def on_screen_resume(self) -> None:
        # Shown (again: the app keeps this screen): read now, then every few seconds.
        if self.query_one(FlagGrid).table is not None:
            self.query_one(".screen-title", Static).update(TITLE + READING)
        self.poll_flags()

    def on_screen_suspend(self) -> None:
        # Hidden or covered: no reads until shown again (a toggle under way goes on).
        self.workers.cancel_group(self, "flags")

    def show(self, table: FlagTable, live: Colour | None) -> None:
        """Put a flag table (and the live colour) on screen."""
        self.query_one(".screen-title", Static).update(TITLE)
        self.query_one(FlagGrid).show(table, live)
        # Redis errors quote the server's text: escaped, one line per colour.
        errors = [
            f"{colour}: {printable(error)} (shown as unknown)"
            for colour, error in table.errors.items()
        ]
        if live is None:
            errors.append("live colour unknown: both colours count as live (toggles ask first)")
        self.query_one(".flag-errors", Static).update(Content("\n".join(errors)))

    @work(exclusive=True, group="flags", exit_on_error=False)
    async def poll_flags(self) -> None:
        """Re-read the flags (and the live colour) every few seconds or when asked."""
        while True:
            try:
                table, live = await asyncio.gather(self.services.flag_table(), self.services.live())
                self.show(table, live)
            except ConsoleError as e:
                self.notify(str(e), severity="error")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_seconds):
                    await self._due.wait()
            self._due.clear()

    def action_refresh(self) -> None:
        """Read the flags now."""
        self._due.set()

    def on_flag_grid_toggle_requested(self, message: FlagGrid.ToggleRequested) -> None:
        self.toggle_flag(message.row.name, message.row.declared, message.colour)

    @work(exclusive=True, group="toggle", exit_on_error=False)
    async def toggle_flag(self, name: str, declared: bool, colour: Colour) -> None:
        """Confirm when ``colour`` is (or may be) live, then toggle and record it."""
        if not declared:
            self.notify(
                f"{name} is not declared in the config; declare [flags.{name}] to change it "
                "from here.",
                severity="warning",
            )
            return
        live = await self.services.live()
        if live is None or colour is live:
            why = "is LIVE" if live is not None else "may be live (live colour unknown)"
            if not await self.app.push_screen_wait(
                ConfirmScreen(
                    Content(f"Toggle flag {name!r} on {colour.value.upper()}?"),
                    Content(f"{colour} {why}: users see the change at once."),
                    yes_label="Toggle",
                )
            ):
                return
        try:
            change = await self.services.toggle_flag(name, colour, reason="from the console")
        except ConsoleError as e:
            self.notify(str(e), severity="error", title="flag not changed")
            return
        self.notify(f"{colour}: {name} {change.before} → {change.after}")
        if change.warning:
            self.notify(change.warning, severity="warning")
        self._due.set()
