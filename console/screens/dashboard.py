"""DashboardScreen: live colour, both environments side by side, recent events; s/d/m/a/r."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen

from console.core.data_check import check_data
from console.core.errors import ConsoleError
from console.core.flags import FlagTable
from console.core.gates import GateFailed
from console.core.models import Colour, Event
from console.core.services import Services
from console.core.status import StatusReport
from console.core.switching import SwitchResult, TargetUnhealthy
from console.core.text import printable
from console.messages import OperationFinished
from console.screens.confirm import ConfirmScreen
from console.screens.deploy import DeployRequest, DeployScreen
from console.screens.deploy_run import DeployRunScreen
from console.screens.logs import LogsScreen
from console.screens.migrate import MigrateScreen, confirm_target
from console.screens.migrate_run import MigrateRunScreen
from console.screens.status_detail import StatusDetailScreen
from console.widgets.activity_log import ActivityLog
from console.widgets.alarm_banner import AlarmBanner
from console.widgets.env_panel import EnvPanel
from console.widgets.event_strip import EventStrip
from console.widgets.formatting import clock
from console.widgets.go_no_go import go_no_go
from console.widgets.key_footer import KeyFooter
from console.widgets.status_header import StatusHeader
from console.widgets.traffic import TrafficRates

if TYPE_CHECKING:
    from console.core.switching import Progress

RETRY_SECONDS = 2.0
"""Pause before re-subscribing when the control plane went away."""
RECENT_EVENTS = 8


class DashboardScreen(Screen[None]):
    """The default screen; one worker per live source (status, notifications, events, flags)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "switch_traffic", "Switch"),
        Binding("d", "deploy", "Deploy"),
        Binding("m", "migrate", "Migrate"),
        Binding("a", "toggle_armed", "Arm"),
        Binding("i", "details", "Info"),
        Binding("r", "refresh", "Refresh", show=False),
    ]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]  # noqa: RUF012 (Textual's type)
    """Short terminals (80x24) get the compact panels (no blank rows, 1-row sparkline)."""

    report: reactive[StatusReport | None] = reactive(None)
    """The latest status; None until the first one arrives."""
    flags: reactive[FlagTable | None] = reactive(None)
    """Both colours' flags; None until first read."""
    events: reactive[tuple[Event, ...]] = reactive(())
    """The newest events, oldest first."""

    def __init__(
        self,
        services: Services,
        *,
        poll_interval: float | None = None,
        flags_interval: float = 5.0,
        live_updates: bool = True,
    ) -> None:
        """Args:
        services: the session's clients.
        poll_interval: seconds between status rounds (default: [failover] interval, at
            least 1 s); notifications and ``r`` refresh sooner.
        flags_interval: seconds between flag reads (flag notifications refresh sooner).
        live_updates: follow notifications and events (off for fixed-data snapshots).
        """
        super().__init__()
        self.services = services
        config = services.config
        self.poll_interval = poll_interval or max(1.0, config.failover.interval)
        self.flags_interval = flags_interval
        self.live_updates = live_updates
        self._status_due = asyncio.Event()
        self._traffic = TrafficRates()
        self._last_live: tuple[Colour, float] | None = None
        self._flags_due = asyncio.Event()

    def compose(self) -> ComposeResult:
        config = self.services.config
        # A watch-only console says so where every glance lands.
        name = config.console.name + (" · READ-ONLY" if self.services.read_only else "")
        yield StatusHeader(name, config.failover.enabled, config.router.kind).data_bind(
            DashboardScreen.report
        )
        yield AlarmBanner().data_bind(DashboardScreen.report)
        with Horizontal(id="envs"):
            for colour in Colour:
                yield EnvPanel(colour, id=f"env-{colour.value}")
        activity = ActivityLog(id="activity", max_lines=200)
        activity.border_title = "activity"
        activity.can_focus = False
        yield activity
        yield EventStrip(RECENT_EVENTS, id="events").data_bind(DashboardScreen.events)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.say(
            "console open: s switch · d deploy · m migrate · a arm/disarm · f flags · l logs · "
            "e events"
        )
        self.poll_status()
        self.poll_flags()
        self.follow_events()
        if self.live_updates:
            self.watch_notifications()

    # Feeding the panels

    def watch_report(self, report: StatusReport | None) -> None:
        if report is None:
            return
        # With the control plane unreadable, the router's real colour is the live one;
        # failing that, the last one seen (the agent fails static: it keeps routing there).
        live = report.active.colour if report.active else None
        if live is None and report.router is not None:
            live = report.router.live
        if live is not None:
            self._last_live = (live, report.at)
        elif report.control_error and self._last_live is not None:
            live = self._last_live[0]
        self.query_one(StatusHeader).last_live = self._last_live
        moved = self._traffic.observe(report)
        for colour in Colour:
            panel = self.query_one(f"#env-{colour.value}", EnvPanel)
            panel.env = report.health.envs.get(colour)
            panel.live = colour is live
            if moved:
                panel.traffic = self._traffic

    def watch_flags(self, flags: FlagTable | None) -> None:
        for panel in self.query(EnvPanel):
            panel.flags = flags

    @work(exclusive=True, group="status", exit_on_error=False)
    async def poll_status(self) -> None:
        """Gather the status every poll interval, or at once when something changed."""

        async def load() -> None:
            self.report = await self.services.status()

        await self._keep_polling("status", load, self._status_due, self.poll_interval)

    @work(exclusive=True, group="flags", exit_on_error=False)
    async def poll_flags(self) -> None:
        """Read both colours' flags periodically, or at once after a flag notification."""

        async def load() -> None:
            self.flags = await self.services.flag_table()

        await self._keep_polling("flags", load, self._flags_due, self.flags_interval)

    async def _keep_polling(
        self,
        label: str,
        load: Callable[[], Awaitable[None]],
        due: asyncio.Event,
        interval: float,
    ) -> None:
        """Run ``load`` forever; a failure is a line in the activity log, never the end."""
        while True:
            try:
                await load()
            except ConsoleError as e:
                self.say(f"{label}: {e}")
            except Exception as e:  # a bug: report it, keep the dashboard updating
                self.say(f"{label}: internal error: {type(e).__name__}: {e}")
            await self._sleep(due, interval)

    @work(exclusive=True, group="notify", exit_on_error=False)
    async def watch_notifications(self) -> None:
        """React to control-plane pub/sub within milliseconds instead of the next poll."""
        while True:
            try:
                async for note in self.services.notifications():
                    self._status_due.set()
                    if note.kind == "flag":
                        self._flags_due.set()
            except Exception:
                # Whatever broke the subscription, the header shows the control plane's
                # state from the status poll; retry quietly rather than stop listening.
                await asyncio.sleep(RETRY_SECONDS)

    @work(exclusive=True, group="events", exit_on_error=False)
    async def follow_events(self) -> None:
        """Keep the recent-events strip current (initial read, then XREAD follow)."""
        while True:
            try:
                recent = await self.services.events(limit=RECENT_EVENTS)
                self.events = tuple(recent)
                if not self.live_updates:
                    return
                after = recent[-1].id if recent else "$"
                async for event in self.services.follow_events(after=after):
                    self.events = (*self.events, event)[-RECENT_EVENTS:]
                    self._status_due.set()
                    if event.kind == "flag":
                        self._flags_due.set()
            except Exception as e:
                # As for notifications: the status poll shows why; retry after a pause.
                self.log.warning(f"events follow: {type(e).__name__}: {e}")
                await asyncio.sleep(RETRY_SECONDS)

    @staticmethod
    async def _sleep(due: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await due.wait()
        due.clear()

    def say(self, line: str) -> None:
        """Add a time-stamped line to the activity log."""
        now = self.services.clock()
        # Lines quote router output, host errors and other people's names: escaped.
        self.query_one("#activity", ActivityLog).write_line(f"{clock(now)}  {printable(line)}")

    def on_operation_finished(self, message: OperationFinished) -> None:
        self.say(message.summary)
        self.action_refresh()

    def action_details(self) -> None:
        """Everything the header and host rows cut short, in full (live reason, errors)."""
        self.app.push_screen(StatusDetailScreen(self.report, open_logs=self._open_logs))

    def on_env_panel_selected(self, message: EnvPanel.Selected) -> None:
        self.app.push_screen(
            StatusDetailScreen(self.report, message.colour, open_logs=self._open_logs)
        )

    def _open_logs(self, colour: Colour | None) -> None:
        colours = (colour,) if colour is not None else tuple(Colour)
        self.app.push_screen(LogsScreen(self.services, colours))

    # Actions

    def action_refresh(self) -> None:
        """Probe and read everything now."""
        self._status_due.set()
        self._flags_due.set()

    def action_switch_traffic(self) -> None:
        """Switch live traffic to the stand-by colour (after confirmation)."""
        self.switch_traffic()

    def action_toggle_armed(self) -> None:
        """Arm or disarm automatic failover (after confirmation)."""
        self.toggle_armed()

    def action_deploy(self) -> None:
        """Ask what to deploy where, then run it on its own screen."""
        self.deploy()

    def action_migrate(self) -> None:
        """Ask what to migrate where, then run it (or its dry run) on its own screen."""
        self.migrate()

    @work(exclusive=True, group="switch", exit_on_error=False)
    async def switch_traffic(self) -> None:
        """Confirm, then perform the switch with progress lines in the activity log."""
        report = self.report
        if report is None or report.active is None:
            self.notify(
                "The live colour is unknown (control plane unreadable?); cannot switch from "
                "here. Try r, or bgconsole switch COLOUR.",
                severity="error",
            )
            return
        before = report.active.colour
        to = before.other
        question = Content.assemble(
            "Switch live traffic ",
            (before.value.upper(), f"bold $env-{before.value}"),
            " → ",
            (to.value.upper(), f"bold $env-{to.value}"),
            "?",
        )
        details = go_no_go(report, self.flags, to, "checking")
        confirm = ConfirmScreen(question, details, yes_label="Switch")
        # The rows check (a dry run over SSH) fills in while the operator reads the rest;
        # it stops when they answer, so it never holds the migrate lock during the switch.
        checking = self.run_worker(
            self._check_data(confirm, report, before, to), group="go-no-go", exclusive=True
        )
        try:
            answer = await self.app.push_screen_wait(confirm)
        finally:
            checking.cancel()
        if not answer:
            self.say("switch cancelled; nothing changed")
            return
        self.say(f"switch {before} → {to}: started")
        result = await self._switch(to, force=False)
        if result is None:
            return
        self.say(result.summary())
        self.notify(result.summary(), title="switched")
        self.action_refresh()

    async def _check_data(
        self, confirm: ConfirmScreen, report: StatusReport, before: Colour, to: Colour
    ) -> None:
        flags = self.flags
        result = await check_data(self.services.migrate, before, to)
        if confirm.is_attached:
            confirm.update_details(go_no_go(report, flags, to, result))

    async def _switch(
        self, to: Colour, *, force: bool, skip_gates: bool = False
    ) -> SwitchResult | None:
        progress: Progress = self.say
        try:
            return await self.services.switch(
                to,
                force=force,
                reason="from the console",
                on_progress=progress,
                skip_gates=skip_gates,
            )
        except GateFailed as e:
            # The CLI's advice ("bypass with --skip-gates") means the button below, here;
            # skipping is recorded in the switch's event, as from the CLI.
            why = str(e).removesuffix(" (bypass with --skip-gates)")
            self.say(why)
            if skip_gates or not await self.app.push_screen_wait(
                ConfirmScreen(
                    Content(f"A gate refused the switch to {to}. Skip the gates and switch?"),
                    Content(
                        printable(why)
                        + "\n\nThe gate's whole output is in the event (e). Skipping is "
                        "recorded with your name."
                    ),
                    yes_label="Skip gates, switch",
                )
            ):
                self.notify(why, severity="error", title="switch refused by a gate")
                return None
            return await self._switch(to, force=force, skip_gates=True)
        except TargetUnhealthy as e:
            # The CLI's advice ("use --force ...") means the button below, here.
            why = str(e).removesuffix("; use --force to switch anyway")
            self.say(f"switch refused: {why}")
            if force or not await self.app.push_screen_wait(
                ConfirmScreen(
                    Content(f"{to} is not healthy. Switch anyway?"),
                    Content(printable(why)),  # quotes the hosts' errors
                    yes_label="Force switch",
                )
            ):
                self.notify(why, severity="error", title="switch refused")
                return None
            return await self._switch(to, force=True, skip_gates=skip_gates)
        except ConsoleError as e:
            self.say(f"switch failed: {e}")
            self.notify(str(e), severity="error", title="switch failed", timeout=15)
            return None

    @work(exclusive=True, group="armed", exit_on_error=False)
    async def toggle_armed(self) -> None:
        """Confirm, then flip the armed flag in the control plane."""
        try:
            armed = await self.services.armed()
        except ConsoleError as e:
            self.notify(str(e), severity="error")
            return
        verb = "Disarm" if armed else "Arm"
        details = (
            "The agent will NOT fail over automatically until someone arms it again."
            if armed
            else "The agent will fail over to the stand-by when the live colour goes down."
        )
        if not await self.app.push_screen_wait(
            ConfirmScreen(Content(f"{verb} automatic failover?"), Content(details), yes_label=verb)
        ):
            return
        try:
            await self.services.set_armed(not armed, reason="from the console")
        except ConsoleError as e:
            self.notify(str(e), severity="error")
            return
        state = "disarmed" if armed else "armed"
        self.say(f"automatic failover {state}")
        self.notify(f"Automatic failover {state}.")
        self.action_refresh()

    @work(exclusive=True, group="deploy", exit_on_error=False)
    async def deploy(self) -> None:
        """Ask for colour and ref, confirm twice for the live colour, open the run screen."""
        report = self.report
        live = report.active.colour if report and report.active else None
        request: DeployRequest | None = await self.app.push_screen_wait(
            DeployScreen(default=live.other if live else Colour.GREEN, live=live)
        )
        if request is None:
            return
        live_ok = False
        if live is None or request.colour is live:
            why = "is LIVE" if live else "may be live (live colour unknown)"
            if not await self.app.push_screen_wait(
                ConfirmScreen(
                    Content(f"{request.colour.value.upper()} {why}. Deploy to it anyway?"),
                    Content(
                        "Users are served by this colour: a bad release affects them at once "
                        "(this is deploy --live). Deploying to the stand-by and switching is "
                        "the safe way."
                    ),
                    yes_label="Deploy to live",
                )
            ):
                return
            live_ok = True
        self.say(f"deploy {request.ref or '(no ref)'} → {request.colour}: started")
        await self.app.push_screen(
            DeployRunScreen(self.services, request, live_ok=live_ok, on_finished=self.post_message)
        )

    @work(exclusive=True, group="migrate", exit_on_error=False)
    async def migrate(self) -> None:
        """Ask from/to/strategy/dry run, confirm writing into the live colour, run it."""
        report = self.report
        live = report.active.colour if report and report.active else None
        # New data is written on the live colour: that is what usually needs carrying over.
        form = MigrateScreen(default=live or Colour.GREEN, live=live)
        request = await self.app.push_screen_wait(form)
        if request is None:
            return
        request = await confirm_target(self.app, request, live)
        if request is None:
            self.say("migration cancelled; nothing changed")
            return
        kind = "dry run" if request.dry_run else "migration"
        self.say(f"{request.strategy} {kind} {request.source} → {request.target}: started")
        await self.app.push_screen(
            MigrateRunScreen(self.services, request, on_finished=self.post_message)
        )
