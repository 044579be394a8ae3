"""The switch confirmation is a go/no-go: both colours side by side, and what could bite."""

from __future__ import annotations

from pathlib import Path

from ui_support import fixed_app, fixed_flags, fixed_report, screen_text, wait_for

from console.core.models import Colour
from console.screens.confirm import ConfirmScreen
from console.screens.dashboard import DashboardScreen
from console.widgets.go_no_go import go_no_go


def test_go_no_go_compares_the_colours() -> None:
    text = go_no_go(fixed_report(), fixed_flags(), Colour.GREEN).plain
    assert "BLUE (live now)" in text
    assert "GREEN (target)" in text
    assert "healthy 2/2 up" in text
    assert "degraded 1/2 up" in text
    assert "flag banner off" in text  # banner differs: off on blue, on on green
    assert "no deploy or migration" in text
    assert "armed and active" in text
    assert "data        not checked" in text


async def test_s_asks_with_the_go_no_go_and_fits_80x24(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await wait_for(pilot, lambda: dash.report is not None and dash.flags is not None)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.pause(0.2)
        text = "\n".join(screen_text(app))
        assert "Switch live traffic BLUE → GREEN?" in text
        assert "Switch (y)" in text
        assert "No (n)" in text
        assert "use --force" not in text
        await pilot.press("n")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)
