"""Helpers for the terminal-UI tests: fixed-data services, app factory, waiting on Pilot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from configs import config_data, write_config
from textual.app import App
from textual.pilot import Pilot

from console.app import ConsoleApp
from console.core.config import Config
from console.core.flags import FlagRow, FlagTable, FlagValue
from console.core.models import (
    ActiveState,
    AgentHeartbeat,
    Colour,
    EnvHealth,
    Event,
    HealthSnapshot,
    HostHealth,
    Probe,
    Verdict,
)
from console.core.readiness import Readiness
from console.core.router.base import RouterState
from console.core.services import Services
from console.core.status import StatusReport
from console.screens.dashboard import DashboardScreen

NOW = 1_767_225_600.0
"""2026-01-01 00:00:00 UTC: the fixed clock of the snapshot tests."""


def fake_config(tmp_path: Path, theme: str = "bgconsole-dark") -> Config:
    """A config whose servers are never contacted (fixed-data tests)."""
    data = config_data(
        redis_url="redis://127.0.0.1:9/0",
        blue_url="http://127.0.0.1:9",
        green_url="http://127.0.0.1:9",
        console={"name": "shop", "theme": theme},
        flags={
            "uploads": {"description": "Accept photo uploads"},
            "banner": {"description": "New-look banner on the home page"},
        },
    )
    return write_config(tmp_path / "bgconsole.toml", data)


def _host(colour: Colour, name: str, up: bool, base: float, version: str) -> HostHealth:
    history = tuple(
        Probe(NOW - 30 + i, True, 200, round(base + (i * 7 % 11) / 2, 1), version)
        for i in range(30)
    )
    last = history[-1]
    if not up:
        failed = Probe(NOW, False, 500, 3.0, None, "HTTP 500 (want 200)")
        history = (*history, failed)
        last = failed
    return HostHealth(colour, name, f"http://{name}:3000", up, last, 0 if up else 3, 5, history)


def fixed_report() -> StatusReport:
    """Blue live and healthy on two hosts; green degraded (one host down)."""
    blue = (
        _host(Colour.BLUE, "blue-1", True, 4.0, "1.4.2"),
        _host(Colour.BLUE, "blue-2", True, 5.0, "1.4.2"),
    )
    green = (
        _host(Colour.GREEN, "green-1", True, 3.0, "1.5.0"),
        _host(Colour.GREEN, "green-2", False, 3.5, "1.5.0"),
    )
    health = HealthSnapshot(
        NOW,
        {
            Colour.BLUE: EnvHealth(Colour.BLUE, Verdict.HEALTHY, blue),
            Colour.GREEN: EnvHealth(Colour.GREEN, Verdict.DEGRADED, green),
        },
    )
    return StatusReport(
        at=NOW,
        health=health,
        active=ActiveState(Colour.BLUE, 7, NOW - 180, "alice@jump", "release 1.4.2"),
        armed=True,
        agents=(AgentHeartbeat(NOW - 0.4, "agent@router", 4242, True, True, "builtin", "blue"),),
        locks=(),
        control_latency_ms=0.4,
        control_error=None,
        router=RouterState("builtin", Colour.BLUE, detail="all traffic to blue"),
        router_error=None,
        failover=Readiness(active=True, why_not=None, alarm=None),
    )


def fixed_flags() -> FlagTable:
    """Two declared flags (one differs) and one undeclared key."""
    on, off = FlagValue("on", "ON"), FlagValue("off", "OFF")
    return FlagTable(
        (
            FlagRow(
                "uploads",
                "flag:uploads",
                True,
                "Accept photo uploads",
                values={Colour.BLUE: on, Colour.GREEN: on},
            ),
            FlagRow(
                "banner",
                "flag:banner",
                True,
                "New-look banner on the home page",
                values={Colour.BLUE: off, Colour.GREEN: on},
            ),
            FlagRow(
                "legacy",
                "flag:legacy",
                False,
                values={Colour.BLUE: FlagValue("off", "maybe"), Colour.GREEN: off},
            ),
        )
    )


def fixed_events() -> list[Event]:
    """A short audit trail, oldest first."""
    return [
        Event("1-0", NOW - 3600, "deploy", "bob@jump", "deploy 1.5.0 -> green: ok"),
        Event("2-0", NOW - 600, "flag", "bob@jump", "green: banner off -> on"),
        Event(
            "3-0",
            NOW - 180,
            "switch",
            "alice@jump",
            "switch green -> blue (epoch 7) verified",
            reason="release 1.4.2",
        ),
        Event(
            "4-0",
            NOW - 60,
            "switch",
            "carol@ops",
            "switch blue -> green refused: green is not healthy",
            outcome="refused",
        ),
        Event(
            "5-0",
            NOW - 20,
            "failover",
            "agent:router:4242",
            "failover green -> blue (epoch 8)",
            before="green",
            after="blue",
            reason=(
                "live green is down (1/1 hosts down, 2+ consecutive failures); "
                "stand-by blue is healthy"
            ),
            details={
                "green/green-1": "2 failures: HTTP 500 (want 200) in 18 ms",
                "blue": "healthy 2/2 hosts up",
            },
        ),
    ]


class FixedServices(Services):
    """Services that answer with fixed data and never touch the network."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.report = fixed_report()
        self.table = fixed_flags()
        self.event_list = fixed_events()
        self.clock = lambda: NOW

    async def status(self) -> StatusReport:
        return self.report

    async def flag_table(self) -> FlagTable:
        return self.table

    async def live(self) -> Colour | None:
        return Colour.BLUE

    async def events(self, limit: int = 50) -> list[Event]:
        return self.event_list[-limit:]

    def follow_events(self, after: str = "$") -> AsyncIterator[Event]:
        return _never()


async def _never() -> AsyncIterator[Event]:
    """An event stream where nothing new ever happens."""
    await asyncio.Event().wait()
    nothing: tuple[Event, ...] = ()
    for event in nothing:  # never runs; makes this an async generator of Event
        yield event


def fixed_app(tmp_path: Path, theme: str = "bgconsole-dark") -> ConsoleApp:
    """A console on fixed data (no live updates), for layout and snapshot tests."""
    services = FixedServices.build(fake_config(tmp_path, theme))
    return ConsoleApp(
        services, dashboard=lambda s: DashboardScreen(s, poll_interval=60, live_updates=False)
    )


def live_app(config: Config, poll_interval: float = 0.2) -> ConsoleApp:
    """A console on real services, polling fast."""
    return ConsoleApp(
        Services.build(config),
        dashboard=lambda s: DashboardScreen(s, poll_interval=poll_interval, flags_interval=0.5),
    )


async def wait_for(
    pilot: Pilot[None], condition: Callable[[], object], limit: float = 10.0, what: str = ""
) -> None:
    """Let the app run until ``condition()`` is truthy; fail with ``what`` after ``limit`` s."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what or condition}")
        await pilot.pause(0.05)
    await asyncio.sleep(0)


def screen_text(app: App[Any]) -> list[str]:
    """What the terminal shows now, one string per row (every layer: dialogs, toasts)."""
    strips = app.screen._compositor.render_strips()
    return [strip.text for strip in strips]
