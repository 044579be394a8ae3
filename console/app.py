"""ConsoleApp: the Textual app; thin: themes, app-wide keys, service lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.worker import WorkerCancelled, WorkerFailed

from console.commands import OpsCommands
from console.core.services import Services
from console.core.text import printable
from console.demo.tour import SandboxInfo
from console.screens.dashboard import DashboardScreen
from console.screens.events import EventsScreen
from console.screens.flags import FlagsScreen
from console.screens.help import HelpScreen, key_rows
from console.screens.logs import LogsScreen
from console.screens.tour import TourScreen
from console.theming import BUILTIN_THEMES, DOMAIN_VARIABLES, load_theme_files

DashboardFactory = Callable[[Services], Screen[None]]
ScreenT = TypeVar("ScreenT", bound=Screen[None])
KEPT: tuple[type[Screen[None]], ...] = (FlagsScreen, EventsScreen, HelpScreen)
"""Screens made once and pushed again (see ConsoleApp._kept_screen)."""
GC_THRESHOLD = (5000, 10, 100)
"""The collector's thresholds while the console runs (Python's: 700, 10, 10); see on_ready."""
WORKERS_STOP_SECONDS = 2.0
"""How long leaving waits for the workers to stop before closing the clients."""


class ConsoleApp(App[None]):
    """The operator console. Quitting changes nothing in production."""

    TITLE = "bgconsole"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {OpsCommands}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "open_flags", "Flags"),
        Binding("l", "open_logs", "Logs"),
        Binding("e", "open_events", "Events"),
        Binding("t", "open_tour", "Tour"),
        Binding("question_mark", "toggle_help", "Help"),
        Binding("q", "back", "Quit"),
    ]

    def __init__(
        self,
        services: Services,
        *,
        theme_dirs: Iterable[Path] | None = None,
        dashboard: DashboardFactory | None = None,
        close_services: bool = True,
        tour: SandboxInfo | None = None,
        overview: bool = False,
    ) -> None:
        """Args:
        services: the session's clients; closed on unmount unless ``close_services`` is off.
        theme_dirs: where to look for ``*.toml`` themes (default: packaged and repo copies).
        dashboard: builds the default screen (tests pass one with fixed settings).
        close_services: close ``services`` when the app ends (off when the caller owns them).
        tour: the demo sandbox this console runs on (enables the Tour screen, key t).
        overview: opened from the overview of many apps (Escape goes back to it).
        """
        super().__init__()
        self.services = services
        self.theme_dirs = None if theme_dirs is None else tuple(theme_dirs)
        self._dashboard = dashboard or (lambda s: DashboardScreen(s))
        self.close_services = close_services
        self.tour = tour
        self._kept: dict[type[Screen[None]], Screen[None]] = {}
        if overview:
            # Opened from the overview of many apps: Escape on the dashboard goes back.
            self.bind("escape", "back", description="Apps")

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification as plain text, whatever ``markup`` says (screens pass True).

        Messages quote other people's text (a lock holder, a reason, a host's error): as
        markup, ``[/]`` in one crashed the console and ``[console]`` vanished; control
        characters are escaped as everywhere else on the terminal.
        """
        super().notify(
            printable(message, multiline=True),
            title=printable(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # The console's own Quit and Help (OpsCommands) say what they do here: Textual's
        # would list them twice.
        for command in super().get_system_commands(screen):
            if command.title not in ("Quit", "Keys"):
                yield command

    def get_default_screen(self) -> Screen[None]:
        return self._dashboard(self.services)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # Textual's own themes lack the console's domain colours: give them fallbacks.
        return dict(DOMAIN_VARIABLES)

    def on_mount(self) -> None:
        for theme in BUILTIN_THEMES:
            self.register_theme(theme)
        loaded = load_theme_files(self.theme_dirs)
        for theme in loaded.themes:
            self.register_theme(theme)
        for error in loaded.errors:
            self.notify(f"theme not loaded: {error}", severity="warning", timeout=10)
        wanted = self.services.config.console.theme
        if wanted in self.available_themes:
            self.theme = wanted
        else:
            self.theme = "bgconsole-dark"
            self.notify(
                f"theme {wanted!r} not found ([console] theme); using bgconsole-dark",
                severity="warning",
            )

        if self.tour is not None:
            # The footer may be cut on a narrow terminal: the first frame names the key.
            self.notify(
                "Press t for the tour: the config path, the command for a second "
                "terminal, and the steps to try.",
                title="Demo sandbox",
                timeout=30,
            )

    def on_ready(self) -> None:
        # What is alive once the first frame is drawn (Textual, themes, config) lives as
        # long as the app: kept out of the collector's full passes, which are also made
        # rarer. Those passes took 100-600 ms each, every second or two while screens
        # opened and closed: the keys' worst latencies (bench/console_bench.py).
        self._gc_threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)

    async def on_unmount(self) -> None:
        if hasattr(self, "_gc_threshold"):
            gc.set_threshold(*self._gc_threshold)
            gc.unfreeze()
        # Stop every worker before closing the clients: a poll still running after the
        # close reopened a Redis connection nobody would close (a ResourceWarning later).
        workers = list(self.workers)
        self.workers.cancel_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WORKERS_STOP_SECONDS):
                for worker in workers:
                    # A cancelled worker's wait raises WorkerCancelled: that is the point.
                    with contextlib.suppress(WorkerCancelled, WorkerFailed):
                        await worker.wait()
        if self.close_services:
            await self.services.aclose()

    def _push_once(self, kind: type[Screen[None]], make: Callable[[], Screen[None]]) -> None:
        """Show the screen of ``kind``: back to the open one, or a new one.

        One of a kind at a time: l, f, l, f stacked three log screens, each following
        every log over SSH. Screens above the open one are closed on the way back, unless
        one of them runs a deploy or migration (that one must be closed on purpose).
        """
        if isinstance(self.screen, kind):
            return
        stack = self.screen_stack
        found = next((i for i, s in enumerate(stack) if isinstance(s, kind)), None)
        if found is None:
            self.push_screen(self._kept_screen(kind, make))
            return
        busy = [s for s in stack[found + 1 :] if getattr(s, "running", False)]
        if busy:
            self.notify("A deploy or migration is running on this screen: Escape first.")
            return
        while len(self.screen_stack) > found + 1:
            self.pop_screen()

    def _kept_screen(self, kind: type[ScreenT], make: Callable[[], ScreenT]) -> ScreenT:
        """The instance of ``kind`` kept for the app's life (made on first use).

        Flags, events and help are kept, as k9s keeps its views: building one (compose,
        mount, first layout of its table) cost 40-50 ms of CPU on every open, the most of
        the f, e and ? keys' latency. Installed screens are not removed when popped; they
        pause their polling while hidden and read again when shown.
        """
        if kind not in KEPT:
            return make()
        screen = self._kept.get(kind)
        if screen is None:
            screen = self._kept[kind] = make()
            self.install_screen(screen, name=f"kept-{kind.__name__}")
        assert isinstance(screen, kind)
        return screen

    def action_open_flags(self) -> None:
        """Open the flags screen."""
        self._push_once(FlagsScreen, lambda: FlagsScreen(self.services))

    def action_open_logs(self) -> None:
        """Open the logs screen (both colours)."""
        self._push_once(LogsScreen, lambda: LogsScreen(self.services))

    def action_open_events(self) -> None:
        """Open the full audit trail."""
        self._push_once(EventsScreen, lambda: EventsScreen(self.services))

    def action_open_tour(self) -> None:
        """Open the demo sandbox's tour (t again goes back)."""
        if isinstance(self.screen, TourScreen):
            self.pop_screen()
        elif self.tour is not None:
            self.clear_notifications()  # the hint that named this key has done its job
            tour = self.tour
            self._push_once(TourScreen, lambda: TourScreen(tour))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The tour exists only on a demo sandbox; elsewhere the key is hidden.
        return self.tour is not None if action == "open_tour" else True

    def action_open_dashboard(self) -> None:
        """Close every pushed screen, back to the dashboard."""
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_toggle_help(self) -> None:
        """List this screen's keys, each with what it does."""
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        else:
            rows = key_rows(self.screen)
            help_screen = self._kept_screen(HelpScreen, lambda: HelpScreen(rows))
            help_screen.set_rows(rows)
            self.push_screen(help_screen)

    async def action_back(self) -> None:
        """Back to the previous screen; on the dashboard, quit (production is unchanged)."""
        if len(self.screen_stack) <= 1:
            self.exit()
            return
        # A screen with a running deploy or migration asks first (its own close action);
        # a dialog is answered "no"/cancelled, so whoever awaits it gets an answer.
        screen = self.screen
        for name in ("close", "cancel"):
            if hasattr(screen, f"action_{name}"):
                await self.run_action(name, screen)
                return
        if isinstance(screen, ModalScreen):
            screen.dismiss(None)
        else:
            self.pop_screen()

    def action_toggle_theme(self) -> None:
        """Switch between bgconsole-dark and bgconsole-light."""
        self.theme = "bgconsole-light" if self.theme == "bgconsole-dark" else "bgconsole-dark"
