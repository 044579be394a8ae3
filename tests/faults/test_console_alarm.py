"""The console at 3 a.m.: live down and nothing will fail over is an alarm within 2 s."""

from __future__ import annotations

import time

import pytest
from fault_support import agent_config, eventually, start_agent
from servers import HttpBackendFactory, RedisServer
from ui_support import live_app, wait_for

from console.core.control import ControlPlane
from console.screens.dashboard import DashboardScreen
from console.widgets.status_header import StatusHeader

pytestmark = pytest.mark.integration


async def test_disarmed_and_live_down_is_an_alarm_on_the_console_within_2_s(
    redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> None:
    blue, green = http_backend_factory("blue"), http_backend_factory("green")
    config = agent_config(redis_server.url, blue, green)
    agent = await start_agent(config)
    control = ControlPlane(redis_server.url, "shop", timeout=0.5, actor="tester@ci")
    try:
        await eventually(lambda: _true(agent.agent.leader))
        await control.set_armed(False, reason="maintenance")
        app = live_app(config, poll_interval=0.5)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            await wait_for(pilot, lambda: screen.report is not None, what="first status")
            header = screen.query_one(StatusHeader)
            assert "ALARM" not in str(header.render())
            blue.kill()
            killed = time.monotonic()
            await wait_for(pilot, lambda: "ALARM" in str(header.render()), 5.0, "the alarm")
            seen_after = time.monotonic() - killed
            text = str(header.render())
            assert "live blue is DOWN and nothing will fail over" in text
            assert "disarmed" in text
            assert seen_after < 2.5, f"alarm shown {seen_after:.2f} s after the kill"
    finally:
        await control.aclose()
        await agent.stop()


async def _true(value: bool) -> bool:
    return value
