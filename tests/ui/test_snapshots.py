"""Snapshot tests of the dashboard, flags and events screens on fixed data, both themes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from ui_support import fixed_app

THEMES = ["bgconsole-dark", "bgconsole-light"]
SIZE = (120, 40)
SIZES = [(80, 24), (120, 35), (160, 45)]
"""The operator's terminals: a laptop's default, a split pane, a full screen."""


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event times render in UTC whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def _settle(pilot: Pilot[None]) -> None:
    await pilot.pause(0.3)
    await pilot.wait_for_scheduled_animations()


def _open(key: str) -> Callable[[Pilot[None]], Any]:
    async def run_before(pilot: Pilot[None]) -> None:
        await _settle(pilot)
        await pilot.press(key)
        await _settle(pilot)

    return run_before


@pytest.mark.parametrize("theme", THEMES)
def test_dashboard(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    assert snap_compare(fixed_app(tmp_path, theme), terminal_size=SIZE, run_before=_settle)


@pytest.mark.parametrize("theme", THEMES)
def test_flags_screen(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    assert snap_compare(fixed_app(tmp_path, theme), terminal_size=SIZE, run_before=_open("f"))


@pytest.mark.parametrize("theme", THEMES)
def test_events_screen(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    assert snap_compare(fixed_app(tmp_path, theme), terminal_size=SIZE, run_before=_open("e"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_sizes(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(fixed_app(tmp_path), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_events_screen_sizes(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(fixed_app(tmp_path), terminal_size=size, run_before=_open("e"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_status_detail_sizes(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(fixed_app(tmp_path), terminal_size=size, run_before=_open("i"))
