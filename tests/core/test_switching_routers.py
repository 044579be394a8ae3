"""Switching and failover through real HAProxy and nginx: the same procedure as builtin."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from servers import (
    HAProxyFactory,
    HAProxyServer,
    HttpBackend,
    HttpBackendFactory,
    NginxFactory,
    RedisServer,
)

from console.core.agent import Agent
from console.core.agent_log import AgentLog
from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.router.factory import build_router
from console.core.switching import perform_switch

pytestmark = pytest.mark.integration


def make_config(
    redis_url: str, blue: HttpBackend, green: HttpBackend, front: str, **router: Any
) -> Config:
    return parse_config(
        {
            "console": {"name": "routers"},
            "control": {"redis": redis_url, "timeout": 1.0},
            "router": {"public_url": front, "confirm_timeout": 5.0, **router},
            "failover": {"interval": 0.1, "timeout": 0.3, "fall": 2, "rise": 1, "min_dwell": 0},
            "agent": {"heartbeat_interval": 0.2},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )


def haproxy_config(
    redis_url: str, blue: HttpBackend, green: HttpBackend, haproxy: HAProxyServer
) -> Config:
    return make_config(
        redis_url,
        blue,
        green,
        f"http://127.0.0.1:{haproxy.port}",
        kind="haproxy",
        socket=str(haproxy.socket_path),
        state_file=str(haproxy.state_file),
    )


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "routers", actor="tester@ci")
    await plane.ensure_active(Colour.BLUE)
    yield plane
    await plane.aclose()


async def switch_and_verify(config: Config, control: ControlPlane, to: Colour) -> None:
    router = build_router(config, control)
    health = HealthChecker(config, hysteresis=False)
    try:
        result = await perform_switch(config, control, router, health, to=to, reason="test")
    finally:
        await health.aclose()
        await router.aclose()
    assert result.changed
    assert result.verification is not None
    assert result.verification.served_by_target == config.router.verify_requests
    state = await build_router(config, control).state()
    assert state.live is to


async def served_by(url: str) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(url, timeout=5.0)).headers["x-bg-env"]


async def test_switch_through_haproxy_and_back(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = backends
    haproxy = haproxy_factory(blue, green)
    front = f"http://127.0.0.1:{haproxy.port}"
    config = haproxy_config(redis_server.url, blue, green, haproxy)
    assert await served_by(front) == "blue"
    await switch_and_verify(config, control, Colour.GREEN)
    assert await served_by(front) == "green"
    await switch_and_verify(config, control, Colour.BLUE)
    assert await served_by(front) == "blue"


async def test_switch_through_nginx(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    nginx_factory: NginxFactory,
) -> None:
    blue, green = backends
    nginx = nginx_factory(blue)
    front = f"http://127.0.0.1:{nginx.port}"
    config = make_config(
        redis_server.url,
        blue,
        green,
        front,
        kind="nginx",
        upstream_file=str(nginx.upstream_file),
        reload_command=nginx.reload_command(),
        test_command=nginx.test_command(),
    )
    await switch_and_verify(config, control, Colour.GREEN)
    assert await served_by(front) == "green"


async def test_agent_fails_over_by_driving_haproxy(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = backends
    haproxy = haproxy_factory(blue, green)
    front = f"http://127.0.0.1:{haproxy.port}"
    config = haproxy_config(redis_server.url, blue, green, haproxy)
    log = io.StringIO()
    agent = Agent(config, log=AgentLog("logfmt", log), grace=0.5)
    task = asyncio.create_task(agent.run())
    try:
        blue.set_mode("500")  # a bad release on the live colour
        for _ in range(100):
            if "event=router_switched" in log.getvalue():
                break
            await asyncio.sleep(0.05)
        assert "event=router_switched to=green router=haproxy" in log.getvalue()
        assert await served_by(front) == "green"
        active = await control.active()
        assert active is not None
        assert (active.colour, active.kind) == (Colour.GREEN, "failover")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
