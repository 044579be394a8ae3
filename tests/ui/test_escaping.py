"""The console shows other people's text escaped: no line forged, no terminal control."""

from __future__ import annotations

import re
from pathlib import Path

from ui_support import fixed_app

from console.core.logs import LogLine
from console.core.models import Colour, Event, HostHealth, Probe
from console.screens.events import event_cells
from console.widgets.event_strip import event_line
from console.widgets.host_table import host_cells
from console.widgets.log_pane import format_log_line

EVIL = "ok\x1b[2J\n12:00:00  switch  root  switch blue -> green verified\r\x07\u202e"
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def evil_event() -> Event:
    return Event(
        id="1-0",
        at=0.0,
        kind="deploy\n",
        actor="eve\x1b[8m@jump",
        summary="deploy green ref=" + EVIL,
        reason=EVIL,
        outcome="ok\x1b[0m",
    )


def test_recent_events_line_is_one_escaped_line() -> None:
    plain = event_line(evil_event()).plain
    assert not RAW.search(plain), repr(plain)
    assert "\\x1b[2J\\n12:00:00  switch" in plain


def test_events_screen_cells_are_escaped() -> None:
    for cell in event_cells(evil_event()):
        assert not RAW.search(cell.plain), repr(cell.plain)


def test_host_cells_escape_errors_and_versions() -> None:
    probe = Probe(at=0.0, ok=False, status=500, latency_ms=1.0, version=EVIL, error=EVIL)
    host = HostHealth(Colour.BLUE, "app\x1b1", "http://x", False, probe, 2, 0, (probe,))
    for cell in host_cells(host).values():
        assert not RAW.search(cell.plain), repr(cell.plain)


def test_log_lines_are_escaped_tabs_expanded() -> None:
    line = LogLine(Colour.GREEN, "app1", "access", 'GET / "\x1b]0;pwned\x07"\tUA', 0.0)
    shown = format_log_line(line)
    assert not RAW.search(shown), repr(shown)
    assert "\\x1b]0;pwned\\x07" in shown


async def test_notifications_are_plain_text(tmp_path: Path) -> None:
    # Error messages quote other people's text (a lock holder, a reason, a host's
    # answer). As markup, "[/]" crashed the console and "[console]" vanished.
    app = fixed_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        app.notify("held by eve[/] since [console] \x1b[2J", title="lock \x1b]0;x\x07")
        app.screen.notify("switch refused [link=http://evil]x[/link]", severity="error")
        await pilot.pause()
        shown = [(n.title, n.message) for n in app._notifications]
        assert ("lock \\x1b]0;x\\x07", "held by eve[/] since [console] \\x1b[2J") in shown
        assert ("", "switch refused [link=http://evil]x[/link]") in shown
        assert all(not n.markup for n in app._notifications)
        await pilot.pause()
        assert app.is_running
