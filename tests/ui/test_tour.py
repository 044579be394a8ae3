"""The demo's Tour screen (key t) and the first frame's hint, on fixed data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from servers import find_redis_server, require
from textual.pilot import Pilot
from textual.widgets import Input
from ui_support import FixedServices, fake_config, fixed_app, wait_for

from console.app import ConsoleApp
from console.core.config import load_config
from console.core.services import Services
from console.demo.sandbox import Sandbox
from console.demo.tour import TOUR_STEPS, SandboxInfo
from console.screens.dashboard import DashboardScreen
from console.screens.tour import TourScreen

SANDBOX = Path("/tmp/bgconsole-demo-example")


def sandbox_info() -> SandboxInfo:
    """A sandbox's whereabouts with fixed paths and ports (nothing is contacted)."""
    return SandboxInfo(
        directory=SANDBOX,
        config_path=SANDBOX / "bgconsole.toml",
        router_url="http://127.0.0.1:40000",
        app_urls={"blue": "http://127.0.0.1:40001", "green": "http://127.0.0.1:40002"},
        ssh_targets={"blue": "127.0.0.1:40003", "green": "127.0.0.1:40004"},
        redis_urls={"control": "redis://127.0.0.1:40005/0"},
        agent_log=SANDBOX / "agent.log",
        traffic=True,
        command="bgconsole",
    )


def demo_app(tmp_path: Path) -> ConsoleApp:
    """The console as ``bgconsole demo`` opens it, on fixed data."""
    return ConsoleApp(
        FixedServices.build(fake_config(tmp_path)),
        dashboard=lambda s: DashboardScreen(s, poll_interval=60, live_updates=False),
        tour=sandbox_info(),
    )


def _screen_text(app: ConsoleApp) -> str:
    """Every Static's text on the current screen, to assert on what a person reads."""
    return "\n".join(str(w.render()) for w in app.screen.query("Static"))


async def test_first_frame_names_the_tour_key(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.pause()
        # The footer is cut at 80 columns, so the hint is a notification as well.
        assert "t" in app.screen.active_bindings
        toasts = [str(t.render()) for t in app.screen.query("Toast")]
        assert any("Press t for the tour" in text for text in toasts), toasts


async def test_t_opens_the_tour_with_config_cli_and_every_step(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    async with app.run_test(size=(120, 35), notifications=True) as pilot:
        await pilot.press("t")
        assert isinstance(app.screen, TourScreen)
        text = _screen_text(app)
        assert str(SANDBOX / "bgconsole.toml") in text
        assert f"bgconsole -c {SANDBOX}/bgconsole.toml" in text
        for number, step in enumerate(TOUR_STEPS, 1):
            assert f"{number}. {step.title}" in text
            assert step.keys in text
            assert step.command.format(c="$c") in text
        assert not app.screen.query("Toast"), "the hint is cleared once followed"

        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("t")
        await pilot.press("t")  # t again goes back too
        assert isinstance(app.screen, DashboardScreen)


async def test_t_types_into_a_form_instead_of_opening_the_tour(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.press("d")
        await wait_for(pilot, lambda: app.screen.query("#ref"), what="the deploy form")
        await pilot.press("t", "a", "g")
        ref = app.screen.query_one("#ref", Input)
        assert ref.value == "tag"
        assert not isinstance(app.screen, TourScreen)


async def test_tour_key_stays_hidden_outside_the_demo(tmp_path: Path) -> None:
    app = fixed_app(tmp_path)
    async with app.run_test(size=(120, 35), notifications=True) as pilot:
        await pilot.pause()
        assert "t" not in app.screen.active_bindings
        await pilot.press("t")
        assert isinstance(app.screen, DashboardScreen)
        assert not [t for t in app.screen.query("Toast") if "tour" in str(t.render())]


async def test_tour_steps_walk_the_whole_story_in_order() -> None:
    # The order: good release, switch, bad release live + failover, repair,
    # flag off, migrate back; each step names a console key and what to look at.
    commands = [step.command for step in TOUR_STEPS[1:]]
    assert commands == [
        "{c} deploy green --ref good",
        "{c} switch green --yes",
        "{c} deploy green --ref bad --live",
        "{c} deploy green --ref good && {c} switch green --yes",
        "{c} flag set uploads off --env green --yes",
        "{c} migrate --from green --to blue --yes",
    ]
    first_keys = [step.keys.split(",")[0].split(" ")[0] for step in TOUR_STEPS[1:]]
    assert first_keys == ["d", "s", "d", "d", "f", "m"]
    assert all(step.look for step in TOUR_STEPS)


@pytest.mark.parametrize("size", [(80, 24), (120, 35)])
def test_tour_snapshot(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    async def open_tour(pilot: Pilot[None]) -> None:
        await pilot.pause(0.2)
        await pilot.press("t")
        await pilot.pause(0.2)

    assert snap_compare(demo_app(tmp_path), terminal_size=size, run_before=open_tour)


@pytest.mark.integration
async def test_tour_on_a_real_sandbox_names_its_config_and_prefix(tmp_path: Path) -> None:
    require(find_redis_server(), "redis-server", "redis-server")
    async with Sandbox(tmp_path / "sandbox", traffic=False) as sandbox:
        assert sandbox.info is not None
        services = Services.build(load_config(sandbox.config_path))
        app = ConsoleApp(services, tour=sandbox.info)
        async with app.run_test(size=(120, 35), notifications=True) as pilot:
            dash = app.screen
            assert isinstance(dash, DashboardScreen)
            # The first complete frame: live colour, the agent's heartbeat, both colours.
            await wait_for(
                pilot,
                lambda: dash.report is not None and dash.report.agents and dash.flags,
                what="a complete dashboard",
            )
            await pilot.press("t")
            text = _screen_text(app)
            assert str(sandbox.config_path) in text
            assert sandbox.info.cli_prefix in text
            assert sandbox.info.router_url is not None
            assert sandbox.info.router_url in text
