"""LogsScreen: the hosts' logs of a colour (or both), followed over SSH."""

from __future__ import annotations

import asyncio
import re
import time
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Input, Log, Static

from console.core.errors import ConsoleError
from console.core.health import PROBE_MARK
from console.core.logs import LogLine
from console.core.models import Colour
from console.core.services import Services
from console.widgets.key_footer import KeyFooter
from console.widgets.log_pane import LogPane

BOTH: tuple[Colour, ...] = (Colour.BLUE, Colour.GREEN)
FLUSH_SECONDS = 0.05
BATCH = 2000
"""Lines written to the pane at most every FLUSH_SECONDS, or at once when this many wait."""


class LogsScreen(Screen[None]):
    """One multiplexed pane; ``b``/``g``/``m`` pick blue, green or both. Leaving stops SSH."""

    DEFAULT_CSS = """
    LogsScreen .screen-title { height: 1; padding: 0 1; background: $panel; }
    LogsScreen #log-filter { display: none; height: 1; border: none; padding: 0 1; }
    LogsScreen #log-filter.-shown { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "show('blue')", "Blue"),
        Binding("g", "show('green')", "Green"),
        Binding("m", "show('both')", "Both"),
        Binding("p", "toggle_probes", "Probes"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_or_back", "Back"),
        Binding("q", "app.back", "Back"),
    ]

    def __init__(self, services: Services, colours: tuple[Colour, ...] = BOTH) -> None:
        super().__init__()
        self.services = services
        self.colours = colours
        self.hide_probes = True
        """Hide health-probe requests (the agent's and consoles' probes flood access logs)."""
        self.hidden = 0
        """Probe lines hidden since the stream started."""
        self._batch: list[LogLine] = []
        paths = {h.health_path for c in Colour for h in services.config.env(c).hosts}
        self._probe = re.compile(
            "|".join([re.escape(PROBE_MARK), *(rf'"(GET|HEAD) {re.escape(p)}[ ?"]' for p in paths)])
        )

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title")
        yield Input(placeholder="show lines holding… (Escape clears)", id="log-filter")
        yield LogPane(self.services.config.console.log_lines)
        yield KeyFooter()

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.query_one(LogPane).write_many(batch)

    def on_mount(self) -> None:
        self.set_interval(FLUSH_SECONDS, self._flush)
        self.query_one(LogPane).query_one("Log").focus()
        self.follow_logs(self.colours)

    def action_filter(self) -> None:
        """Show only the lines holding some text (marked in them); Escape clears."""
        box = self.query_one("#log-filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(LogPane).set_filter(event.value.strip())

    @on(Input.Submitted, "#log-filter")
    def _filter_done(self) -> None:
        self.query_one(LogPane).query_one(Log).focus()

    def action_clear_or_back(self) -> None:
        """Clear the filter if one is set, else back to the dashboard."""
        box = self.query_one("#log-filter", Input)
        pane = self.query_one(LogPane)
        if pane.filter or box.has_focus:
            box.value = ""
            box.remove_class("-shown")
            pane.set_filter("")
            pane.query_one(Log).focus()
        else:
            self.app.pop_screen()

    def action_toggle_probes(self) -> None:
        """Show or hide health-probe lines (hidden at first); applies to new lines."""
        self.hide_probes = not self.hide_probes
        self.query_one(".screen-title", Static).update(self._title())

    def is_probe(self, text: str) -> bool:
        """Whether a log line is a health probe's request."""
        return self._probe.search(text) is not None

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
        probes = f"probes hidden ({self.hidden}), p shows" if self.hide_probes else "probes shown"
        parts.append((f"   {probes} · b blue · g green · m both · t tail", "$text-muted"))
        return Content.assemble(*parts)

    @work(exclusive=True, group="logs", exit_on_error=False)
    async def follow_logs(self, colours: tuple[Colour, ...]) -> None:
        """Stream the logs; exclusive, so picking a colour cancels (and closes) the old one."""
        self.colours = colours
        self.query_one(".screen-title", Static).update(self._title())
        pane = self.query_one(LogPane)
        self._batch = []  # the old stream's unwritten lines
        pane.clear()
        try:
            stream = self.services.logs(colours)
        except ConsoleError as e:
            self._marker(pane, colours[0], str(e))
            return
        try:
            async for line in stream:
                if self.hide_probes and not line.marker and self.is_probe(line.text):
                    self.hidden += 1
                    if self.hidden % 50 == 1:
                        self.query_one(".screen-title", Static).update(self._title())
                    continue
                # Batched: one view update per FLUSH_SECONDS (the timer) or BATCH lines,
                # not one per line, so 20k lines/s leave the keys responsive.
                self._batch.append(line)
                if len(self._batch) >= BATCH:
                    self._flush()
                    await asyncio.sleep(0)
        except ConsoleError as e:
            self._flush()
            self._marker(pane, colours[0], str(e))
        finally:
            # Closing the generator cancels every remote command: the SSH channels close.
            await stream.aclose()

    @staticmethod
    def _marker(pane: LogPane, colour: Colour, text: str) -> None:
        pane.write(LogLine(colour, "console", "logs", text, time.time(), marker=True))
