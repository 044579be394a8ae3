"""The logs screen: health probes hidden until p, / shows only the lines holding a text."""

from __future__ import annotations

from pathlib import Path

from ui_support import fixed_app

from console.core.logs import LogLine
from console.core.models import Colour
from console.screens.logs import LogsScreen
from console.widgets.log_pane import LogPane


def test_probe_lines_are_recognised(tmp_path: Path) -> None:
    screen = LogsScreen(fixed_app(tmp_path).services)
    assert screen.hide_probes
    assert screen.is_probe('127.0.0.1 - - [x] "GET /health HTTP/1.1" 200 55 0.3ms')
    assert screen.is_probe('10.0.0.1 "GET /x" 200 "bgconsole-probe/0.1.0"')
    assert not screen.is_probe('127.0.0.1 - - [x] "GET / HTTP/1.1" 200 791 5.8ms')
    assert not screen.is_probe('127.0.0.1 - - [x] "GET /healthz-report HTTP/1.1" 200')


async def test_slash_filters_the_lines_kept_and_escape_clears(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("l")
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, LogsScreen)
        pane = screen.query_one(LogPane)
        for i in range(5):
            text = f'"GET /p{i} HTTP/1.1" {500 if i == 3 else 200} 1.0ms'
            pane.write(LogLine(Colour.BLUE, "app1", "access", text, 0.0))
        await pilot.pause(0.1)
        await pilot.press("slash", *" 500")
        await pilot.pause(0.2)
        shown = [line for line in pane.lines if "access" in line]
        assert shown == ['blue/app1:access | "GET /p3 HTTP/1.1" 500 1.0ms']
        # A new line that does not match stays hidden; one that does appears.
        pane.write(LogLine(Colour.BLUE, "app1", "access", '"GET /x HTTP/1.1" 200', 0.0))
        pane.write(LogLine(Colour.BLUE, "app1", "access", '"GET /y HTTP/1.1" 500', 0.0))
        assert [line for line in pane.lines if "access" in line][-1].endswith('/y HTTP/1.1" 500')
        await pilot.press("enter", "escape")
        await pilot.pause(0.1)
        assert len([line for line in pane.lines if "access" in line]) == 7
        assert app.screen is screen
        await pilot.press("escape")
        assert app.screen is not screen
