"""A lock that expires under its holder (frozen, or Redis lost it) stops the holder."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from servers import RedisServer

from console.core.control import ControlPlane
from console.core.errors import LockLost
from console.core.models import LockInfo

pytestmark = pytest.mark.integration


async def test_a_holder_whose_lock_was_taken_stops_and_says_so(redis_server: RedisServer) -> None:
    first = ControlPlane(redis_server.url, "locks", timeout=0.5, actor="alice@j1")
    second = ControlPlane(redis_server.url, "locks", timeout=0.5, actor="bob@j2")
    steps_done = 0
    taken: list[LockInfo] = []

    async def deploy() -> None:
        nonlocal steps_done
        async with first.holding("deploy:green", "deploy v2", ttl=0.6, renew_every=0.2) as held:
            # Redis is frozen longer than the TTL: the lock expires server-side...
            assert redis_server.pid is not None
            os.kill(redis_server.pid, signal.SIGSTOP)
            await asyncio.sleep(0.9)
            os.kill(redis_server.pid, signal.SIGCONT)
            await asyncio.sleep(0.05)
            # ... and someone else takes it meanwhile.
            taken.append(await second.acquire_lock("deploy:green", "deploy v3", ttl=30))
            for _ in range(20):
                await held.verify()  # every step checks before acting
                steps_done += 1
                await asyncio.sleep(0.05)

    try:
        with pytest.raises(LockLost) as caught:
            await deploy()
        assert "lock lost" in str(caught.value)
        assert steps_done < 20  # stopped at a safe point, not after finishing
        # The lock is bob's and stays bob's: alice's exit did not release it.
        info = await second.lock_info("deploy:green")
        assert info is not None
        assert info.holder == "bob@j2"
        assert await second.release_lock(taken[0])
        events = await second.events(10)
        assert any(e.kind == "lock" and e.outcome == "lost" for e in events), events
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_block_that_finishes_without_its_lock_raises(redis_server: RedisServer) -> None:
    control = ControlPlane(redis_server.url, "locks", timeout=0.5, actor="alice@j1")

    async def migrate() -> None:
        async with control.holding("migrate", "rows", ttl=5, renew_every=0.1):
            await control._redis.delete(control.key("lock:migrate"))  # Redis lost it
            await asyncio.sleep(0.4)  # the renewer notices; the block never checks

    try:
        with pytest.raises(LockLost):
            await migrate()
    finally:
        await control.aclose()
