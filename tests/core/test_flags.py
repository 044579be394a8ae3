"""FlagStore against two real redis-servers (one per colour) and a real control plane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from flags_support import APP, db, flag_config
from servers import RedisServer, free_port

from console.core.config import Config
from console.core.control import ControlPlane, Notification
from console.core.errors import BackendError, ConfigError, UsageError
from console.core.flags import FlagStore, FlagValue, state_of
from console.core.models import Colour

pytestmark = pytest.mark.integration

BLUE, GREEN = Colour.BLUE, Colour.GREEN


@pytest.fixture
def config(redis_pair: tuple[RedisServer, RedisServer]) -> Config:
    blue, green = redis_pair
    return flag_config(blue.url, green.url, db(blue.url, 1))


@pytest.fixture
async def control(config: Config) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane.from_config(config.control, APP, actor="tester@box")
    yield plane
    await plane.aclose()


@pytest.fixture
async def store(config: Config, control: ControlPlane) -> AsyncIterator[FlagStore]:
    flags = FlagStore(config, control)
    yield flags
    await flags.aclose()


@pytest.fixture
async def apps(
    redis_pair: tuple[RedisServer, RedisServer],
) -> AsyncIterator[dict[Colour, aioredis.Redis]]:
    """What each colour's application sees: a plain client on its flags Redis."""
    blue, green = redis_pair
    clients = {
        BLUE: aioredis.Redis.from_url(blue.url, decode_responses=True),
        GREEN: aioredis.Redis.from_url(green.url, decode_responses=True),
    }
    yield clients
    for client in clients.values():
        await client.aclose()


async def test_fresh_stores_read_every_declared_flag_as_off(store: FlagStore) -> None:
    table = await store.read_all()
    assert table.complete
    assert [r.name for r in table.rows] == ["uploads", "new_checkout", "maintenance", "beta"]
    for row in table.rows:
        assert row.declared
        assert row.value(BLUE) == FlagValue("off", None)
        assert row.value(GREEN) == FlagValue("off", None)
        assert not row.differs
    assert table.row("maintenance") is not None
    assert table.row("maintenance").kill_switch  # type: ignore[union-attr]


async def test_set_writes_what_the_app_reads_in_that_colour_only(
    store: FlagStore, apps: dict[Colour, aioredis.Redis]
) -> None:
    change = await store.set("uploads", BLUE, True, reason="launch")
    assert (change.before, change.after, change.raw_before, change.raw_after) == (
        "off",
        "on",
        None,
        "ON",
    )
    assert change.changed
    assert change.warning is None
    assert change.event_id
    assert await apps[BLUE].get("flag:uploads") == "ON"
    assert await apps[GREEN].get("flag:uploads") is None

    off = await store.set("uploads", BLUE, False)
    assert (off.before, off.after) == ("on", "off")
    assert await apps[BLUE].get("flag:uploads") == "OFF"


async def test_custom_key_and_values(store: FlagStore, apps: dict[Colour, aioredis.Redis]) -> None:
    await store.set("beta", GREEN, True)
    assert await apps[GREEN].get("app:beta") == "1"
    assert await apps[GREEN].get("flag:beta") is None
    row = (await store.read_all()).row("beta")
    assert row is not None
    assert row.value(GREEN) == FlagValue("on", "1")
    assert row.differs


async def test_only_the_exact_on_value_reads_as_on(
    store: FlagStore, apps: dict[Colour, aioredis.Redis]
) -> None:
    await apps[BLUE].set("flag:uploads", "on")  # lower case: the app reads off
    await apps[BLUE].set("flag:new_checkout", "yes")
    await apps[BLUE].set("flag:maintenance", "ON")
    table = await store.read_all()
    assert table.row("uploads").value(BLUE) == FlagValue("off", "on")  # type: ignore[union-attr]
    assert table.row("new_checkout").value(BLUE).state == "off"  # type: ignore[union-attr]
    assert table.row("maintenance").value(BLUE).state == "on"  # type: ignore[union-attr]
    assert state_of(store.flag("uploads"), "ON") == "on"
    assert state_of(store.flag("uploads"), None) == "off"


async def test_undeclared_keys_are_shown_not_hidden_and_not_changed(
    store: FlagStore, apps: dict[Colour, aioredis.Redis]
) -> None:
    await apps[GREEN].set("flag:legacy", "ON")
    await apps[BLUE].hset("flag:weird", mapping={"a": "1"})  # not a string: app reads off
    await apps[BLUE].set("other:thing", "ON")  # outside the prefix: not a flag
    table = await store.read_all()
    legacy, weird = table.row("legacy"), table.row("weird")
    assert legacy is not None
    assert not legacy.declared
    assert legacy.key == "flag:legacy"
    assert legacy.value(GREEN) == FlagValue("on", "ON")
    assert legacy.value(BLUE).state == "off"
    assert legacy.differs
    assert weird is not None
    assert weird.value(BLUE).state == "off"
    assert "WRONGTYPE" in weird.value(BLUE).note
    assert table.row("other:thing") is None
    assert table.row("thing") is None
    with pytest.raises(UsageError, match=r"not declared.*\[flags\.legacy\]"):
        await store.toggle("legacy", GREEN)
    assert await apps[GREEN].get("flag:legacy") == "ON"


async def test_toggle_records_and_publishes_each_change(
    store: FlagStore, control: ControlPlane
) -> None:
    received: list[Notification] = []

    async def listen() -> None:
        async for note in control.notifications():
            if note.kind == "flag":
                received.append(note)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)  # the subscription must exist before the publish
    first = await store.toggle("new_checkout", GREEN, reason="try it")
    second = await store.toggle("new_checkout", GREEN)
    assert (first.before, first.after) == ("off", "on")
    assert (second.before, second.after) == ("on", "off")
    for _ in range(50):
        if len(received) >= 2:
            break
        await asyncio.sleep(0.05)
    listener.cancel()
    with pytest.raises(asyncio.CancelledError):
        await listener

    events = [e for e in await control.events() if e.kind == "flag"]
    assert [(e.before, e.after) for e in events] == [("off", "on"), ("on", "off")]
    assert events[0].actor == "tester@box"
    assert events[0].reason == "try it"
    assert events[0].details["flag"] == "new_checkout"
    assert events[0].details["colour"] == "green"
    assert events[0].details["key"] == "flag:new_checkout"
    assert events[0].id == first.event_id
    assert [(n.data["before"], n.data["after"]) for n in received] == [("off", "on"), ("on", "off")]
    assert received[0].data["colour"] == "green"


async def test_copy_and_diff(store: FlagStore, apps: dict[Colour, aioredis.Redis]) -> None:
    await store.set("uploads", GREEN, True)
    await store.set("beta", GREEN, True)
    await store.set("maintenance", BLUE, True)
    diff = await store.diff()
    assert [r.name for r in diff.rows] == ["uploads", "maintenance", "beta"]

    chosen = await store.copy(GREEN, BLUE, ["uploads"])
    assert [c.name for c in chosen.changes] == ["uploads"]
    assert await apps[BLUE].get("flag:uploads") == "ON"
    assert [r.name for r in (await store.diff()).rows] == ["maintenance", "beta"]

    result = await store.copy(GREEN, BLUE)
    assert sorted(c.name for c in result.changes) == ["beta", "maintenance"]
    assert set(result.unchanged) == {"uploads", "new_checkout"}
    assert all(c.event_id for c in result.changes)
    assert await apps[BLUE].get("flag:maintenance") == "OFF"
    assert await apps[BLUE].get("app:beta") == "1"
    assert (await store.diff()).rows == ()

    with pytest.raises(UsageError, match="not declared"):
        await store.copy(GREEN, BLUE, ["nope"])
    with pytest.raises(UsageError, match="two different colours"):
        await store.copy(GREEN, GREEN)


async def test_a_colour_whose_redis_is_down_reads_unknown_and_refuses_writes(
    store: FlagStore,
    redis_pair: tuple[RedisServer, RedisServer],
    apps: dict[Colour, aioredis.Redis],
) -> None:
    await store.set("uploads", GREEN, True)
    _, green = redis_pair
    green.stop()
    started = time.monotonic()
    table = await store.read_all()
    assert time.monotonic() - started < 2.5
    assert not table.complete
    assert set(table.errors) == {GREEN}
    assert f"127.0.0.1:{green.port}" in table.errors[GREEN]
    uploads = table.row("uploads")
    assert uploads is not None
    assert uploads.value(GREEN).state == "unknown"  # never 'off'
    assert uploads.value(BLUE).state == "off"
    assert not uploads.differs
    with pytest.raises(BackendError, match="green flags Redis"):
        await store.set("uploads", GREEN, False)
    change = await store.set("uploads", BLUE, True)  # the other colour keeps working
    assert change.after == "on"
    assert await apps[BLUE].get("flag:uploads") == "ON"
    with pytest.raises(BackendError):
        await store.copy(BLUE, GREEN)


async def test_unconfigured_flag_store_is_unknown_with_the_fix(
    redis_server: RedisServer,
) -> None:
    config = flag_config(redis_server.url, None, db(redis_server.url, 1))
    store = FlagStore(config, None)
    try:
        table = await store.read_all()
        assert table.errors[GREEN].endswith("set env.green.flags_redis in the config")
        assert table.rows[0].value(GREEN).state == "unknown"
        with pytest.raises(ConfigError, match=r"env\.green\.flags_redis"):
            await store.set("uploads", GREEN, True)
        change = await store.set("uploads", BLUE, True)
        assert change.warning is not None
        assert "not recorded" in change.warning
    finally:
        await store.aclose()


async def test_change_happens_but_warns_when_the_control_plane_is_down(
    redis_pair: tuple[RedisServer, RedisServer], apps: dict[Colour, aioredis.Redis]
) -> None:
    blue, green = redis_pair
    config = flag_config(blue.url, green.url, f"redis://127.0.0.1:{free_port()}/0")
    control = ControlPlane.from_config(config.control, APP)
    store = FlagStore(config, control)
    try:
        change = await store.set("uploads", BLUE, True)
    finally:
        await store.aclose()
        await control.aclose()
    assert await apps[BLUE].get("flag:uploads") == "ON"
    assert change.event_id is None
    assert change.warning is not None
    assert "NOT recorded" in change.warning


async def test_passwords_never_appear_in_errors(redis_server: RedisServer) -> None:
    port = free_port()
    config = flag_config(
        redis_server.url, f"redis://user:s3cret@127.0.0.1:{port}/0", db(redis_server.url, 1)
    )
    store = FlagStore(config, None)
    try:
        table = await store.read_all()
        with pytest.raises(BackendError) as raised:
            await store.set("uploads", GREEN, True)
    finally:
        await store.aclose()
    assert "s3cret" not in table.errors[GREEN]
    assert "***" in table.errors[GREEN]
    assert "s3cret" not in str(raised.value)


async def test_concurrent_toggles_from_two_clients_stay_consistent(
    config: Config, control: ControlPlane, apps: dict[Colour, aioredis.Redis]
) -> None:
    other_control = ControlPlane.from_config(config.control, APP, actor="other@box")
    one, two = FlagStore(config, control), FlagStore(config, other_control)
    rounds = 15
    try:

        async def toggler(store: FlagStore) -> list[tuple[str, str]]:
            results: list[tuple[str, str]] = []
            for _ in range(rounds):
                change = await store.toggle("uploads", BLUE)
                results.append((change.before, change.after))
            return results

        first, second = await asyncio.gather(toggler(one), toggler(two))
    finally:
        await one.aclose()
        await two.aclose()
        await other_control.aclose()
    changes = first + second
    # Every toggle saw a real flip, and the flips alternate: as many off->on as on->off.
    assert all(before != after for before, after in changes)
    assert changes.count(("off", "on")) == changes.count(("on", "off")) == rounds
    # An even number of atomic flips from "off" ends at "OFF" in what the app reads.
    assert await apps[BLUE].get("flag:uploads") == "OFF"
    events = [e for e in await control.events(limit=200) if e.kind == "flag"]
    assert len(events) == 2 * rounds
    assert {e.actor for e in events} == {"tester@box", "other@box"}
    assert sum(1 for e in events if (e.before, e.after) == ("off", "on")) == rounds


async def test_undeclared_keys_beyond_one_scan_step_are_all_found(
    store: FlagStore, apps: dict[Colour, aioredis.Redis]
) -> None:
    pipe = apps[BLUE].pipeline(transaction=False)
    for i in range(2500):  # more than one SCAN step (COUNT 1000)
        pipe.set(f"flag:old{i}", "ON")
        pipe.set(f"job:{i}", "x")  # unrelated keys are not flags
    await pipe.execute()
    table = await store.read_all()
    undeclared = [r for r in table.rows if not r.declared]
    assert len(undeclared) == 2500
    assert all(r.value(BLUE).state == "on" for r in undeclared)
    assert all(r.value(GREEN).state == "off" for r in undeclared)
