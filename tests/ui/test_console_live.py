"""The console against real services: the demo sandbox end to end, and Redis going away."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from configs import config_data, write_config
from servers import HttpBackendFactory, RedisServer, SshServer
from ui_support import live_app, wait_for

from console.core.config import load_config
from console.core.control import ControlPlane
from console.core.models import Colour
from console.demo.sandbox import Sandbox
from console.screens.confirm import ConfirmScreen
from console.screens.dashboard import DashboardScreen
from console.screens.flags import FlagsScreen
from console.screens.logs import LogsScreen
from console.widgets.env_panel import EnvPanel
from console.widgets.flag_grid import FlagGrid
from console.widgets.log_pane import LogPane
from console.widgets.status_header import StatusHeader

pytestmark = pytest.mark.integration


def _dashboard(app: object) -> DashboardScreen:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, DashboardScreen)
    return screen


def _header_text(screen: DashboardScreen) -> str:
    return str(screen.query_one(StatusHeader).render())


async def test_switch_and_flag_through_the_console(tmp_path: Path) -> None:
    async with Sandbox(tmp_path / "sandbox", traffic=False) as sandbox:
        config = load_config(sandbox.config_path)
        control = ControlPlane.from_config(config.control, config.console.name)
        blue_flags = aioredis.Redis.from_url(config.env(Colour.BLUE).flags_redis or "")
        try:
            app = live_app(config)
            async with app.run_test(size=(120, 40)) as pilot:
                dash = _dashboard(app)
                await wait_for(
                    pilot,
                    lambda: (
                        dash.report is not None
                        and dash.report.active is not None
                        and dash.report.health.verdict(Colour.GREEN) == "healthy"
                    ),
                    what="first status with both colours healthy",
                )
                assert "LIVE BLUE" in _header_text(dash)
                assert dash.query_one("#env-blue", EnvPanel).border_title == "BLUE ━ LIVE"

                # s: confirm, switch, verified; the header follows the control plane.
                await pilot.press("s")
                await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
                await pilot.press("y")
                await wait_for(
                    pilot, lambda: "LIVE GREEN" in _header_text(dash), 20, "header LIVE GREEN"
                )
                active = await control.active()
                assert active is not None
                assert active.colour is Colour.GREEN
                assert dash.query_one("#env-green", EnvPanel).live

                # f: toggle banner on blue (now the stand-by: no confirmation needed).
                await pilot.press("f")
                await wait_for(pilot, lambda: isinstance(app.screen, FlagsScreen), what="flags")
                grid = app.screen.query_one(FlagGrid)
                await wait_for(pilot, lambda: grid.row_count >= 2, what="flag rows")
                assert await blue_flags.get("flag:banner") == b"OFF"
                row = next(i for i, r in enumerate(grid.table.rows) if r.name == "banner")  # type: ignore[union-attr]
                grid.move_cursor(row=row, column=1)
                await pilot.press("enter")
                for _ in range(100):
                    if await blue_flags.get("flag:banner") == b"ON":
                        break
                    await pilot.pause(0.05)
                assert await blue_flags.get("flag:banner") == b"ON"
                events = await control.events(limit=5)
                assert any(e.kind == "flag" and "banner" in e.summary for e in events)

        finally:
            await blue_flags.aclose()
            await control.aclose()


async def test_control_plane_down_shows_degraded_and_health_keeps_updating(
    tmp_path: Path, redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> None:
    blue, green = http_backend_factory("blue", "1.0.0"), http_backend_factory("green", "1.1.0")
    config = write_config(
        tmp_path / "bgconsole.toml",
        config_data(redis_url=redis_server.url, blue_url=blue.url, green_url=green.url),
    )
    app = live_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = _dashboard(app)
        await wait_for(pilot, lambda: dash.report is not None, what="first status")
        assert "control plane ok" in _header_text(dash)
        # A new event reaches the recent-events strip live (quiet XREADs must not error).
        control = ControlPlane.from_config(config.control, config.console.name)
        try:
            await pilot.pause(1.5)
            await control.record("test", "an operator did something")
        finally:
            await control.aclose()
        await wait_for(
            pilot,
            lambda: any(e.summary == "an operator did something" for e in dash.events),
            5,
            "event in the strip",
        )
        # Someone else's deploy in progress shows in the header, with who.
        other = ControlPlane(redis_server.url, config.console.name, actor="bob@jump2")
        try:
            await other.acquire_lock("deploy:green", "deploy v2", ttl=60)
            await pilot.press("r")
            await wait_for(
                pilot,
                lambda: "IN PROGRESS deploy v2 by bob@jump2" in _header_text(dash),
                10,
                "the deploy lock in the header: " + _header_text(dash),
            )
        finally:
            await other.aclose()

        redis_server.stop()
        await wait_for(
            pilot, lambda: "UNAVAILABLE" in _header_text(dash), 15, "control plane UNAVAILABLE"
        )
        blue.set_mode("500")
        await wait_for(
            pilot,
            lambda: dash.report is not None and dash.report.health.verdict(Colour.BLUE) == "down",
            15,
            "blue down while the control plane is down",
        )
        table_text = str(
            dash.query_one("#env-blue", EnvPanel).query_one("HostTable").render_line(1)
        )
        assert "DOWN" in table_text
        # s without a readable live colour says why instead of crashing.
        await pilot.press("s")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DashboardScreen)
        assert app.is_running


async def test_logs_screen_follows_over_ssh_and_closes_on_leave(
    tmp_path: Path, ssh_server: SshServer
) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(5)))
    data = config_data(
        redis_url="redis://127.0.0.1:1/0",
        blue_url="http://127.0.0.1:1",
        green_url="http://127.0.0.1:2",
        ssh={"known_hosts": str(ssh_server.known_hosts_path), "connect_timeout": 3.0},
        control={"redis": "redis://127.0.0.1:1/0", "timeout": 0.5},
    )
    data["env"]["blue"] = {
        "hosts": [
            {
                "name": "app1",
                "url": "http://127.0.0.1:1",
                "ssh": ssh_server.target,
                "identity": str(ssh_server.client_key_path),
                "logs": {"app": f"tail -F {log}"},
            }
        ]
    }
    config = write_config(tmp_path / "bgconsole.toml", data)
    app = live_app(config, poll_interval=5)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen), what="logs screen")
        logs_screen = app.screen
        pane = logs_screen.query_one(LogPane)
        await wait_for(pilot, lambda: "blue/app1:app | line 4" in pane.lines, 15, "backlog")
        with log.open("a") as f:
            f.write("fresh line\n")
        await wait_for(pilot, lambda: "blue/app1:app | fresh line" in pane.lines, 15, "new line")
        # green has no hosts with logs: a marker line says so instead of a crash.
        await pilot.press("g")
        await wait_for(pilot, lambda: pane.markers > 0, 10, "marker for green")
        await pilot.press("b")
        await wait_for(pilot, lambda: any("line 4" in x for x in pane.lines), 15, "blue again")
        await pilot.press("escape")
        await wait_for(
            pilot,
            lambda: not [w for w in app.workers if w.node is logs_screen and w.is_running],
            what="log worker cancelled",
        )
        assert isinstance(app.screen, DashboardScreen)
