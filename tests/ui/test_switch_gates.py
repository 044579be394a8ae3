"""A gate refusing a switch from the console: the operator sees why, and may skip the gates
(recorded), as ``bgconsole switch --skip-gates`` does. Real redis-server, HTTP backends and a
command router behind a front door."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from servers import HttpBackendFactory, RedisServer
from textual.pilot import Pilot
from traffic_helpers import ColourFile, FrontDoor
from ui_support import live_app, screen_text, wait_for

from console.app import ConsoleApp
from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.models import Colour
from console.screens.confirm import ConfirmScreen
from console.screens.dashboard import DashboardScreen

pytestmark = pytest.mark.integration


@pytest.fixture
async def gated(
    redis_server: RedisServer, http_backend_factory: HttpBackendFactory, tmp_path: Path
) -> AsyncIterator[tuple[Config, ColourFile]]:
    blue, green = http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")
    colour_file = ColourFile(tmp_path / "live")
    front = await FrontDoor(
        lambda: blue.address if colour_file.read() == "blue" else green.address
    ).start()
    config = parse_config(
        {
            "console": {"name": "gated-ui"},
            "control": {"redis": redis_server.url, "timeout": 2.0},
            "router": {
                "kind": "command",
                "switch_command": colour_file.switch_command,
                "state_command": colour_file.state_command,
                "public_url": front.url,
                "verify_requests": 2,
                "confirm_timeout": 2.0,
            },
            "failover": {"interval": 0.2, "timeout": 0.5},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
            "hook": [
                {
                    "when": "pre_switch",
                    "name": "smoke",
                    "command": "echo 'checkout: 3 of 5 failed'; exit 3",
                }
            ],
        }
    )
    control = ControlPlane.from_config(config.control, config.console.name, actor="ops@here")
    await control.ensure_active(Colour.BLUE)
    await control.aclose()
    try:
        yield config, colour_file
    finally:
        await front.aclose()


def _confirm_text(app: ConsoleApp) -> str:
    return "\n".join(screen_text(app))


async def _to_gate_prompt(app: ConsoleApp, pilot: Pilot[None]) -> None:
    dash = app.screen
    assert isinstance(dash, DashboardScreen)
    await wait_for(pilot, lambda: dash.report is not None and dash.report.active is not None)
    await pilot.press("s")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="go/no-go")
    await pilot.press("y")
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, ConfirmScreen) and "gate" in _confirm_text(app),
        15,
        "the gate prompt",
    )


async def test_a_refusing_gate_asks_and_declining_changes_nothing(
    gated: tuple[Config, ColourFile],
) -> None:
    config, colour_file = gated
    app = live_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await _to_gate_prompt(app, pilot)
        text = _confirm_text(app)
        assert "Skip the gates and switch?" in text
        assert "smoke: exit 3" in text
        assert "checkout: 3 of" in text  # the gate's own words (wrapped in the dialog)
        assert "5 failed" in text
        assert "--skip-gates" not in text  # the CLI's advice is the button, here
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="back")
    control = ControlPlane.from_config(config.control, config.console.name)
    try:
        active = await control.active()
        assert active is not None
        assert active.colour is Colour.BLUE
        assert colour_file.read() == "blue"
        events = await control.events(limit=5)
        refused = [e for e in events if e.kind == "switch"]
        assert refused
        assert refused[-1].outcome == "refused"
    finally:
        await control.aclose()


async def test_skipping_the_gates_switches_and_is_recorded(
    gated: tuple[Config, ColourFile],
) -> None:
    config, colour_file = gated
    app = live_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await _to_gate_prompt(app, pilot)
        await pilot.press("y")
        control = ControlPlane.from_config(config.control, config.console.name)
        try:
            for _ in range(300):
                active = await control.active()
                if active is not None and active.colour is Colour.GREEN:
                    break
                await pilot.pause(0.05)
            assert active is not None
            assert active.colour is Colour.GREEN
            await wait_for(pilot, lambda: colour_file.read() == "green", what="router on green")
            events = await control.events(limit=10)
            done = [e for e in events if e.kind == "switch" and e.outcome == "ok"]
            assert done, [e.summary for e in events]
            assert "skipped by the operator" in done[-1].details.get("gates", "")
        finally:
            await control.aclose()
