"""Flags, events and help are made once and pushed again: each reopening shows what is
current (and the help lists the keys of whichever screen it was opened on)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from textual.pilot import Pilot
from ui_support import NOW, FixedServices, fake_config, screen_text, wait_for

from console.app import ConsoleApp
from console.core.flags import FlagTable, FlagValue
from console.core.models import Colour, Event
from console.screens.dashboard import DashboardScreen
from console.screens.events import EventsScreen
from console.screens.flags import FlagsScreen
from console.screens.help import HelpScreen
from console.widgets.flag_grid import FlagGrid


class CountingServices(FixedServices):
    """Fixed data that counts flag reads; events after an id are followed from the list."""

    flag_reads = 0

    async def flag_table(self) -> FlagTable:
        self.flag_reads += 1
        return self.table

    async def _follow(self, after: str) -> AsyncIterator[Event]:
        ids = [e.id for e in self.event_list]
        for event in self.event_list[ids.index(after) + 1 if after in ids else len(ids) :]:
            yield event
        await asyncio.Event().wait()

    def follow_events(self, after: str = "$") -> AsyncIterator[Event]:
        return self._follow(after)


def _app(tmp_path: Path) -> tuple[ConsoleApp, CountingServices]:
    services = CountingServices.build(fake_config(tmp_path))
    assert isinstance(services, CountingServices)
    app = ConsoleApp(
        services, dashboard=lambda s: DashboardScreen(s, poll_interval=60, live_updates=False)
    )
    return app, services


async def _dashboard(pilot: Pilot[None]) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, DashboardScreen)
    await wait_for(pilot, lambda: screen.report is not None, what="first status")
    await pilot.pause(0.1)


async def test_flags_opened_twice_shows_the_current_values(tmp_path: Path) -> None:
    app, services = _app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        await _dashboard(pilot)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FlagsScreen), what="flags")
        first = app.screen
        grid = first.query_one(FlagGrid)
        await wait_for(pilot, lambda: grid.table is services.table, what="flags read")
        assert "● on" in str(grid.get_cell("uploads", "green"))
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)
        # Hidden: no reads. Meanwhile uploads goes off in green.
        reads = services.flag_reads
        await pilot.pause(0.3)
        assert services.flag_reads == reads
        rows = list(services.table.rows)
        rows[0] = replace(rows[0], values={**rows[0].values, Colour.GREEN: FlagValue("off", "OFF")})
        services.table = replace(services.table, rows=tuple(rows))
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FlagsScreen), what="flags again")
        assert app.screen is first  # the same screen, pushed again
        await wait_for(pilot, lambda: grid.table is services.table, what="flags read again")
        await pilot.pause(0.1)
        assert "○ off" in str(grid.get_cell("uploads", "green"))
        assert "reading…" not in "\n".join(screen_text(app))
        await pilot.press("q")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)


async def test_help_from_two_screens_lists_each_ones_keys(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        await _dashboard(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.pause(0.2)
        help_screen = app.screen
        text = "\n".join(screen_text(app))
        assert "Switch live traffic to the stand-by colour" in text
        assert "Read the flags now" not in text
        await pilot.press("escape")
        await pilot.pause(0.1)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FlagsScreen), what="flags")
        await pilot.pause(0.1)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help again")
        await pilot.pause(0.2)
        assert app.screen is help_screen
        text = "\n".join(screen_text(app))
        assert "Read the flags now" in text
        assert "Switch live traffic to the stand-by colour" not in text
        await pilot.press("q")
        await pilot.pause(0.1)
        assert isinstance(app.screen, FlagsScreen)
        await pilot.press("q")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)


async def test_events_reopened_shows_what_came_meanwhile(tmp_path: Path) -> None:
    app, services = _app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        await _dashboard(pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen), what="events")
        screen = app.screen
        table = screen.query_one("DataTable")
        count = len(services.event_list)
        await wait_for(pilot, lambda: table.row_count == count, what="history")  # type: ignore[attr-defined]
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)
        services.event_list = [
            *services.event_list,
            Event("99-0", NOW, "switch", "dave@jump", "switch blue -> green: ok"),
        ]
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen), what="events again")
        assert app.screen is screen
        await wait_for(pilot, lambda: table.row_count == count + 1, what="the new event")  # type: ignore[attr-defined]
        assert "dave@jump" in "\n".join(screen_text(app))
