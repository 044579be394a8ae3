"""A watch-only console: every change to production is refused where the operator looks."""

from __future__ import annotations

import pytest
from configs import config_data
from ui_support import live_app, wait_for

from console.core.config import Config, parse_config
from console.core.errors import ReadOnly
from console.core.migrate.plan import MigrationRequest
from console.core.models import Colour
from console.core.services import Services
from console.screens.dashboard import DashboardScreen
from console.widgets.status_header import StatusHeader


def read_only_config() -> Config:
    data = config_data(
        redis_url="redis://127.0.0.1:1/0",
        blue_url="http://127.0.0.1:1",
        green_url="http://127.0.0.1:2",
        console={"name": "shop", "read_only": True},
    )
    return parse_config(data)


async def test_every_mutating_service_call_is_refused() -> None:
    config = read_only_config()
    services = Services.build(config)
    try:
        assert services.read_only
        calls = [
            services.switch(Colour.GREEN),
            services.set_armed(False),
            services.toggle_flag("uploads", Colour.BLUE),
            services.deploy(Colour.GREEN, ref="v2", live_ok=False),
            services.migrate(MigrationRequest(source=Colour.GREEN, target=Colour.BLUE)),
        ]
        for call in calls:
            with pytest.raises(ReadOnly, match=r"read-only console: .* refused"):
                await call
    finally:
        await services.aclose()


async def test_the_header_says_read_only() -> None:
    app = live_app(read_only_config())
    async with app.run_test(size=(120, 35)) as pilot:
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        header = screen.query_one(StatusHeader)
        await wait_for(pilot, lambda: "READ-ONLY" in str(header.render()), 5.0, "READ-ONLY")
