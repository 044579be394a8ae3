"""The control plane on Redis Sentinel: a primary killed under the agent and mid-switch."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from fault_support import eventually, start_agent
from sentinel_support import MASTER, SentinelSetup
from servers import HttpBackend, HttpBackendFactory, free_port

from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import ConsoleError
from console.core.models import Colour

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    setup = SentinelSetup()
    yield setup
    setup.close()


def sentinel_config(setup: SentinelSetup, blue: HttpBackend, green: HttpBackend) -> Config:
    return parse_config(
        {
            "console": {"name": "ha"},
            "control": {"sentinels": setup.addresses, "master_name": MASTER, "timeout": 0.5},
            "router": {"kind": "builtin", "listen": f"127.0.0.1:{free_port()}"},
            "failover": {"interval": 0.1, "timeout": 0.3, "fall": 2, "rise": 1, "min_dwell": 0},
            "agent": {"heartbeat_interval": 0.2, "leader_lease": 2.0},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )


async def test_agent_follows_a_promoted_replica_and_fails_over_again(
    sentinel: SentinelSetup, http_backend_factory: HttpBackendFactory
) -> None:
    blue, green = http_backend_factory("blue"), http_backend_factory("green")
    config = sentinel_config(sentinel, blue, green)
    agent = await start_agent(config)
    control = ControlPlane.from_config(config.control, "ha", actor="tester@ci")
    try:
        await eventually(lambda: _ready(agent.agent.leader), limit=5.0)
        state = await control.ensure_active(Colour.BLUE)
        state = await control.switch(Colour.GREEN, expected_epoch=state.epoch)
        await asyncio.sleep(0.5)  # replicated
        sentinel.primary.kill()
        sentinel.wait_promoted()

        async def switched_back() -> bool:
            try:
                now = await control.active()
                if now is None:
                    return False
                await control.switch(Colour.BLUE, expected_epoch=now.epoch, reason="after")
            except ConsoleError:
                return False
            return True

        await eventually(switched_back, limit=10.0)  # the client found the new primary

        async def serving_blue() -> bool:
            return await agent.colour() == "blue"

        await eventually(serving_blue, limit=5.0)  # the agent followed it too
        blue.kill()  # and failover still works through the new primary

        async def failed_over() -> bool:
            now = await control.active()
            return now is not None and now.colour is Colour.GREEN and now.kind == "failover"

        await eventually(failed_over, limit=5.0)
    finally:
        await control.aclose()
        await agent.stop()


async def test_an_epoch_lost_in_replication_is_reported_not_accepted(
    sentinel: SentinelSetup, http_backend_factory: HttpBackendFactory
) -> None:
    blue, green = http_backend_factory("blue"), http_backend_factory("green")
    config = sentinel_config(sentinel, blue, green)
    agent = await start_agent(config)
    control = ControlPlane.from_config(config.control, "ha", actor="tester@ci")
    try:
        await eventually(lambda: _ready(agent.agent.leader), limit=5.0)
        state = await control.ensure_active(Colour.BLUE)
        await asyncio.sleep(0.5)  # replicated
        # The replica stops receiving: the next switches exist only on the primary...
        assert sentinel.replica.pid is not None
        os.kill(sentinel.replica.pid, signal.SIGSTOP)
        primary = aioredis.Redis(host="127.0.0.1", port=sentinel.primary.port)
        try:  # cut the link, so nothing written from now on is in flight to it
            await primary.execute_command("CLIENT", "KILL", "TYPE", "replica")  # type: ignore[no-untyped-call]
        finally:
            await primary.aclose()
        state = await control.switch(Colour.GREEN, expected_epoch=state.epoch)
        state = await control.switch(Colour.BLUE, expected_epoch=state.epoch)
        seen = state.epoch

        async def agent_saw() -> bool:
            return agent.agent.max_epoch >= seen

        await eventually(agent_saw, limit=3.0)
        # ... and the primary dies before it could send them.
        sentinel.primary.kill()
        os.kill(sentinel.replica.pid, signal.SIGCONT)
        sentinel.wait_promoted()

        async def reported() -> bool:
            try:
                events = await control.events(50)
            except ConsoleError:
                return False
            return any("state lost" in e.summary for e in events)

        await eventually(reported, limit=10.0)
        now = await control.active()
        assert now is not None
        assert now.epoch > seen  # never backwards for anyone who watched
        assert now.colour is Colour.BLUE  # what the router really serves
    finally:
        await control.aclose()
        await agent.stop()


async def _ready(value: bool) -> bool:
    return value
