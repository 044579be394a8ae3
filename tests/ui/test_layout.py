"""What an operator must see at 80x24, 120x35 and 160x45: nothing important cut off."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot
from ui_support import FixedServices, fixed_app, screen_text, wait_for

from console.core.models import ActiveState, Colour
from console.screens.dashboard import DashboardScreen
from console.screens.events import EventDetailScreen, EventsScreen
from console.screens.help import HelpScreen
from console.screens.logs import LogsScreen
from console.screens.status_detail import StatusDetailScreen
from console.widgets.activity_log import ActivityLog
from console.widgets.env_panel import EnvPanel

SIZES = [(80, 24), (120, 35), (160, 45)]


async def _dashboard(pilot: Pilot[None]) -> DashboardScreen:
    screen = pilot.app.screen
    assert isinstance(screen, DashboardScreen)
    await wait_for(pilot, lambda: screen.report is not None, what="first status")
    app = pilot.app
    await wait_for(pilot, lambda: "q Quit" in screen_text(app)[-1], what="the footer")
    await pilot.pause(0.1)
    return screen


@pytest.mark.parametrize("size", SIZES)
async def test_dashboard_keeps_header_hosts_and_keys(tmp_path: Path, size: tuple[int, int]) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await _dashboard(pilot)
        rows = screen_text(app)
        # The header: live colour and epoch, then control plane, router, agent, failover.
        assert "LIVE BLUE  epoch 7" in rows[0]
        assert re.search(r"ok .*│ router .*→ BLUE │ agent .*♥.*failover active", rows[1]), rows[1]
        # Each host table keeps VERSION and ERROR, and the DOWN host's error shows.
        headers = [r for r in rows if "HOST" in r]
        assert headers
        assert all("VERSION" in r and "ERROR" in r for r in headers), headers
        assert any("DOWN 500" in r and "HTTP 5" in r for r in rows)
        # Latency is never split from its unit ("5.4 m").
        assert not any(re.search(r"\d ?m\b(?!s)", r.split("│")[0]) for r in rows[2:12])
        footer = rows[-1]
        for key in ("l Logs", "e Events", "? Help", "q Quit"):
            assert key in footer, footer
        # The newest event (the failover) and its evidence are on screen.
        assert any("failover green -> blue" in r for r in rows)
        assert any("evidence: green/green-1: 2 failures" in r for r in rows)


@pytest.mark.parametrize("size", SIZES)
async def test_long_reason_is_cut_and_shown_whole_on_i(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    app = fixed_app(tmp_path)
    services = app.services
    assert isinstance(services, FixedServices)
    reason = "live green is down (1/1 hosts down, 2+ consecutive failures); " * 3 + "END"
    active = ActiveState(Colour.BLUE, 8, services.report.at - 5, "agent@r", reason)
    services.report = replace(services.report, active=active)
    async with app.run_test(size=size) as pilot:
        await _dashboard(pilot)
        rows = screen_text(app)
        assert rows[0].rstrip().endswith("…"), rows[0]
        assert re.search(r"router .*→ BLUE", rows[1]), rows[1]
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, StatusDetailScreen), what="detail")
        await pilot.pause(0.2)
        text = " ".join(r.strip(" █") for r in screen_text(app))
        assert "END" in text
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


@pytest.mark.parametrize("size", SIZES)
async def test_events_screen_shows_reason_outcome_and_evidence(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await _dashboard(pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen), what="events")
        await pilot.pause(0.3)
        rows = screen_text(app)
        assert any("REASON" in r and "OUTCOME" in r for r in rows), rows[:3]
        assert any("refused" in r for r in rows)
        # The newest event is highlighted and shown whole below, evidence included.
        text = "\n".join(rows)
        assert "stand-by blue is healthy" in text or "2+ consecutive" in text
        assert "green/green-1: 2 failures: HTTP 500 (want 200) in 18 ms" in text
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EventDetailScreen), what="detail")
        await pilot.press("escape")
        await pilot.press("k", "k")
        await pilot.pause(0.1)
        assert "carol@ops" in "\n".join(screen_text(app))
        # q goes back to the dashboard, not out of the app.
        await pilot.press("q")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)
        assert app.is_running


async def test_activity_shows_the_newest_line_after_a_resize(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(160, 45)) as pilot:
        dash = await _dashboard(pilot)
        for i in range(60):
            dash.say(f"line {i}")
        await pilot.pause(0.2)
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)
        assert any("line 59" in r for r in screen_text(app))
        await pilot.resize_terminal(120, 35)
        await pilot.pause(0.3)
        assert any("line 59" in r for r in screen_text(app))
        log = dash.query_one(ActivityLog)
        assert log.scroll_y == log.max_scroll_y


async def test_help_lists_the_app_keys_and_escape_closes(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _dashboard(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.pause(0.2)
        text = "\n".join(screen_text(app))
        assert "Switch live traffic to the stand-by colour" in text
        assert "Page Left" not in text
        assert "[action]" not in text
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        # q on the dashboard quits.
        await pilot.press("q")
        await pilot.pause(0.1)
    assert not app.is_running


async def test_one_screen_of_a_kind_and_q_goes_back(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        await _dashboard(pilot)
        for key in "lflflf":
            await pilot.press(key)
            await pilot.pause(0.1)
        kinds = [type(s).__name__ for s in app.screen_stack]
        assert kinds == ["DashboardScreen", "LogsScreen", "FlagsScreen"], kinds
        await pilot.press("q")
        await pilot.press("q")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)
        assert app.is_running


async def test_palette_lists_quit_once(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        await _dashboard(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Quit" not in titles
        assert "Keys" not in titles


async def test_events_filter_with_slash_and_escape_clears(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        await _dashboard(pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen), what="events")
        screen = app.screen
        assert isinstance(screen, EventsScreen)
        table = screen.query_one("DataTable")
        await wait_for(pilot, lambda: table.row_count == 5, what="all events")  # type: ignore[attr-defined]
        await pilot.press("slash", *"carol")
        await pilot.pause(0.2)
        assert table.row_count == 1  # type: ignore[attr-defined]
        await pilot.press("enter")
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert table.row_count == 5  # type: ignore[attr-defined]
        assert isinstance(app.screen, EventsScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_tab_to_a_colour_and_enter_drills_into_its_hosts(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _dashboard(pilot)
        await pilot.press("tab")
        focused = app.focused
        assert isinstance(focused, EnvPanel)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, StatusDetailScreen), what="hosts")
        await pilot.pause(0.2)
        text = "\n".join(screen_text(app))
        colour = focused.colour.value
        assert f"{colour.upper()}: " in text
        assert "HTTP 200" in text
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen), what="logs")
        assert app.screen.colours == (focused.colour,)  # type: ignore[attr-defined]
