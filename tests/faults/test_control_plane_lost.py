"""Faults of the control plane itself: killed, restarted empty, lost data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from fault_support import Running, agent_config, eventually, start_agent
from servers import HttpBackend, HttpBackendFactory, RedisServer

from console.core.control import ControlPlane
from console.core.models import Colour

pytestmark = pytest.mark.integration


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


@pytest.fixture
async def agents() -> AsyncIterator[list[Running]]:
    running: list[Running] = []
    yield running
    for handle in running:
        await handle.stop()


async def test_failover_works_again_after_the_control_plane_restarts_empty(
    redis_server: RedisServer,
    backends: tuple[HttpBackend, HttpBackend],
    agents: list[Running],
) -> None:
    blue, green = backends
    config = agent_config(redis_server.url, blue, green)
    agent = await start_agent(config)
    agents.append(agent)
    control = ControlPlane(redis_server.url, "shop", timeout=0.5, actor="tester@here")
    try:
        await eventually(lambda: _leader(agent))
        # Switch twice so the epoch is well above what an empty Redis would start at.
        state = await control.active()
        assert state is not None
        state = await control.switch(Colour.GREEN, expected_epoch=state.epoch)
        state = await control.switch(Colour.BLUE, expected_epoch=state.epoch)
        await eventually(lambda: _serving(agent, Colour.BLUE))
        epoch_before = state.epoch

        redis_server.kill()
        await asyncio.sleep(1.0)
        redis_server.start()  # same port, no data
        returned = asyncio.get_running_loop().time()

        # The agent re-seeds: the colour it serves, an epoch above any it has seen.
        await eventually(lambda: _seeded(control, Colour.BLUE, epoch_before), limit=5.0)
        seeded = asyncio.get_running_loop().time() - returned
        assert seeded < 2.0, f"control plane re-seeded only after {seeded:.2f} s"

        async def recorded() -> bool:  # the event follows the re-seed
            events = await control.events(20)
            return any(e.kind == "control" and "state lost" in e.summary for e in events)

        await eventually(recorded, limit=2.0)
        events = await control.events(20)
        lost = [e for e in events if e.kind == "control" and "state lost" in e.summary]
        assert lost, [e.summary for e in events]
        assert "re-seeded BLUE from the router" in lost[-1].summary

        blue.kill()  # the live app dies: failover must work again
        await eventually(lambda: _serving(agent, Colour.GREEN), limit=5.0)
        after = await control.active()
        assert after is not None
        assert after.colour is Colour.GREEN
        assert after.kind == "failover"
        assert after.epoch > epoch_before + 1
    finally:
        await control.aclose()


async def _leader(agent: Running) -> bool:
    return agent.agent.leader and not agent.agent.degraded


async def _serving(agent: Running, colour: Colour) -> bool:
    return agent.agent.serving is colour and await agent.colour() == colour.value


async def _seeded(control: ControlPlane, colour: Colour, above: int) -> bool:
    try:
        state = await control.active()
    except Exception:
        return False
    return state is not None and state.colour is colour and state.epoch > above


Check = Callable[[], Awaitable[bool]]
