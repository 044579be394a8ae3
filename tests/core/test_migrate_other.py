"""Snapshot, mirror and Redis-keys strategies against real sshd, SQLite and redis-servers."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from migrate_support import APP, Env, config_data, content, count, make_db, rows, write_config
from servers import RedisServer, SshServer

from console.core.control import ControlPlane
from console.core.errors import ConfigError, ConsoleError, UsageError
from console.core.migrate.mirror import MirrorStatus
from console.core.migrate.plan import MigrationRequest
from console.core.migrate.runner import MigrationRunner
from console.core.models import Colour
from console.core.ssh import SshPool

pytestmark = pytest.mark.integration

GREEN, BLUE = Colour.GREEN, Colour.BLUE


@pytest.fixture
async def env(
    ssh_server: SshServer,
    redis_server: RedisServer,
    redis_pair: tuple[RedisServer, RedisServer],
    tmp_path: Path,
) -> AsyncIterator[Env]:
    (tmp_path / "blue").mkdir()
    (tmp_path / "green").mkdir()
    blue_db, green_db = tmp_path / "blue" / "app.db", tmp_path / "green" / "app.db"
    data = config_data(
        ssh_server,
        redis_server.url,
        blue_db,
        green_db,
        blue_redis=redis_pair[0].url,
        green_redis=redis_pair[1].url,
        patterns=("jobs:*",),
    )
    config = write_config(tmp_path / "bg.toml", data)
    control = ControlPlane(redis_server.url, APP, actor="tester@ci")
    pool = SshPool(config.ssh)
    try:
        yield Env(config, control, pool, MigrationRunner(config, control, pool), blue_db, green_db)
    finally:
        await pool.aclose()
        await control.aclose()


# --- snapshot ------------------------------------------------------------------------------


async def test_snapshot_replaces_the_target_and_keeps_a_backup(env: Env) -> None:
    make_db(env.blue_db, [(1, "old", "blue")], ("b",))
    make_db(env.green_db, [(1, "a", "green"), (2, "b", "green")], ("g1", "g2"))
    dry = await env.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot", dry_run=True))
    assert dry.ok
    assert {i.item.rsplit(" ", 1)[1]: i.source_count for i in dry.items} == {
        "notes": 2,
        "uploads": 2,
    }
    # Blue's note "b" and its own version of upload 1 exist only there: the dry run says
    # the snapshot drops them (they survive only in the backup).
    by_table = {i.item.rsplit(" ", 1)[1]: i for i in dry.items}
    assert by_table["notes"].only_on_target == 1
    assert by_table["uploads"].conflicts == 1
    assert "1 only on the target would be dropped" in dry.summary()
    assert rows(env.blue_db, "uploads") == [(1, 1, "old", "blue", b"\x01\x01\x01")]
    # The application keeps a connection open, as a running app would.
    with contextlib.closing(sqlite3.connect(env.blue_db)) as app:
        result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot"))
        assert result.ok, result.problems
        assert app.execute("SELECT count(*) FROM uploads").fetchone()[0] == 2
    assert rows(env.blue_db, "uploads") == rows(env.green_db, "uploads")
    assert rows(env.blue_db, "notes") == rows(env.green_db, "notes")
    assert all(i.verified for i in result.items)
    assert len(result.backups) == 1
    backup = Path(result.backups[0].split(":", 1)[1])
    assert backup.name.startswith("app.db.bak-")
    assert backup.name.endswith(result.run)  # per-run id
    # In the configured work directory, never beside the database (often a git checkout).
    assert backup.parent == env.blue_db.parent.parent / "work" / "backups"
    assert rows(backup, "uploads") == [(1, 1, "old", "blue", b"\x01\x01\x01")]
    leftovers = [p.name for p in env.blue_db.parent.iterdir() if "bgconsole-migrate" in p.name]
    assert leftovers == []
    events = await env.control.events()
    assert events[-1].outcome == "ok"
    assert events[-1].details["backups"] == result.backups[0]


async def test_snapshot_into_a_missing_database_creates_it(env: Env) -> None:
    make_db(env.green_db, [(1, "a", "green")])
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot"))
    assert result.ok, result.problems
    assert result.backups == ()
    assert count(env.blue_db, "uploads") == 1


async def test_snapshot_of_a_missing_source_fails_with_one_line(env: Env) -> None:
    make_db(env.blue_db, [(1, "keep", "blue")])
    with pytest.raises(ConsoleError, match=r"no database at .*green") as caught:
        await env.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot"))
    assert "\n" not in str(caught.value)
    assert count(env.blue_db, "uploads") == 1
    assert (await env.control.events())[-1].outcome == "failed"


async def test_snapshot_refuses_table_and_overwrite(env: Env) -> None:
    with pytest.raises(UsageError, match="--table"):
        await env.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot", tables=("x",)))
    with pytest.raises(UsageError, match="--overwrite"):
        await env.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot", overwrite=True))


# --- mirror --------------------------------------------------------------------------------


async def test_mirror_catches_up_then_copies_new_rows_with_lag(env: Env) -> None:
    make_db(env.blue_db, [(1, "a", "blue")])
    make_db(env.green_db, [(1, "a", "blue"), (2, "b", "green")])
    stop = asyncio.Event()
    statuses: list[MirrorStatus] = []
    task = asyncio.create_task(
        env.runner.mirror(
            MigrationRequest(GREEN, BLUE, "mirror", tables=("uploads",)),
            statuses.append,
            stop,
            interval=0.1,
        )
    )
    await _until(lambda: bool(statuses) or task.done())
    if task.done():
        task.result()  # the mirror's failure, as it is
    assert count(env.blue_db, "uploads") == 2  # the catch-up
    with contextlib.closing(sqlite3.connect(env.green_db)) as db, db:
        db.executemany(
            "INSERT INTO uploads (name, colour) VALUES (?, 'green')", [("c",), ("d",), ("e",)]
        )
    for _ in range(200):
        if count(env.blue_db, "uploads") == 5 and statuses[-1].behind == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    catch_up, last = await asyncio.wait_for(task, 20)
    assert catch_up.copied == 1
    assert last.copied == 3
    assert last.behind == 0
    assert last.error == ""
    assert last.lag < 5
    assert rows(env.blue_db, "uploads") == rows(env.green_db, "uploads")
    events = await env.control.events()
    assert events[-1].details["mirrored"] == "3"
    assert await env.control.lock_info("migrate") is None


async def test_mirror_tail_follows_rowids_with_a_bigint_key(env: Env) -> None:
    """Marks once came from the key but the tail compared rowids: id 1002 was skipped."""
    schema = "CREATE TABLE events (id BIGINT PRIMARY KEY, body TEXT)"
    for db in (env.blue_db, env.green_db):
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(schema)
    with contextlib.closing(sqlite3.connect(env.green_db)) as conn, conn:
        conn.executemany("INSERT INTO events VALUES (?, ?)", [(1000, "a"), (1001, "b")])
    stop = asyncio.Event()
    statuses: list[MirrorStatus] = []
    task = asyncio.create_task(
        env.runner.mirror(
            MigrationRequest(GREEN, BLUE, "mirror"), statuses.append, stop, interval=0.1
        )
    )
    await _until(lambda: bool(statuses))
    with contextlib.closing(sqlite3.connect(env.green_db)) as conn, conn:
        conn.execute("INSERT INTO events VALUES (1002, 'c')")
    await _until(lambda: count(env.blue_db, "events") == 3)
    stop.set()
    await asyncio.wait_for(task, 20)
    assert rows(env.blue_db, "events", "id") == rows(env.green_db, "events", "id")


async def test_mirror_with_change_capture_applies_inserts_updates_deletes(env: Env) -> None:
    make_db(env.blue_db, [(1, "a", "blue")], ("x",))
    make_db(env.green_db, [(1, "a", "blue"), (2, "b", "green")], ("x", "x", "y"))
    request = MigrationRequest(GREEN, BLUE, "mirror")
    lag = await env.runner.mirror_lag(GREEN, BLUE)
    assert not lag.captured
    assert await env.runner.mirror_setup(request) == 2
    assert await env.runner.mirror_setup(request) == 2  # idempotent
    stop = asyncio.Event()
    statuses: list[MirrorStatus] = []
    task = asyncio.create_task(env.runner.mirror(request, statuses.append, stop, interval=0.1))
    await _until(lambda: bool(statuses))
    assert count(env.blue_db, "uploads") == 2  # the catch-up
    assert sorted(r[1:] for r in rows(env.blue_db, "notes")) == [("x", 1), ("x", 1), ("y", 1)]
    with contextlib.closing(sqlite3.connect(env.green_db)) as db, db:
        db.execute("INSERT INTO uploads (id, name, colour, data) VALUES (3, 'c', 'green', ?)",
                   (bytes(range(256)),))  # fmt: skip
        db.execute("UPDATE uploads SET name = 'renamed', id = 20 WHERE id = 2")
        db.execute("DELETE FROM uploads WHERE id = 1")
        db.execute("DELETE FROM notes WHERE rowid = (SELECT min(rowid) FROM notes)")  # one x
        db.execute("INSERT INTO notes VALUES (NULL, 2.5)")
    await _until(lambda: statuses[-1].behind == 0 and content(env.blue_db, "uploads")
                 == content(env.green_db, "uploads"))  # fmt: skip
    await _until(lambda: content(env.blue_db, "notes") == content(env.green_db, "notes"))
    lag = await env.runner.mirror_lag(GREEN, BLUE)
    assert lag.captured
    assert lag.pending == 0
    stop.set()
    await asyncio.wait_for(task, 20)
    # Stopped: new changes wait, and the lag says so.
    with contextlib.closing(sqlite3.connect(env.green_db)) as db, db:
        db.execute("INSERT INTO uploads (id, name, colour) VALUES (4, 'd', 'green')")
    lag = await env.runner.mirror_lag(GREEN, BLUE)
    assert lag.pending == 1
    assert lag.oldest_age < 30
    # Resumed, the mirror continues from the target's cursor (no catch-up, nothing twice).
    stop = asyncio.Event()
    task = asyncio.create_task(env.runner.mirror(request, statuses.append, stop, interval=0.1))
    await _until(lambda: count(env.blue_db, "uploads") == 3)
    stop.set()
    await asyncio.wait_for(task, 20)
    assert content(env.blue_db, "uploads") == content(env.green_db, "uploads")
    assert await env.runner.mirror_setup(request, teardown=True) > 0
    assert await env.runner.mirror_setup(request, teardown=True) == 0  # idempotent
    with contextlib.closing(sqlite3.connect(env.green_db)) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
    assert not [n for n in names if n.startswith("_bgconsole")]


async def _until(condition: Callable[[], bool], within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# --- redis keys ----------------------------------------------------------------------------


async def test_redis_keys_copied_with_ttls_and_conflicts_reported(
    env: Env, redis_pair: tuple[RedisServer, RedisServer]
) -> None:
    blue = aioredis.Redis.from_url(redis_pair[0].url)
    green = aioredis.Redis.from_url(redis_pair[1].url)
    try:
        await green.set("jobs:1", "resize a.png", px=60_000)
        await green.rpush("jobs:queue", "j1", "j2", "j3")
        await green.set("jobs:2", "theirs")
        await green.set("other:1", "not mine")
        await blue.set("jobs:2", "mine")
        dry = await env.runner.migrate(MigrationRequest(GREEN, BLUE, "redis", dry_run=True))
        assert dry.items[0].missing == 2
        assert dry.items[0].conflicts == 1
        assert await blue.exists("jobs:1") == 0
        result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, "redis"))
        assert result.copied == 2
        assert result.items[0].verified
        assert not result.ok  # the conflict is reported
        assert result.items[0].conflict_sample == ("jobs:2",)
        assert await blue.get("jobs:2") == b"mine"
        assert await blue.lrange("jobs:queue", 0, -1) == [b"j1", b"j2", b"j3"]
        ttl = await blue.pttl("jobs:1")
        assert 50_000 < ttl <= 60_000
        assert await blue.pttl("jobs:queue") == -1
        assert await blue.exists("other:1") == 0
        forced = await env.runner.migrate(MigrationRequest(GREEN, BLUE, "redis", overwrite=True))
        assert forced.ok, forced.problems
        assert await blue.get("jobs:2") == b"theirs"
    finally:
        await blue.aclose()
        await green.aclose()


async def test_redis_down_is_one_line_and_recorded(
    env: Env, redis_pair: tuple[RedisServer, RedisServer]
) -> None:
    redis_pair[0].stop()
    with pytest.raises(ConsoleError, match="data Redis redis://") as caught:
        await env.runner.migrate(MigrationRequest(GREEN, BLUE, "redis"))
    assert "\n" not in str(caught.value)
    assert (await env.control.events())[-1].outcome == "failed"


async def test_no_data_configured_is_a_config_error(env: Env) -> None:
    runner = MigrationRunner(
        write_config(
            env.config.path or Path("x"),
            {
                "console": {"name": APP},
                "control": {"redis": env.control.url},
                "router": {"kind": "builtin"},
                "env": {"blue": {"url": "http://h:1"}, "green": {"url": "http://h:2"}},
            },
        ),
        env.control,
        env.pool,
    )
    with pytest.raises(ConfigError, match=r"env\.green: no SQLite"):
        await runner.migrate(MigrationRequest(GREEN, BLUE))
    with pytest.raises(ConfigError, match=r"env\.green: no Redis key patterns"):
        await runner.migrate(MigrationRequest(GREEN, BLUE, "redis"))


async def test_mirror_moves_past_changes_of_a_table_dropped_since(env: Env) -> None:
    # Reported in review: the source skipped a dropped table's changes without moving
    # its position, so a batch of only those came back every cycle: "behind" forever.
    make_db(env.blue_db, [(1, "a", "blue")], ("x",))
    make_db(env.green_db, [(1, "a", "blue")], ("x",))
    request = MigrationRequest(GREEN, BLUE, "mirror")
    await env.runner.mirror_setup(request)
    stop = asyncio.Event()
    statuses: list[MirrorStatus] = []
    task = asyncio.create_task(env.runner.mirror(request, statuses.append, stop, interval=0.1))
    try:
        await _until(lambda: bool(statuses))
        with contextlib.closing(sqlite3.connect(env.green_db)) as db, db:
            db.execute("INSERT INTO uploads (id, name, colour) VALUES (2, 'b', 'green')")
            db.executemany("INSERT INTO notes VALUES (?, 1.0)", [("n",)] * 5)
        with contextlib.closing(sqlite3.connect(env.green_db)) as db:
            db.execute("DROP TABLE notes")
        await _until(lambda: count(env.blue_db, "uploads") == 2, 20)
        await _until(lambda: statuses[-1].behind == 0, 20)
        lag = await env.runner.mirror_lag(GREEN, BLUE)
        assert lag.pending == 0
        cycles = statuses[-1].cycles
        await _until(lambda: statuses[-1].cycles >= cycles + 2, 20)
        assert statuses[-1].behind == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
