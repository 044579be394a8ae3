"""A front door of three HAProxy instances: a switch reaches all, names a failed one, and
the leader agent converges it when it comes back."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import httpx
import pytest
from fault_support import eventually
from servers import HAProxyFactory, HAProxyServer, HttpBackend, HttpBackendFactory, RedisServer

from console.core.agent import Agent
from console.core.agent_log import AgentLog
from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import VerificationFailed
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.router.factory import build_router
from console.core.switching import perform_switch

pytestmark = pytest.mark.integration


def config_for(redis: RedisServer, blue: HttpBackend, green: HttpBackend,
               fleet: list[HAProxyServer]) -> Config:  # fmt: skip
    return parse_config(
        {
            "console": {"name": "doors"},
            "control": {"redis": redis.url, "timeout": 0.5},
            "router": [
                {
                    "kind": "haproxy",
                    "name": f"lb{i + 1}",
                    "public_url": f"http://127.0.0.1:{ha.port}",
                    "socket": str(ha.socket_path),
                    "state_file": str(ha.state_file),
                    "confirm_timeout": 2.0,
                    "verify_requests": 1,
                }
                for i, ha in enumerate(fleet)
            ],
            "failover": {"interval": 0.1, "timeout": 0.3, "fall": 2, "rise": 1, "min_dwell": 0},
            "agent": {"heartbeat_interval": 0.2, "leader_lease": 2.0},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "doors", timeout=0.5, actor="tester@ci")
    await plane.ensure_active(Colour.BLUE)
    yield plane
    await plane.aclose()


async def served(ha: HAProxyServer) -> str | None:
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{ha.port}/", timeout=2.0)
            colour: str | None = response.headers.get("x-bg-env")
            return colour
    except httpx.HTTPError:
        return None


async def test_switch_reaches_every_router_names_the_failed_one_and_the_agent_converges_it(
    redis_server: RedisServer,
    control: ControlPlane,
    http_backend_factory: HttpBackendFactory,
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = http_backend_factory("blue"), http_backend_factory("green")
    fleet = [haproxy_factory(blue, green) for _ in range(3)]
    config = config_for(redis_server, blue, green, fleet)
    router = build_router(config, control)
    health = HealthChecker(config, hysteresis=False)
    try:
        result = await perform_switch(config, control, router, health, to=Colour.GREEN)
        assert result.verification is not None
        assert len(result.verification.answers) == 3  # one through each front door
        assert [await served(ha) for ha in fleet] == ["green"] * 3

        fleet[2].stop()  # lb3 is down during the next switch
        with pytest.raises(VerificationFailed) as caught:
            await perform_switch(config, control, router, health, to=Colour.BLUE)
        assert "2/3 routers switched to blue" in str(caught.value)
        assert "lb3" in str(caught.value)
        assert [await served(ha) for ha in fleet[:2]] == ["blue", "blue"]
        state = await router.state()
        assert state.live is None  # one router cannot be read: not "blue"
        assert "lb3 ERROR" in state.detail
    finally:
        await health.aclose()
        await router.aclose()

    # lb3 comes back from its state file (green); the leader agent converges it.
    agent = Agent(config, log=AgentLog("logfmt", io.StringIO()), grace=0.5)
    task = asyncio.create_task(agent.run())
    try:
        fleet[2].start()

        async def converged() -> bool:
            return await served(fleet[2]) == "blue"

        await eventually(converged, limit=8.0)
        check = build_router(config, control)
        try:
            assert (await check.state()).live is Colour.BLUE
        finally:
            await check.aclose()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_several_routers_are_validated_by_key_path() -> None:
    base = {
        "console": {"name": "doors"},
        "control": {"redis": "redis://127.0.0.1:6379/0"},
        "env": {"blue": {"url": "http://127.0.0.1:1"}, "green": {"url": "http://127.0.0.1:2"}},
    }
    from console.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"router\[1\]\.kind"):
        parse_config({**base, "router": [{"kind": "haproxy", "socket": "/x"}, {"kind": "nope"}]})
    with pytest.raises(ConfigError, match="used twice"):
        parse_config(
            {**base, "router": [{"kind": "command", "name": "a", "switch_command": "x"},
                                {"kind": "command", "name": "a", "switch_command": "y"}]}
        )  # fmt: skip
