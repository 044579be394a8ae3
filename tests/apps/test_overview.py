"""The overview of many apps, driven with Pilot against a real control-plane Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from servers import RedisServer, free_port
from textual.widgets import DataTable, Static

from console.core.apps import load_apps
from console.core.control import ControlPlane
from console.core.models import Colour
from console.overview import OverviewApp

pytestmark = pytest.mark.integration


def write_apps(directory: Path, redis_url: str, names: list[str]) -> None:
    for name in names:
        data = {
            "console": {"name": name},
            "control": {"redis": redis_url, "timeout": 0.5},
            "router": {"kind": "builtin", "listen": f"127.0.0.1:{free_port()}"},
            "env": {"blue": {"url": "http://127.0.0.1:1"}, "green": {"url": "http://127.0.0.1:2"}},
        }
        (directory / f"{name}.toml").write_text(tomli_w.dumps(data))
    (directory / "zz-broken.toml").write_text("[console]\nname = 3\n")


async def test_overview_shows_every_app_and_enter_opens_the_selected_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    write_apps(tmp_path, redis_server.url, ["blog", "shop"])
    control = ControlPlane(redis_server.url, "shop", actor="tester@ci")
    try:
        state = await control.ensure_active(Colour.BLUE)
        await control.switch(Colour.GREEN, expected_epoch=state.epoch)
    finally:
        await control.aclose()
    app = OverviewApp(load_apps(tmp_path), refresh_every=0.2)
    async with app.run_test(size=(120, 30)) as pilot:
        for _ in range(50):
            await pilot.pause(0.05)
            if app.summaries:
                break
        table = app.query_one(DataTable)
        assert table.row_count == 3
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(3)]
        assert rows[0][0] == "blog"
        assert rows[1][:3] == ["shop", "GREEN", "2"]
        assert "console.name" in rows[2][7]  # the broken config says why, in its row
        summary = str(app.query_one("#summary", Static).render())
        assert "3 apps" in summary
        assert "1 need attention" in summary
        await pilot.press("down")
        await pilot.press("enter")
    assert app.return_value == tmp_path / "shop.toml"
