"""The agent under faults: routers that drift or are down, held failovers, lost state."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fault_support import Running, agent_config, eventually, start_agent
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
from console.core.config import Config
from console.core.control import ControlPlane
from console.core.models import Colour
from console.core.remote_exec import LocalExecutor
from console.core.router.factory import build_router
from console.core.router.haproxy_api import RuntimeApi

pytestmark = pytest.mark.integration


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "shop", timeout=0.5, actor="tester@ci")
    yield plane
    await plane.aclose()


@pytest.fixture
async def agents() -> AsyncIterator[list[Running]]:
    running: list[Running] = []
    yield running
    for handle in running:
        await handle.stop()


class Background:
    """An agent without a builtin proxy (it drives an external router)."""

    def __init__(self, config: Config) -> None:
        self.log = io.StringIO()
        self.agent = Agent(config, log=AgentLog("logfmt", self.log), grace=0.5)
        self.task = asyncio.create_task(self.agent.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def haproxy_router(ha: HAProxyServer) -> dict[str, Any]:
    return {
        "kind": "haproxy",
        "public_url": f"http://127.0.0.1:{ha.port}",
        "socket": str(ha.socket_path),
        "state_file": str(ha.state_file),
        "confirm_timeout": 3.0,
    }


async def served(front: str) -> str | None:
    try:
        async with httpx.AsyncClient() as http:
            colour: str | None = (await http.get(front + "/", timeout=2.0)).headers.get("x-bg-env")
            return colour
    except httpx.HTTPError:
        return None


async def test_leader_repairs_haproxy_drift_once(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = backends
    ha = haproxy_factory(blue, green)
    front = f"http://127.0.0.1:{ha.port}"
    config = agent_config(redis_server.url, blue, green, router=haproxy_router(ha))
    await control.ensure_active(Colour.BLUE)
    agent = Background(config)
    try:
        await eventually(lambda: _leads(agent.agent), limit=5.0)
        # Someone edits HAProxy by hand: green ready, blue in maintenance.
        api = RuntimeApi(str(ha.socket_path), LocalExecutor())
        await api.change("set server app/green state ready")
        await api.change("set server app/blue state maint")
        assert await served(front) == "green"

        async def back_on_blue() -> bool:
            return await served(front) == "blue"

        await eventually(back_on_blue, limit=5.0)
        await asyncio.sleep(1.5)  # several reconcile rounds: no flapping, no more events
        repairs = [e for e in await control.events(50) if "drift repaired" in e.summary]
        assert len(repairs) == 1, [e.summary for e in repairs]
        assert "router serves green, control plane says blue" in repairs[0].summary
    finally:
        await agent.stop()


async def test_leader_repairs_nginx_drift(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    nginx_factory: NginxFactory,
) -> None:
    blue, green = backends
    nginx = nginx_factory(blue)
    front = f"http://127.0.0.1:{nginx.port}"
    router = {
        "kind": "nginx",
        "public_url": front,
        "upstream_file": str(nginx.upstream_file),
        "reload_command": nginx.reload_command(),
        "test_command": nginx.test_command(),
        "confirm_timeout": 3.0,
    }
    config = agent_config(redis_server.url, blue, green, router=router)
    state = await control.ensure_active(Colour.BLUE)
    await control.switch(Colour.GREEN, expected_epoch=state.epoch)  # router not told
    agent = Background(config)
    try:

        async def on_green() -> bool:
            return await served(front) == "green"

        await eventually(on_green, limit=8.0)

        async def recorded() -> bool:  # the event is written once the reload is done
            return any("drift repaired" in e.summary for e in await control.events(50))

        await eventually(recorded, limit=3.0)
        repairs = [e for e in await control.events(50) if "drift repaired" in e.summary]
        assert len(repairs) == 1
    finally:
        await agent.stop()


async def test_failover_while_haproxy_is_down_converges_when_it_returns(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = backends
    ha = haproxy_factory(blue, green)
    front = f"http://127.0.0.1:{ha.port}"
    config = agent_config(redis_server.url, blue, green, router=haproxy_router(ha))
    await control.ensure_active(Colour.BLUE)
    agent = Background(config)
    try:
        await eventually(lambda: _leads(agent.agent), limit=5.0)
        ha.stop()  # the router is down when the live app breaks
        blue.set_mode("500")

        async def failed_over() -> bool:
            state = await control.active()
            return state is not None and state.colour is Colour.GREEN

        await eventually(failed_over, limit=5.0)
        await asyncio.sleep(0.5)
        ha.start()  # comes back from its state file: still blue

        async def converged() -> bool:
            return await served(front) == "green"

        await eventually(converged, limit=8.0)
        router = build_router(config, control)
        try:
            assert (await router.state()).live is Colour.GREEN
        finally:
            await router.aclose()
    finally:
        await agent.stop()


async def test_held_failover_is_recorded_once_per_cause(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    agents: list[Running],
) -> None:
    blue, green = backends
    config = agent_config(redis_server.url, blue, green, min_dwell=30.0)
    state = await control.ensure_active(Colour.BLUE)
    # An operator forces traffic onto a broken colour: the agent is in dwell, then
    # the countdown in its reason changes every probe.
    green.set_mode("500")
    await control.switch(Colour.GREEN, expected_epoch=state.epoch, reason="forced")
    agents.append(await start_agent(config))
    await asyncio.sleep(3.0)
    held = [e for e in await control.events(200) if e.outcome == "held"]
    assert len(held) == 1, [e.summary for e in held]
    assert "in dwell" in held[0].summary


async def test_dwell_is_measured_on_the_control_planes_clock(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    agents: list[Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blue, green = backends
    # This machine's clock runs an hour ahead of the control plane's.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    config = agent_config(redis_server.url, blue, green, min_dwell=30.0)
    state = await control.ensure_active(Colour.GREEN)
    state = await control.switch(Colour.BLUE, expected_epoch=state.epoch)
    assert abs(state.updated_at - (await control.server_time())) < 5  # Redis's time
    agents.append(await start_agent(config))
    blue.kill()
    await asyncio.sleep(2.0)
    now = await control.active()
    assert now is not None
    assert now.colour is Colour.BLUE  # still in dwell: the skew did not end it early


async def test_disarmed_stays_disarmed_after_the_control_plane_loses_its_data(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    agents: list[Running],
) -> None:
    blue, green = backends
    config = agent_config(redis_server.url, blue, green)
    agent = await start_agent(config)
    agents.append(agent)
    await eventually(lambda: _leads(agent.agent))
    await control.set_armed(False, reason="maintenance")
    await eventually(lambda: _disarmed(agent))
    redis_server.kill()
    redis_server.start()  # empty

    async def restored() -> bool:
        try:
            return await control.armed_state() is False
        except Exception:
            return False

    await eventually(restored, limit=5.0)
    blue.kill()
    await asyncio.sleep(1.5)
    state = await control.active()
    assert state is not None
    assert state.colour is Colour.BLUE  # disarmed: no failover
    summaries = [e.summary for e in await control.events(50)]
    assert any("failover disarmed again, as last chosen" in s for s in summaries), summaries


async def test_a_deploy_restart_gets_its_grace_but_a_5xx_does_not(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    agents: list[Running],
) -> None:
    blue, green = backends
    config = agent_config(redis_server.url, blue, green, restart_grace=2.0)
    agent = await start_agent(config)
    agents.append(agent)
    await eventually(lambda: _leads(agent.agent))
    lock = await control.acquire_lock("deploy:blue", "deploy v2", ttl=30)
    blue.stop()  # the deploy restarts the app: connection refused
    await asyncio.sleep(1.2)
    state = await control.active()
    assert state is not None
    assert state.colour is Colour.BLUE  # within the grace
    assert await agent.colour() == "green"  # GETs retried on the stand-by meanwhile

    async def failed_over() -> bool:
        now = await control.active()
        return now is not None and now.colour is Colour.GREEN

    elapsed = await eventually(failed_over, limit=5.0)
    assert elapsed < 3.0  # the grace ran out and the agent acted
    await control.release_lock(lock)


async def _leads(agent: Agent) -> bool:
    return agent.leader and not agent.degraded


async def _disarmed(running: Running) -> bool:
    return not running.agent.armed
