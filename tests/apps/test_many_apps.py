"""Many apps on one control-plane Redis: ``status --all`` and the summaries behind it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import tomli_w
from cli_support import bgconsole
from fault_support import eventually, start_agent
from servers import HttpBackendFactory, RedisServer, free_port

from console.core.apps import AppEntry, load_apps, summarize, summarize_all
from console.core.config import parse_config
from console.core.control import ControlPlane
from console.core.models import Colour

pytestmark = pytest.mark.integration


def app_data(name: str, redis_url: str, blue: str, green: str) -> dict[str, object]:
    return {
        "console": {"name": name},
        "control": {"redis": redis_url, "timeout": 0.5},
        "router": {"kind": "builtin", "listen": f"127.0.0.1:{free_port()}"},
        "failover": {"interval": 0.1, "timeout": 0.3, "fall": 2, "rise": 1, "min_dwell": 0},
        "agent": {"heartbeat_interval": 0.2, "leader_lease": 2.0},
        "env": {"blue": {"url": blue}, "green": {"url": green}},
    }


async def test_status_all_lists_every_app_and_names_a_broken_config(
    tmp_path: Path, redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> None:
    blue, green = http_backend_factory("blue"), http_backend_factory("green")
    apps = tmp_path / "apps"
    apps.mkdir()
    for name in ("shop", "blog"):
        data = app_data(name, redis_server.url, blue.url, green.url)
        (apps / f"{name}.toml").write_text(tomli_w.dumps(data))
    (apps / "broken.toml").write_text("[console\n")
    control = ControlPlane(redis_server.url, "shop", actor="tester@ci")
    try:
        state = await control.ensure_active(Colour.BLUE)
        await control.switch(Colour.GREEN, expected_epoch=state.epoch)
    finally:
        await control.aclose()

    result = bgconsole("status", "--all", "--apps", str(apps))
    assert result.returncode == 1, result.stdout + result.stderr  # the broken config
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["APP", "LIVE", "EPOCH"]
    shop = next(line for line in lines if line.startswith("shop"))
    assert shop.split()[1:3] == ["green", "2"]
    assert any(line.startswith("blog") for line in lines)
    assert any(line.startswith("broken") and "broken.toml" in line for line in lines)

    (apps / "broken.toml").unlink()
    listed = json.loads(bgconsole("status", "--all", "--apps", str(apps), "--json").stdout)
    assert [a["app"] for a in listed] == ["blog", "shop"]
    assert listed[1]["live"] == "green"


async def test_an_app_whose_live_colour_is_down_with_failover_disarmed_is_an_alarm(
    tmp_path: Path, redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> None:
    blue, green = http_backend_factory("blue"), http_backend_factory("green")
    config = parse_config(app_data("shop", redis_server.url, blue.url, green.url))
    agent = await start_agent(config)
    control = ControlPlane(redis_server.url, "shop", actor="tester@ci")
    try:
        await eventually(lambda: _leads(agent.agent.leader))
        await control.set_armed(False, reason="maintenance")
        blue.kill()
        entry = AppEntry(tmp_path / "shop.toml", config)

        async def alarmed() -> bool:
            return (await summarize(entry)).alarm is not None

        await eventually(alarmed, limit=5.0)
        summary = await summarize(entry)
        assert summary.alarm is not None
        assert "live blue is DOWN and nothing will fail over: disarmed" in summary.alarm
        assert summary.trouble
    finally:
        await control.aclose()
        await agent.stop()


async def test_fifty_apps_are_summarised_together(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    for i in range(50):
        data = app_data(f"app{i:02d}", redis_server.url, "http://127.0.0.1:1", "http://127.0.0.1:2")
        (tmp_path / f"app{i:02d}.toml").write_text(tomli_w.dumps(data))
    entries = load_apps(tmp_path)
    started = asyncio.get_running_loop().time()
    summaries = await summarize_all(entries)
    elapsed = asyncio.get_running_loop().time() - started
    assert len(summaries) == 50
    assert all(s.error is None for s in summaries), [s.error for s in summaries if s.error]
    assert elapsed < 10  # generous: a bound, not a benchmark (bench/scale_bench.py times it)


async def _leads(value: bool) -> bool:
    return value
