"""An alarm, not a silence: the banner, and the truth while the control plane is down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ui_support import FixedServices, fake_config, fixed_app, screen_text, wait_for

from console.core.deploy import DeployResult, StepStarted
from console.core.models import Colour
from console.core.readiness import Readiness
from console.core.ssh import OutputLine
from console.screens.confirm import ConfirmScreen
from console.screens.dashboard import DashboardScreen
from console.screens.deploy import DeployRequest
from console.screens.deploy_run import DeployRunScreen
from console.widgets.alarm_banner import AlarmBanner
from console.widgets.env_panel import EnvPanel


async def test_live_down_and_nothing_to_fail_over_is_a_banner(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    services = app.services
    assert isinstance(services, FixedServices)
    alarm = "live blue is DOWN and nothing will fail over: failover is disarmed"
    services.report = replace(
        services.report, failover=Readiness(active=False, why_not="disarmed", alarm=alarm)
    )
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await wait_for(pilot, lambda: dash.report is not None)
        await pilot.pause(0.2)
        banner = dash.query_one(AlarmBanner)
        assert banner.display
        rows = screen_text(app)
        assert any(r.startswith(" ALARM: live blue is DOWN") for r in rows[:4]), rows[:4]
        assert "router" in rows[1]


async def test_control_plane_down_shows_what_the_router_serves(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    services = app.services
    assert isinstance(services, FixedServices)
    services.report = replace(
        services.report,
        active=None,
        armed=None,
        agents=(),
        control_error="control plane redis://127.0.0.1:9/0 did not answer within 2 s",
        control_latency_ms=None,
    )
    async with app.run_test(size=(120, 35)) as pilot:
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await wait_for(pilot, lambda: dash.report is not None)
        await pilot.pause(0.2)
        rows = screen_text(app)
        assert "LIVE BLUE (per the router; control plane unreadable)" in rows[0]
        assert "UNAVAILABLE" in rows[1]
        assert "NO AGENT" not in rows[1]
        assert any("Control plane UNAVAILABLE" in r for r in rows[:4])
        # Blue is still shown serving traffic, not both colours as stand-by.
        assert dash.query_one(f"#env-{Colour.BLUE.value}", EnvPanel).live


class SlowDeploy(FixedServices):
    """A deploy that runs until cancelled."""

    async def deploy(
        self,
        colour: Colour,
        *,
        ref: str | None,
        live_ok: bool,
        reason: str = "",
        on_line: Callable[[OutputLine], None] | None = None,
        on_step: Callable[[StepStarted], None] | None = None,
        **options: object,
    ) -> DeployResult:
        await asyncio.Event().wait()
        raise AssertionError("never")


async def test_q_during_a_running_deploy_asks_first(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    slow = SlowDeploy.build(fake_config(tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        run = DeployRunScreen(slow, DeployRequest(Colour.GREEN, "v2"), live_ok=False)
        await app.push_screen(run)
        await wait_for(pilot, lambda: run.running, what="deploy running")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")
        await pilot.pause(0.1)
        assert app.screen is run
        assert run.running
        assert app.is_running
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asked again")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="back")
        assert app.is_running


async def test_control_plane_lost_keeps_the_last_live_colour_marked(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    services = app.services
    assert isinstance(services, FixedServices)
    async with app.run_test(size=(120, 35)) as pilot:
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await wait_for(pilot, lambda: dash.report is not None)
        # The control plane goes away; the builtin router's state lived there too.
        services.report = replace(
            services.report,
            at=services.report.at + 20,
            active=None,
            armed=None,
            agents=(),
            router=None,
            router_error="control plane unavailable",
            control_error="control plane redis://127.0.0.1:9/0 unavailable",
        )
        await pilot.press("r")
        await wait_for(pilot, lambda: dash.report is services.report, what="the new status")
        await pilot.pause(0.2)
        rows = screen_text(app)
        assert "LIVE BLUE? (last seen 20.0s ago; control plane unreadable)" in rows[0], rows[0]
        assert dash.query_one("#env-blue", EnvPanel).live
        assert not dash.query_one("#env-green", EnvPanel).live
