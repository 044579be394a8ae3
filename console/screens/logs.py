"""LogsScreen: the hosts' logs followed over SSH; pick the colour, one host or all, a log or all."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.containers import Vertical
from textual.content import Content
from textual.events import ScreenResume
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from console.core.errors import ConsoleError
from console.core.health import PROBE_MARK
from console.core.logs import (
    PER_HOST_LINES,
    LogFollower,
    LogLine,
    choose_hosts,
    log_names,
)
from console.core.models import Colour
from console.core.services import LOG_BACKLOG, Services
from console.widgets.key_footer import KeyFooter
from console.widgets.log_pane import LogPane, format_batch, format_log_line

BOTH: tuple[Colour, ...] = (Colour.BLUE, Colour.GREEN)
FLUSH_SECONDS = 0.1
BATCH = 2000
"""Lines written to the pane at most every FLUSH_SECONDS, or at once when this many wait.

Each write redraws the pane; ten a second look live and leave the keys their share."""
ALL = "*"
"""The picker's choice for every host, or every log."""


class PickScreen(ModalScreen[str | None]):
    """A short list to pick one item from: Enter picks, Escape keeps the current choice."""

    DEFAULT_CSS = """
    PickScreen { align: center middle; }
    PickScreen > Vertical {
        width: auto; min-width: 30; max-width: 100%;
        height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    PickScreen .pick-title { text-style: bold; height: 1; width: auto; }
    PickScreen OptionList, PickScreen OptionList:focus {
        width: auto; height: auto; max-height: 20; border: none; padding: 0;
        background: $surface;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: list[tuple[str, str]], current: str) -> None:
        super().__init__()
        self.title_text = title
        self.options = options
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="pick-title")
            yield OptionList(*(Option(label, id=key) for key, label in self.options))

    def on_mount(self) -> None:
        # The app's CSS makes every screen opaque; this one leaves the logs in view.
        background = Color.parse(self.app.get_css_variables().get("background", "black"))
        self.styles.background = background.with_alpha(0.6)
        options = self.query_one(OptionList)
        keys = [key for key, _ in self.options]
        options.highlighted = keys.index(self.current) if self.current in keys else 0
        options.focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        """Close the list, keeping the current choice."""
        self.dismiss(None)


class LogsScreen(Screen[None]):
    """One multiplexed pane of the chosen colour(s), host(s) and log(s). Leaving stops SSH.

    ``c`` (or ``b``/``g``/``m``) picks the colour, ``h`` one host or all, ``o`` one log or
    all; the title line says what is followed.
    """

    DEFAULT_CSS = """
    LogsScreen .screen-title { height: 1; padding: 0 1; background: $panel; }
    LogsScreen #log-filter { display: none; height: 1; border: none; padding: 0 1; }
    LogsScreen #log-filter.-shown { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cycle_colour", "Colour"),
        Binding("b", "show('blue')", "Blue", show=False),
        Binding("g", "show('green')", "Green", show=False),
        Binding("m", "show('both')", "Both", show=False),
        Binding("h", "pick_host", "Host"),
        Binding("o", "pick_log", "Log"),
        Binding("p", "toggle_probes", "Probes"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_or_back", "Back"),
        Binding("q", "app.back", "Back", show=False),
    ]

    def __init__(
        self,
        services: Services,
        colours: tuple[Colour, ...] = BOTH,
        *,
        host: str | None = None,
        log_name: str | None = None,
    ) -> None:
        super().__init__()
        self.services = services
        self.colours = colours
        self.host = host
        """``colour/name`` of the one host followed; None: every host of the colours."""
        self.log_name = log_name
        """The one log followed (its name in the config); None: every log."""
        self.hide_probes = True
        """Hide health-probe requests (the agent's and consoles' probes flood access logs)."""
        self.hidden = 0
        """Probe lines hidden since the stream started."""
        self._waiting: deque[str] = deque(maxlen=services.config.console.log_lines)
        """Formatted lines not yet written to the pane (at most what the pane keeps)."""
        self._waiting_markers = 0
        self.superseded = 0
        """Lines never written: newer ones filled ``_waiting`` while the screen was covered."""
        self._shown_hidden = 0
        self.follower: LogFollower | None = None
        """The streams followed now (None until the first starts, or if none could)."""
        paths = {h.health_path for c in Colour for h in services.config.env(c).hosts}
        self._probe = re.compile(
            "|".join([re.escape(PROBE_MARK), *(rf'"(GET|HEAD) {re.escape(p)}[ ?"]' for p in paths)])
        )

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title")
        yield Input(placeholder="show lines holding… (Escape clears)", id="log-filter")
        yield LogPane(self.services.config.console.log_lines)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.set_interval(FLUSH_SECONDS, self._flush)
        self.query_one(LogPane).log_view.focus()
        self.follow_logs(self.colours)

    def on_screen_resume(self, _event: ScreenResume) -> None:
        # Lines that came while another screen covered this one: shown right after the
        # first frame, so the screen is back at once and its newest lines a frame later.
        self.call_after_refresh(self._flush)

    def _flush(self) -> None:
        """Write the waiting lines, unless another screen covers this one."""
        if self.hidden != self._shown_hidden:
            self._shown_hidden = self.hidden
            self._update_title()
        if not self._waiting or not self.is_active:
            # Covered (the app's screens are opaque, dialogs too): writing would redraw
            # for nobody; ``_waiting`` keeps the newest lines (as many as the pane would),
            # shown when this screen is back on top.
            return
        texts = list(self._waiting)
        self._waiting.clear()
        markers, self._waiting_markers = self._waiting_markers, 0
        self.query_one(LogPane).write_texts(texts, markers)

    # -- the chooser ------------------------------------------------------------------

    def _hosts(self) -> list[tuple[Colour, str]]:
        return [
            (c, h.name) for c, h in choose_hosts(self.services.config.all_hosts(), self.colours)
        ]

    def _logs(self) -> list[str]:
        hosts = choose_hosts(self.services.config.all_hosts(), self.colours, self.host)
        return log_names(hosts)

    def action_cycle_colour(self) -> None:
        """Follow the next colour: blue, green, both."""
        order: list[tuple[Colour, ...]] = [(Colour.BLUE,), (Colour.GREEN,), BOTH]
        at = order.index(self.colours) if self.colours in order else -1
        self._choose(colours=order[(at + 1) % len(order)])

    def action_show(self, which: str) -> None:
        """Follow blue (b), green (g) or both (m); the old streams are closed first."""
        self._choose(colours=BOTH if which == "both" else (Colour(which),))

    def action_pick_host(self) -> None:
        """Pick one host of the colour to follow, or all of them."""
        hosts = self._hosts()
        options = [(ALL, f"all {len(hosts)} hosts")] + [
            (f"{c.value}/{name}", f"{c.value}/{name}") for c, name in hosts
        ]
        colours = " + ".join(c.value for c in self.colours)
        self.app.push_screen(
            PickScreen(f"Host ({colours})", options, self.host or ALL),
            lambda picked: None if picked is None else self._choose(host=picked),
        )

    def action_pick_log(self) -> None:
        """Pick which log to follow (as named in the config), or all of them."""
        names = self._logs()
        options = [(ALL, "all logs")] + [(name, name) for name in names]
        self.app.push_screen(
            PickScreen("Log", options, self.log_name or ALL),
            lambda picked: None if picked is None else self._choose(log=picked),
        )

    def _choose(
        self,
        *,
        colours: tuple[Colour, ...] | None = None,
        host: str | None = None,
        log: str | None = None,
    ) -> None:
        """Apply a choice (ALL: every host or log) and follow anew if it changed anything."""
        old = (self.colours, self.host, self.log_name)
        if colours is not None:
            self.colours = colours
        if host is not None:
            self.host = None if host == ALL else host
        if log is not None:
            self.log_name = None if log == ALL else log
        # A host of another colour, or a log the hosts do not have, no longer applies.
        if self.host is not None and self.host not in {f"{c.value}/{n}" for c, n in self._hosts()}:
            self.host = None
        if self.log_name is not None and self.log_name not in self._logs():
            self.log_name = None
        if (self.colours, self.host, self.log_name) != old:
            self.follow_logs(self.colours)

    # -- filter and probes ------------------------------------------------------------

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
        self.query_one(LogPane).log_view.focus()

    def action_clear_or_back(self) -> None:
        """Clear the filter if one is set, else back to the dashboard."""
        box = self.query_one("#log-filter", Input)
        pane = self.query_one(LogPane)
        if pane.filter or box.has_focus:
            box.value = ""
            box.remove_class("-shown")
            pane.set_filter("")
            pane.log_view.focus()
        else:
            self.app.pop_screen()

    def action_toggle_probes(self) -> None:
        """Show or hide health-probe lines (hidden at first); applies to new lines."""
        self.hide_probes = not self.hide_probes
        self._update_title()

    def is_probe(self, text: str) -> bool:
        """Whether a log line is a health probe's request."""
        return self._probe.search(text) is not None

    # -- title ------------------------------------------------------------------------

    def _update_title(self) -> None:
        self.query_one(".screen-title", Static).update(self._title())

    def _title(self) -> Content:
        parts: list[str | tuple[str, str]] = [("logs ", "bold")]
        # One host: its colour, whatever the colour choice it was picked under.
        colours = (Colour(self.host.split("/", 1)[0]),) if self.host else self.colours
        for i, colour in enumerate(colours):
            if i:
                parts.append("+")
            parts.append((colour.value.upper(), f"bold $env-{colour.value}"))
        host = self.host.split("/", 1)[1] if self.host else "all hosts"
        parts.append(" › ")
        parts.append((host, "bold" if self.host else ""))
        parts.append(" › ")
        parts.append((self.log_name or "all logs", "bold" if self.log_name else ""))
        probes = f"probes hidden ({self.hidden:,}), p shows" if self.hide_probes else "probes shown"
        parts.append((f"   {probes}", "$text-muted"))
        return Content.assemble(*parts)

    # -- following --------------------------------------------------------------------

    def open_stream(self, colours: tuple[Colour, ...]) -> LogFollower:
        """The follower of the chosen hosts and log (raises ConsoleError: none configured).

        Probes are not dropped here: ``p`` shows them, so the screen sorts them out.
        """
        hosts = choose_hosts(self.services.config.all_hosts(), colours, self.host)
        # Per-stream buffers that drop the oldest lines (with a gap marker) rather than
        # pausing the remote commands: with tens of hosts one chatty host must neither
        # stall the others nor grow the console's memory without bound.
        return LogFollower(
            self.services.ssh, hosts, self.log_name, lines=LOG_BACKLOG, follow=True,
            hide_probes=False, per_host_lines=PER_HOST_LINES,
        )  # fmt: skip

    @work(exclusive=True, group="logs", exit_on_error=False)
    async def follow_logs(self, colours: tuple[Colour, ...]) -> None:
        """Stream the logs; exclusive, so a new choice cancels (and closes) the old streams."""
        self.colours = colours
        self._update_title()
        pane = self.query_one(LogPane)
        self._waiting.clear()  # the old stream's unwritten lines
        self._waiting_markers = 0
        pane.clear()
        self.follower = None
        try:
            self.follower = self.open_stream(colours)
            stream = self.follower.batches()
        except ConsoleError as e:
            self._marker(pane, colours[0], str(e))
            return
        waiting = self._waiting
        limit = waiting.maxlen or 0
        since_yield = 0
        try:
            async for batch in stream:
                if batch.marker:
                    waiting.extend(format_batch(batch))
                    self._waiting_markers += len(batch.lines)
                    continue
                lines: tuple[str, ...] | list[str] = batch.lines
                if self.hide_probes:
                    search = self._probe.search
                    lines = [t for t in lines if not search(t)]
                    self.hidden += len(batch.lines) - len(lines)
                # Written by the FLUSH_SECONDS timer: one view update per tick, not one
                # per line, so 20k lines/s leave the keys responsive.
                texts = format_batch(batch, lines)
                self.superseded += max(0, len(waiting) + len(texts) - limit)
                waiting.extend(texts)
                since_yield += len(lines)
                if since_yield >= BATCH:
                    # Batches ready back to back never suspend this loop; let keys in.
                    since_yield = 0
                    self._flush()
                    await asyncio.sleep(0)
        except ConsoleError as e:
            self._flush()
            self._marker(pane, colours[0], str(e))
        finally:
            # Closing the generator cancels every remote command: the SSH channels close.
            await stream.aclose()

    def _marker(self, pane: LogPane, colour: Colour, text: str) -> None:
        line = LogLine(colour, "console", "logs", text, time.time(), marker=True)
        if self.is_active:
            pane.write(line)
        else:
            self._waiting.append(format_log_line(line))
            self._waiting_markers += 1
