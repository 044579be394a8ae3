"""A colour of 20 hosts on the dashboard: a summary line, the problem hosts first."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from ui_support import NOW, FixedServices, fake_config, fixed_report, screen_text, wait_for

from console.app import ConsoleApp
from console.core.models import Colour, EnvHealth, HealthSnapshot, HostHealth, Probe, Verdict
from console.screens.dashboard import DashboardScreen
from console.widgets.env_panel import EnvPanel
from console.widgets.host_table import HostTable

SIZES = [(80, 24), (120, 35), (200, 60)]
DOWN = {"g-07", "g-12"}


def _host(colour: Colour, name: str, up: bool, version: str) -> HostHealth:
    history = tuple(Probe(NOW - 10 + i, True, 200, 4.0 + i % 3, version) for i in range(10))
    last = history[-1]
    if not up:
        last = Probe(NOW, False, None, None, None, "connection refused")
        history = (*history, last)
    return HostHealth(colour, name, f"http://{name}:3000", up, last, 0 if up else 3, 5, history)


def fleet_services(tmp_path: Path) -> FixedServices:
    """Blue: 20 hosts up on 1.4.2. Green: 20 hosts, g-07 and g-12 down, g-15 on 1.5.1."""
    blue = tuple(_host(Colour.BLUE, f"b-{i:02}", True, "1.4.2") for i in range(1, 21))
    green = tuple(
        _host(Colour.GREEN, f"g-{i:02}", f"g-{i:02}" not in DOWN, "1.5.1" if i == 15 else "1.5.0")
        for i in range(1, 21)
    )
    services = FixedServices.build(fake_config(tmp_path))
    assert isinstance(services, FixedServices)
    health = HealthSnapshot(
        NOW,
        {
            Colour.BLUE: EnvHealth(Colour.BLUE, Verdict.HEALTHY, blue),
            Colour.GREEN: EnvHealth(Colour.GREEN, Verdict.DEGRADED, green),
        },
    )
    services.report = dataclasses.replace(fixed_report(), health=health)
    return services


def fleet_app(tmp_path: Path) -> ConsoleApp:
    return ConsoleApp(
        fleet_services(tmp_path),
        dashboard=lambda s: DashboardScreen(s, poll_interval=60, live_updates=False),
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_twenty_hosts_collapse_to_a_summary_with_the_down_hosts_first(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    app = fleet_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        dash = app.screen
        await wait_for(pilot, lambda: dash.query_one("#env-green", EnvPanel).env is not None)
        await pilot.pause(0.2)
        green = dash.query_one("#env-green", EnvPanel).query_one(HostTable)
        blue = dash.query_one("#env-blue", EnvPanel).query_one(HostTable)
        lines = [green.render_line(y).text for y in range(green.size.height)]
        # Every line the table wants is on screen (none cut by the panel or max-height).
        assert green.size.height == green.get_content_height(app.size, app.size, green.size.width)
        # A mixed fleet's versions are never cut: on a line of their own when narrow.
        if size[0] >= 200:
            assert lines[0] == (
                "20 hosts: 18 up, 2 DOWN (g-07, g-12) · versions 1.5.0 (19), 1.5.1 (1)"
            )
            lines.insert(1, "versions 1.5.0 (19), 1.5.1 (1)")
        else:
            assert lines[0].startswith("20 hosts: 18 up, 2 DOWN")
        assert lines[1].rstrip() == "versions 1.5.0 (19), 1.5.1 (1)"
        assert "HOST" in lines[2]
        # The down hosts first, whatever their place in the config.
        assert lines[3].split()[0] == "g-07"
        assert lines[4].split()[0] == "g-12"
        assert "DOWN" in lines[3]
        assert "connection refused" in lines[3] or size[0] < 120
        assert lines[-1].startswith("… ")
        assert "more: all up" in lines[-1]
        shown = sum(1 for line in lines if line.startswith("g-"))
        assert lines[-1].startswith(f"… {20 - shown} more")
        assert shown == (3 if size[1] < 32 else 8) - 1
        blue_lines = [blue.render_line(y).text for y in range(blue.size.height)]
        assert blue_lines[0].startswith("20 hosts: 20 up · version 1.4.2")
        text = "\n".join(screen_text(app))
        # Both panels and the rest of the dashboard still fit (activity, events, footer).
        assert "20 hosts: 18 up, 2 DOWN" in text
        assert "20 hosts: 20 up" in text
        assert screen_text(app)[-1].strip()  # the footer row is drawn
        assert "versions 1.5.0 (19), 1.5.1 (1)" in text


async def test_a_few_hosts_keep_a_row_each(tmp_path: Path) -> None:
    app = ConsoleApp(
        FixedServices.build(fake_config(tmp_path)),
        dashboard=lambda s: DashboardScreen(s, poll_interval=60, live_updates=False),
    )
    async with app.run_test(size=(120, 35)) as pilot:
        dash = app.screen
        await wait_for(pilot, lambda: dash.query_one("#env-green", EnvPanel).env is not None)
        await pilot.pause(0.2)
        green = dash.query_one("#env-green", EnvPanel).query_one(HostTable)
        assert green.summary is None
        lines = [green.render_line(y).text for y in range(green.size.height)]
        assert [line.split()[0] for line in lines] == ["HOST", "green-1", "green-2"]
