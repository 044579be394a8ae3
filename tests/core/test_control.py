"""The control plane against a real redis-server: CAS switching, events, locks, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from servers import RedisServer

from console.core.control import ControlPlane
from console.core.errors import ConflictError, ControlPlaneUnavailable, LockHeld
from console.core.models import AgentHeartbeat, Colour


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "t", timeout=1.0, actor="alice@jump")
    yield plane
    await plane.aclose()


async def test_first_colour_is_initialised_once(control: ControlPlane) -> None:
    assert await control.active() is None
    state = await control.ensure_active(Colour.BLUE)
    assert (state.colour, state.epoch) == (Colour.BLUE, 1)
    again = await control.ensure_active(Colour.GREEN)
    assert (again.colour, again.epoch) == (Colour.BLUE, 1)


async def test_switch_bumps_epoch_and_records_who(control: ControlPlane) -> None:
    state = await control.ensure_active(Colour.BLUE)
    after = await control.switch(Colour.GREEN, expected_epoch=state.epoch, reason="release 2")
    assert (after.colour, after.epoch) == (Colour.GREEN, 2)
    active = await control.active()
    assert active is not None
    assert (active.colour, active.actor, active.reason) == (Colour.GREEN, "alice@jump", "release 2")
    last = (await control.events(limit=1))[0]
    assert (last.kind, last.before, last.after, last.outcome) == ("switch", "blue", "green", "ok")
    assert last.actor == "alice@jump"
    assert last.reason == "release 2"


async def test_two_concurrent_writers_exactly_one_wins(redis_server: RedisServer) -> None:
    alice = ControlPlane(redis_server.url, "t", actor="alice@a")
    bob = ControlPlane(redis_server.url, "t", actor="bob@b")
    try:
        start = await alice.ensure_active(Colour.BLUE)
        results = await asyncio.gather(
            alice.switch(Colour.GREEN, expected_epoch=start.epoch, reason="a"),
            bob.switch(Colour.GREEN, expected_epoch=start.epoch, reason="b"),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, ConflictError)]
        assert len(wins) == 1
        assert len(losses) == 1
        assert "epoch 2" in str(losses[0])
        events = await alice.events(limit=10)
        outcomes = sorted(e.outcome for e in events if e.kind == "switch")
        assert outcomes == ["conflict", "ok"]
        active = await bob.active()
        assert active is not None
        assert active.epoch == 2
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_events_round_trip_and_follow(control: ControlPlane) -> None:
    await control.record("deploy", "deploy 1.2 to green", before="1.1", after="1.2",
                         details={"ref": "v1.2"})  # fmt: skip
    events = await control.events()
    assert events[-1].summary == "deploy 1.2 to green"
    assert events[-1].details == {"ref": "v1.2"}
    seen: list[str] = []

    async def follow() -> None:
        async for event in control.follow_events(after=events[-1].id, block_ms=100):
            seen.append(event.summary)
            if len(seen) == 2:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await control.record("flag", "one")
    await control.record("flag", "two")
    await asyncio.wait_for(task, 5)
    assert seen == ["one", "two"]


async def test_notifications_reach_subscribers(control: ControlPlane) -> None:
    received: list[str] = []

    async def listen() -> None:
        async for note in control.notifications():
            received.append(note.kind)
            if note.kind == "switch":
                return

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.2)  # let the subscription settle before publishing
    state = await control.ensure_active(Colour.BLUE)
    await control.switch(Colour.GREEN, expected_epoch=state.epoch)
    await asyncio.wait_for(task, 5)
    assert "switch" in received


async def test_lock_shows_holder_and_releases(redis_server: RedisServer) -> None:
    alice = ControlPlane(redis_server.url, "t", actor="alice@a")
    bob = ControlPlane(redis_server.url, "t", actor="bob@b")
    try:
        lock = await alice.acquire_lock("deploy:green", "deploy v2", ttl=30)
        with pytest.raises(LockHeld, match=r"held by alice@a for 'deploy v2'"):
            await bob.acquire_lock("deploy:green", "deploy v3", ttl=30)
        assert [info.holder for info in await bob.locks()] == ["alice@a"]
        # Only the holder (by token) can release.
        assert await alice.release_lock(lock)
        assert not await alice.release_lock(lock)
        second = await bob.acquire_lock("deploy:green", "deploy v3", ttl=0.2)
        assert second.holder == "bob@b"
        await asyncio.sleep(0.3)
        assert await bob.lock_info("deploy:green") is None  # expired
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_armed_and_heartbeat(control: ControlPlane) -> None:
    assert await control.armed() is True
    await control.set_armed(False, reason="maintenance")
    assert await control.armed() is False
    beat = AgentHeartbeat(time.time(), "agent:x:1", 1, False, True, "builtin", "blue", {})
    await control.heartbeat(beat, ttl=5)
    assert [a.actor for a in await control.agents()] == ["agent:x:1"]
    assert await control.claim_leadership("agent:x:1", 5)
    assert not await control.claim_leadership("agent:y:2", 5)
    assert await control.leader() == "agent:x:1"


async def test_redis_stopped_gives_clear_error_not_hang(redis_server: RedisServer) -> None:
    plane = ControlPlane(redis_server.url, "t", timeout=0.5)
    try:
        await plane.ensure_active(Colour.BLUE)
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(ControlPlaneUnavailable, match=r"control plane redis://127\.0\.0\.1"):
            await plane.active()
        assert time.monotonic() - started < 5
        redis_server.start()
        # The same client recovers once Redis is back.
        for _ in range(50):
            try:
                await plane.ping()
                break
            except ControlPlaneUnavailable:
                await asyncio.sleep(0.1)
        assert await plane.active() is None  # no persistence: a fresh Redis
    finally:
        await plane.aclose()


async def test_password_never_in_error(redis_server: RedisServer) -> None:
    plane = ControlPlane("redis://:hunter2@127.0.0.1:1/0", "t", timeout=0.5)
    try:
        with pytest.raises(ControlPlaneUnavailable) as caught:
            await plane.active()
        assert "hunter2" not in str(caught.value)
        assert "***" in str(caught.value)
    finally:
        await plane.aclose()


async def test_holding_renews_past_the_ttl_and_releases(control: ControlPlane) -> None:
    async with control.holding("migrate", "rows green -> blue", ttl=0.3, renew_every=0.1):
        await asyncio.sleep(0.8)  # well past the TTL: only renewal keeps it
        info = await control.lock_info("migrate")
        assert info is not None
        assert info.purpose == "rows green -> blue"
    assert await control.lock_info("migrate") is None


async def test_holding_releases_when_the_block_fails(control: ControlPlane) -> None:
    with pytest.raises(RuntimeError):
        async with control.holding("deploy:blue", "x", ttl=30, renew_every=10):
            raise RuntimeError("step failed")
    assert await control.lock_info("deploy:blue") is None


async def test_quiet_follow_with_a_short_timeout_is_not_an_outage(
    redis_server: RedisServer,
) -> None:
    plane = ControlPlane(redis_server.url, "t", timeout=0.3)
    seen: list[str] = []

    async def follow() -> None:
        async for event in plane.follow_events():
            seen.append(event.summary)
            return

    try:
        task = asyncio.create_task(follow())
        await asyncio.sleep(1.2)  # several blocks longer than the socket timeout
        assert not task.done()
        await plane.record("flag", "late")
        await asyncio.wait_for(task, 5)
        assert seen == ["late"]
        assert await plane.agents() == []
    finally:
        await plane.aclose()
