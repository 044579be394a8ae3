"""MigrateRunScreen: runs one migration with a progress bar per item, then its result table."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, DataTable, Static

from console.core.errors import ConsoleError
from console.core.migrate.mirror import MirrorStatus
from console.core.migrate.plan import RESULT_COLUMNS, MigrationRequest, MigrationResult
from console.core.services import Services
from console.messages import OperationFinished
from console.screens.confirm import ConfirmScreen
from console.screens.migrate import confirm_target
from console.widgets.key_footer import KeyFooter
from console.widgets.migration_progress import MigrationProgress

CANCEL_DETAILS = (
    "Rows are copied in short transactions (slices): a cancelled run keeps the slices it "
    "committed, the host side stops with it, and running the migration again copies the "
    "rest exactly once. The migrate lock is released and the cancellation recorded."
)
DRY_RUN_CANCEL_DETAILS = "It is a dry run: nothing has been written."


class MigrateRunScreen(Screen[None]):
    """Runs the migration at once; after a dry run, ``r`` runs it for real.

    Escape closes when done, and asks first while the migration runs.
    """

    DEFAULT_CSS = """
    MigrateRunScreen .migrate-title { height: 1; padding: 0 1; background: $panel; }
    MigrateRunScreen .migrate-heading {
        height: 1; padding: 0 1; margin-top: 1; color: $text-muted;
    }
    MigrateRunScreen #result-table { height: auto; max-height: 14; margin: 0 1; }
    MigrateRunScreen .migrate-notes { height: auto; padding: 0 1; color: $warning; }
    MigrateRunScreen .migrate-result { height: auto; padding: 0 1; margin-top: 1; }
    MigrateRunScreen .migrate-result.-ok { color: $status-ok; text-style: bold; }
    MigrateRunScreen .migrate-result.-failed { color: $status-down; text-style: bold; }
    MigrateRunScreen #actions { height: auto; padding: 0 1; margin-top: 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "app.back", "Back"),
        Binding("r", "run_for_real", "Run it for real"),
        Binding("s", "stop_mirror", "Stop mirror"),
        Binding("t", "teardown", "Remove capture"),
    ]

    def __init__(
        self,
        services: Services,
        request: MigrationRequest,
        *,
        on_finished: Callable[[OperationFinished], object] | None = None,
    ) -> None:
        """Args:
        services: the session's clients.
        request: what to run; ``live_ok`` already settled (see ``confirm_target``).
        on_finished: told the outcome of each run (the dashboard logs it).
        """
        super().__init__()
        self.services = services
        self.on_finished = on_finished
        self.request = request
        """The migration shown (replaced by the real run after a dry run)."""
        self.result: MigrationResult | None = None
        """The last run's result; None while running or after an error."""
        self.running = False
        self.mirror_status: MirrorStatus | None = None
        """The mirror's last cycle (mirror strategy only)."""
        self._stop = asyncio.Event()
        self._close_when_stopped = False

    @property
    def mirroring(self) -> bool:
        """A real mirror (not its dry run): runs until stopped."""
        return self.request.strategy == "mirror" and not self.request.dry_run

    def compose(self) -> ComposeResult:
        yield Static(self._title(), classes="migrate-title")
        yield Static("progress", classes="migrate-heading")
        yield MigrationProgress(id="progress")
        yield Static("result", classes="migrate-heading")
        table: DataTable[str] = DataTable(id="result-table", cursor_type="none", zebra_stripes=True)
        table.can_focus = False
        yield table
        yield Static("", classes="migrate-notes")
        yield Static("running…", classes="migrate-result")
        with Horizontal(id="actions"):
            yield Button("Run it for real (r)", variant="warning", id="for-real")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#result-table", DataTable).add_columns(*RESULT_COLUMNS)
        self.query_one("#actions").display = False
        self.run_migration()

    def _title(self) -> Content:
        request = self.request
        return Content.assemble(
            ("migrate ", "bold"),
            f"{request.strategy} ",
            (request.source.value.upper(), f"bold $env-{request.source.value}"),
            " → ",
            (request.target.value.upper(), f"bold $env-{request.target.value}"),
            (" (dry run: nothing is written)" if request.dry_run else "", "$text-muted"),
            (" (into the live colour)" if request.live_ok and not request.dry_run else "",
             "bold $warning"),
        )  # fmt: skip

    @work(exclusive=True, group="migrate", exit_on_error=False)
    async def run_migration(self) -> None:
        """Run the migration, drawing progress as it comes, then the result table."""
        progress = self.query_one(MigrationProgress)
        self.running = True
        self.refresh_bindings()
        try:
            if self.mirroring:
                self._stop = asyncio.Event()
                self.result, status = await self.services.mirror(
                    self.request, self._mirror_cycle, self._stop, progress.report
                )
                self.mirror_status = status
            else:
                # A mirror's dry run is the rows plan of its catch-up (as from the CLI).
                request = self.request
                if request.strategy == "mirror":
                    request = replace(request, strategy="rows")
                self.result = await self.services.migrate(request, progress.report)
        except ConsoleError as e:
            self._finish(False, f"{self._what()} failed: {e}")
            return
        except Exception as e:  # a bug: say so on the screen instead of a silent worker error
            self._finish(False, f"{self._what()}: internal error: {type(e).__name__}: {e}")
            return
        finally:
            self.running = False
            self.refresh_bindings()
        self._show(self.result)
        summary = self.result.summary()
        if self.mirror_status is not None and self.mirroring:
            summary = f"mirror stopped; {_mirror_line(self.request, self.mirror_status)}"
            summary += f"; catch-up: {self.result.summary()}"
        self._finish(self.result.ok, summary)

    def _mirror_cycle(self, status: MirrorStatus) -> None:
        """After each mirror cycle: what it applied, what is behind, the lag."""
        self.mirror_status = status
        line = self.query_one(".migrate-result", Static)
        line.update(Content(f"{_mirror_line(self.request, status)}   (s stops · Escape stops)"))
        line.set_class(not status.error, "-ok")
        line.set_class(bool(status.error), "-failed")

    def _what(self) -> str:
        request = self.request
        kind = "dry run" if request.dry_run else "migration"
        return f"{request.strategy} {kind} {request.source} -> {request.target}"

    def _show(self, result: MigrationResult) -> None:
        table = self.query_one("#result-table", DataTable)
        table.clear()
        for item in result.items:
            table.add_row(*item.cells())
        if not result.items:
            table.add_row("(nothing to migrate)", *[""] * (len(RESULT_COLUMNS) - 1))
        self.query_one(".migrate-notes", Static).update(Content("\n".join(result.notes())))

    def _finish(self, ok: bool, summary: str) -> None:
        if self._close_when_stopped:
            # Escape stopped the mirror: the outcome goes to the dashboard, and we leave.
            self.notify(summary, severity="information" if ok else "error", timeout=10)
            if self.on_finished is not None:
                self.on_finished(OperationFinished("migrate", ok, summary))
            self.dismiss()
            return
        offer = self.request.dry_run and self.result is not None
        hint = "   (r runs it for real · Escape closes)" if offer else "   (Escape closes)"
        line = self.query_one(".migrate-result", Static)
        line.update(Content(summary + hint))
        line.set_class(ok, "-ok")
        line.set_class(not ok, "-failed")
        self.query_one("#actions").display = offer
        self.refresh_bindings()
        self.notify(summary, severity="information" if ok else "error", timeout=10)
        # The dashboard below logs it in its activity strip.
        if self.on_finished is not None:
            self.on_finished(OperationFinished("migrate", ok, summary))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "run_for_real":
            # Only once a dry run has finished: there is nothing to repeat before.
            return not self.running and self.request.dry_run and self.result is not None
        if action == "stop_mirror":
            return self.running and self.mirroring
        if action == "teardown":
            return not self.running and self.request.strategy == "mirror"
        return True

    def action_stop_mirror(self) -> None:
        """Stop the mirror after its current cycle (the lock is released, recorded)."""
        if self.running and self.mirroring:
            self._stop.set()
            self.query_one(".migrate-result", Static).update("stopping after this cycle…")

    def action_teardown(self) -> None:
        """Remove the change capture (triggers, change table) from both colours."""
        if self.check_action("teardown", ()):
            self.teardown()

    @work(exclusive=True, group="teardown", exit_on_error=False)
    async def teardown(self) -> None:
        """Confirm, then remove change capture; the mirror's lag leaves status."""
        request = self.request
        if not await self.app.push_screen_wait(
            ConfirmScreen(
                Content(f"Remove change capture from {request.source} and {request.target}?"),
                Content(
                    "The triggers and the change table go; a later mirror starts with a "
                    "catch-up again. Rows already copied stay."
                ),
                yes_label="Remove capture",
            )
        ):
            return
        try:
            count = await self.services.mirror_teardown(request)
        except ConsoleError as e:
            self.notify(str(e), severity="error", title="change capture not removed")
            return
        self.notify(f"change capture removed ({count} object(s))", title="mirror")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "for-real":
            self.action_run_for_real()

    def action_run_for_real(self) -> None:
        """Run the planned migration again with dry run off (the live colour asks first)."""
        if self.check_action("run_for_real", ()):
            self.start_for_real()

    @work(exclusive=True, group="for-real", exit_on_error=False)
    async def start_for_real(self) -> None:
        """Confirm writing into the live colour if needed, then run with dry run off."""
        live = await self.services.live()
        request = await confirm_target(self.app, replace(self.request, dry_run=False), live)
        if request is None:
            self.notify("Not run; the dry run's plan is still shown.")
            return
        self.request = request
        self.result = None
        self.query_one(".migrate-title", Static).update(self._title())
        self.query_one(MigrationProgress).clear()
        self.query_one("#result-table", DataTable).clear()
        self.query_one(".migrate-notes", Static).update("")
        line = self.query_one(".migrate-result", Static)
        line.update("running…")
        line.remove_class("-ok", "-failed")
        self.query_one("#actions").display = False
        self.run_migration()

    def action_close(self) -> None:
        """Leave; while the migration runs, confirm that it should be cancelled (a mirror
        is stopped after its cycle instead: that is its normal end)."""
        if not self.running:
            self.dismiss()
            return
        if self.mirroring:
            self._close_when_stopped = True
            self.action_stop_mirror()
            return
        self.confirm_cancel()

    @work(exclusive=True, group="close", exit_on_error=False)
    async def confirm_cancel(self) -> None:
        """Ask before cancelling a running migration (the lock is released, an event recorded)."""
        details = DRY_RUN_CANCEL_DETAILS if self.request.dry_run else CANCEL_DETAILS
        if await self.app.push_screen_wait(
            ConfirmScreen(
                Content("Cancel the running migration?"),
                Content(details),
                yes_label="Cancel migration",
            )
        ):
            self.workers.cancel_group(self, "migrate")
            self.running = False
            self.dismiss()


def _mirror_line(request: MigrationRequest, status: MirrorStatus) -> str:
    """``mirror blue -> green: cycle 12, 40 applied, 0 behind, lag 0.3 s``."""
    line = (
        f"mirror {request.source} -> {request.target}: cycle {status.cycles}, "
        f"{status.copied} applied, {status.behind} behind, lag {status.lag:.1f} s"
    )
    if status.conflicts:
        line += f", {status.conflicts} conflicting"
    if status.error:
        line += f"; last cycle failed (retrying): {status.error}"
    return line
