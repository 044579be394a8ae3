"""Data follows the traffic, from the console: the switch's go/no-go says which rows written
on the live colour are not on the target (a real rows dry run over SSH), and a mirror
started from the console carries them, then stops, and its change capture is removed.

The demo sandbox: real sshd hosts, SQLite databases, redis-server, the agent."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from textual.widgets import RadioSet
from ui_support import fixed_flags, fixed_report, live_app, screen_text, wait_for

from console.app import ConsoleApp
from console.core.config import load_config
from console.core.control import ControlPlane
from console.core.data_check import DataCheck
from console.core.models import Colour
from console.demo.sandbox import Sandbox
from console.screens.confirm import ConfirmScreen
from console.screens.dashboard import DashboardScreen
from console.screens.migrate import MigrateScreen
from console.screens.migrate_run import MigrateRunScreen
from console.screens.status_detail import status_detail
from console.widgets.go_no_go import go_no_go
from console.widgets.status_header import plane_line


def _text(app: ConsoleApp) -> str:
    return "\n".join(screen_text(app))


def _names(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as db:
        return sorted(name for (name,) in db.execute("SELECT name FROM uploads"))


def test_the_data_line_says_what_it_knows() -> None:
    report = fixed_report()
    checking = go_no_go(report, fixed_flags(), Colour.GREEN, "checking").plain
    assert "data        checking… (dry run: rows on blue missing on green)" in checking
    missing = DataCheck(
        Colour.BLUE, Colour.GREEN, True, missing=(("h:app.db uploads", 3),), tables=2
    )
    text = go_no_go(report, fixed_flags(), Colour.GREEN, missing).plain
    assert "3 row(s) on blue NOT on green: uploads 3  (m migrates them)" in text
    clean = DataCheck(Colour.BLUE, Colour.GREEN, True, tables=2, seconds=0.4)
    assert (
        "every row on blue is on green (2 table(s), 0.4 s)"
        in go_no_go(report, fixed_flags(), Colour.GREEN, clean).plain
    )
    unknown = DataCheck(Colour.BLUE, Colour.GREEN, False, why="host b1: connection refused")
    assert (
        "not checked: host b1: connection refused"
        in go_no_go(report, fixed_flags(), Colour.GREEN, unknown).plain
    )


def test_a_mirror_behind_shows_in_the_header_detail_and_go_no_go() -> None:
    line = "blue -> green: mirror: 3 change(s) behind, oldest 1.2 s"
    report = replace(fixed_report(), mirror=line, mirror_behind=True)
    assert "MIRROR BEHIND" in plane_line(report, True, "builtin").plain
    assert line in status_detail(report).plain
    assert f"mirror      {line}" in go_no_go(report, fixed_flags(), Colour.GREEN).plain
    caught_up = replace(report, mirror="blue -> green: mirror: 0 behind", mirror_behind=False)
    assert "mirror ok" in plane_line(caught_up, True, "builtin").plain
    assert "MIRROR" not in plane_line(fixed_report(), True, "builtin").plain


@pytest.mark.integration
async def test_rows_missing_on_the_target_then_mirrored_from_the_console(tmp_path: Path) -> None:
    async with Sandbox(tmp_path / "sandbox", traffic=False) as sandbox:
        assert sandbox.info is not None
        urls = sandbox.info.app_urls
        async with httpx.AsyncClient(timeout=5.0) as http:
            posted = await http.post(urls["blue"] + "/uploads", json={"name": "on-blue.png"})
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

            # s: the go/no-go fills in the rows check while the question waits.
            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="go/no-go")
            await wait_for(
                pilot, lambda: "NOT on green" in _text(app), 30, "the rows check's answer"
            )
            assert "1 row(s) on blue NOT on green" in _text(app)
            await pilot.press("n")
            await wait_for(pilot, lambda: app.screen is dash, what="back")

            # m: mirror blue -> green for real (green is the stand-by: no question).
            await pilot.press("m")
            await wait_for(pilot, lambda: isinstance(app.screen, MigrateScreen), what="form")
            await pilot.click("#strategy-mirror")
            form = app.screen
            assert form.query_one("#strategy", RadioSet).pressed_button is not None
            await pilot.click("#dry-run")
            await pilot.click("#start")
            await wait_for(pilot, lambda: isinstance(app.screen, MigrateRunScreen), what="run")
            run = app.screen
            assert isinstance(run, MigrateRunScreen)
            await wait_for(pilot, lambda: run.mirror_status is not None, 30, "a mirror cycle")
            green_db = sandbox.hosts["green"].db_path
            await wait_for(
                pilot, lambda: "on-blue.png" in _names(green_db), 30, "the catch-up on green"
            )
            # A row written on blue while the mirror runs follows within a few cycles.
            async with httpx.AsyncClient(timeout=5.0) as http:
                posted = await http.post(urls["blue"] + "/uploads", json={"name": "later.png"})
                assert posted.status_code == 201
            await wait_for(pilot, lambda: "later.png" in _names(green_db), 30, "the mirror")
            assert "mirror blue -> green: cycle" in _text(app)

            await pilot.press("s")
            await wait_for(pilot, lambda: not run.running, 30, "the mirror to stop")
            assert run.result is not None
            assert "mirror stopped" in _text(app)

            control = ControlPlane.from_config(config.control, config.console.name)
            try:
                assert await control.mirror() == (Colour.BLUE, Colour.GREEN)
                # t: remove the change capture (asked first).
                await pilot.press("t")
                await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="ask")
                await pilot.press("y")
                for _ in range(200):
                    if await control.mirror() is None:
                        break
                    await pilot.pause(0.05)
                assert await control.mirror() is None
                events = await control.events(limit=20)
            finally:
                await control.aclose()
            stopped = [e for e in events if e.kind == "migrate" and "stopped" in e.summary]
            assert stopped, [e.summary for e in events]

            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is dash, what="dashboard")
            # The go/no-go now finds every row of blue on green.
            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="go/no-go")
            await wait_for(
                pilot, lambda: "every row on blue is on green" in _text(app), 30, "clean check"
            )
            await pilot.press("n")
        assert _names(sandbox.hosts["blue"].db_path) == ["later.png", "on-blue.png"]
