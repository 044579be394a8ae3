"""The logs screen hides health-probe requests until p shows them."""

from __future__ import annotations

from pathlib import Path

from ui_support import fixed_app

from console.screens.logs import LogsScreen


def test_probe_lines_are_recognised(tmp_path: Path) -> None:
    screen = LogsScreen(fixed_app(tmp_path).services)
    assert screen.hide_probes
    assert screen.is_probe('127.0.0.1 - - [x] "GET /health HTTP/1.1" 200 55 0.3ms')
    assert screen.is_probe('10.0.0.1 "GET /x" 200 "bgconsole-probe/0.1.0"')
    assert not screen.is_probe('127.0.0.1 - - [x] "GET / HTTP/1.1" 200 791 5.8ms')
    assert not screen.is_probe('127.0.0.1 - - [x] "GET /healthz-report HTTP/1.1" 200')
