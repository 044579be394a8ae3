"""LogsScreen: the hosts' logs of a colour (or both), followed over SSH."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

from console.core.errors import ConsoleError
from console.core.logs import LogLine
from console.core.models import Colour
from console.core.services import Services
from console.widgets.key_footer import KeyFooter
from console.widgets.log_pane import LogPane

BOTH: tuple[Colour, ...] = (Colour.BLUE, Colour.GREEN)


class LogsScreen(Screen[None]):
    """One multiplexed pane; ``b``/``g``/``m`` pick blue, green or both. Leaving stops SSH."""

    DEFAULT_CSS = """
    LogsScreen .screen-title { height: 1; padding: 0 1; background: $panel; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "show('blue')", "Blue"),
        Binding("g", "show('green')", "Green"),
        Binding("m", "show('both')", "Both"),
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.back", "Back"),
    ]

    def __init__(self, services: Services, colours: tuple[Colour, ...] = BOTH) -> None:
        super().__init__()
        self.services = services
        self.colours = colours

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title")
        yield LogPane(self.services.config.console.log_lines)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(LogPane).query_one("Log").focus()
        self.follow_logs(self.colours)

    def action_show(self, which: str) -> None:
        """Follow another colour (or both); the old streams are closed first."""
        colours = BOTH if which == "both" else (Colour(which),)
        if colours != self.colours:
            self.follow_logs(colours)

    def _title(self) -> Content:
        parts: list[str | tuple[str, str]] = [("logs of ", "bold")]
        for i, colour in enumerate(self.colours):
            if i:
                parts.append(" + ")
            parts.append((colour.value.upper(), f"bold $env-{colour.value}"))
        parts.append(("   b blue · g green · m both · scroll up pauses, t resumes", "$text-muted"))
        return Content.assemble(*parts)

    @work(exclusive=True, group="logs", exit_on_error=False)
    async def follow_logs(self, colours: tuple[Colour, ...]) -> None:
        """Stream the logs; exclusive, so picking a colour cancels (and closes) the old one."""
        self.colours = colours
        self.query_one(".screen-title", Static).update(self._title())
        pane = self.query_one(LogPane)
        pane.clear()
        try:
            stream = self.services.logs(colours)
        except ConsoleError as e:
            self._marker(pane, colours[0], str(e))
            return
        try:
            async for line in stream:
                pane.write(line)
        except ConsoleError as e:
            self._marker(pane, colours[0], str(e))
        finally:
            # Closing the generator cancels every remote command: the SSH channels close.
            await stream.aclose()

    @staticmethod
    def _marker(pane: LogPane, colour: Colour, text: str) -> None:
        pane.write(LogLine(colour, "console", "logs", text, time.time(), marker=True))
