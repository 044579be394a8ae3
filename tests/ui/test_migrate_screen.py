"""The console's migrate key: form, live-colour confirmation, run screen, dry run then real."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest
from textual.widgets import DataTable, Log, Static
from ui_support import FixedServices, fake_config, fixed_app, live_app, wait_for

from console.app import ConsoleApp
from console.core.config import load_config
from console.core.control import ControlPlane
from console.core.migrate.plan import (
    RESULT_COLUMNS,
    MigrationRequest,
    MigrationResult,
    Progress,
    ProgressCallback,
    no_progress,
)
from console.demo.sandbox import Sandbox
from console.screens.confirm import ConfirmScreen
from console.screens.dashboard import DashboardScreen
from console.screens.migrate import MigrateScreen
from console.screens.migrate_run import MigrateRunScreen
from console.widgets.migration_progress import MigrationProgress


class SlowMigrationServices(FixedServices):
    """Fixed data, and a migration that reports one item's progress then never ends."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.cancelled = False

    async def migrate(
        self, request: MigrationRequest, on_progress: ProgressCallback = no_progress
    ) -> MigrationResult:
        on_progress(Progress("apply", "blue:app.db uploads", 3, 10))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("not reached")


def _result_line(screen: MigrateRunScreen) -> str:
    return str(screen.query_one(".migrate-result", Static).render())


@pytest.mark.integration
async def test_dry_run_then_for_real_carries_an_upload_from_green_to_blue(
    tmp_path: Path,
) -> None:
    async with Sandbox(tmp_path / "sandbox", traffic=False) as sandbox:
        assert sandbox.info is not None
        urls = sandbox.info.app_urls
        async with httpx.AsyncClient(timeout=5.0) as http:
            posted = await http.post(urls["green"] + "/uploads", json={"name": "on-green.png"})
            assert posted.status_code == 201
        config = load_config(sandbox.config_path)
        app = live_app(config)
        async with app.run_test(size=(120, 40)) as pilot:
            dash = app.screen
            assert isinstance(dash, DashboardScreen)
            await wait_for(
                pilot,
                lambda: dash.report is not None and dash.report.active is not None,
                what="the live colour",
            )

            # m: the form defaults to the live colour (blue); pick green -> blue, dry run.
            await pilot.press("m")
            await wait_for(pilot, lambda: isinstance(app.screen, MigrateScreen), what="form")
            await pilot.click("#source-green")
            await pilot.click("#start")
            await wait_for(pilot, lambda: isinstance(app.screen, MigrateRunScreen), what="run")
            run = app.screen
            assert isinstance(run, MigrateRunScreen)
            await wait_for(pilot, lambda: run.result is not None, 30, "the dry run's result")
            assert run.result is not None
            assert run.result.dry_run
            assert (run.result.missing, run.result.copied) == (1, 0)
            table: DataTable[str] = run.query_one("#result-table", DataTable)
            assert table.row_count == 1
            row = table.get_row_at(0)
            assert "uploads" in row[0]
            assert row[RESULT_COLUMNS.index("missing")] == "1"
            assert "1 to copy" in _result_line(run)
            assert "r runs it for real" in _result_line(run)

            # r: blue is live, so it asks first; then the real run copies and verifies.
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
            await pilot.press("y")
            await wait_for(
                pilot,
                lambda: run.result is not None and not run.result.dry_run,
                30,
                "the real run's result",
            )
            assert run.result.ok, run.result.problems
            assert run.result.copied == 1
            cells = table.get_row_at(0)
            assert cells[RESULT_COLUMNS.index("copied")] == "1"
            assert cells[RESULT_COLUMNS.index("verified")] == "yes"
            assert "1 copied" in _result_line(run)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is dash, what="back on the dashboard")

        with sqlite3.connect(sandbox.hosts["blue"].db_path) as db:
            names = [name for (name,) in db.execute("SELECT name FROM uploads")]
        assert names == ["on-green.png"]
        async with httpx.AsyncClient(timeout=5.0) as http:
            assert "on-green.png" in (await http.get(urls["blue"] + "/")).text
        control = ControlPlane.from_config(config.control, config.console.name)
        try:
            events = await control.events(limit=20)
        finally:
            await control.aclose()
        finished = [e for e in events if e.kind == "migrate" and e.outcome == "ok"]
        assert finished, events
        assert finished[-1].before == "green"
        assert finished[-1].after == "blue"


async def test_migrating_into_the_live_colour_asks_first(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)  # blue is live
    async with app.run_test(size=(120, 40)) as pilot:
        dash = app.screen
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MigrateScreen), what="form")
        await pilot.click("#source-green")
        await pilot.click("#dry-run")  # off: a real run into blue
        await pilot.click("#start")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        confirm = app.screen
        assert isinstance(confirm, ConfirmScreen)
        assert "BLUE is LIVE" in str(confirm.question)
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is dash, what="back on the dashboard")
        activity = dash.query_one("#activity", Log).lines
        assert activity[-1].endswith("migration cancelled; nothing changed")


async def test_a_failing_migration_is_shown_not_raised(tmp_path: Path) -> None:
    # The fixed app's control plane is unreachable: the run screen says so and stays usable.
    app = fixed_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MigrateScreen), what="form")
        await pilot.click("#dry-run")  # blue (live) -> green (stand-by): no confirmation
        await pilot.click("#start")
        await wait_for(pilot, lambda: isinstance(app.screen, MigrateRunScreen), what="run")
        run = app.screen
        assert isinstance(run, MigrateRunScreen)
        await wait_for(pilot, lambda: not run.running and "failed" in _result_line(run), 15)
        assert "rows migration blue -> green failed:" in _result_line(run)
        assert not run.check_action("run_for_real", ())
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        assert app.is_running


async def test_escape_while_running_asks_before_cancelling(tmp_path: Path) -> None:
    services = SlowMigrationServices.build(fake_config(tmp_path))
    assert isinstance(services, SlowMigrationServices)
    app = ConsoleApp(services, dashboard=lambda s: DashboardScreen(s, live_updates=False))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MigrateScreen), what="form")
        await pilot.click("#dry-run")
        await pilot.click("#start")
        await wait_for(pilot, lambda: isinstance(app.screen, MigrateRunScreen), what="run")
        run = app.screen
        assert isinstance(run, MigrateRunScreen)
        progress = run.query_one(MigrationProgress)
        await wait_for(pilot, lambda: bool(progress.items), what="progress row")
        assert progress.items[0].amount() == "3/10 rows"
        # Escape while running asks (No keeps it running), then Yes cancels.
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        assert "copies the rest exactly once" in str(
            app.screen.query_one(".details", Static).render()
        )
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is run, what="still running")
        assert run.running
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        await wait_for(pilot, lambda: services.cancelled, what="the migration cancelled")
