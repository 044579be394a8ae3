"""The rows strategy against real SQLite files on a real sshd, control plane on redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from migrate_support import APP, Env, config_data, count, make_db, rows, write_config
from servers import RedisServer, SshServer

from console.core.control import ControlPlane
from console.core.errors import ConsoleError, LockHeld, UsageError
from console.core.migrate.plan import MigrationRequest, Progress
from console.core.migrate.rows import checksum
from console.core.migrate.runner import MigrationRunner
from console.core.models import Colour
from console.core.ssh import SshPool

pytestmark = pytest.mark.integration

GREEN, BLUE = Colour.GREEN, Colour.BLUE


@pytest.fixture
async def env(
    ssh_server: SshServer, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Env]:
    (tmp_path / "blue").mkdir()
    (tmp_path / "green").mkdir()
    blue_db, green_db = tmp_path / "blue" / "app.db", tmp_path / "green" / "app.db"
    config = write_config(
        tmp_path / "bg.toml", config_data(ssh_server, redis_server.url, blue_db, green_db)
    )
    control = ControlPlane(redis_server.url, APP, actor="tester@ci")
    pool = SshPool(config.ssh)
    try:
        yield Env(config, control, pool, MigrationRunner(config, control, pool), blue_db, green_db)
    finally:
        await pool.aclose()
        await control.aclose()


def _seed(env: Env) -> None:
    """Blue has uploads 1-3; green has 1-3 too plus 4-6 written while it was live."""
    base = [(1, "a", "blue"), (2, "b", "blue"), (3, "c", "blue")]
    make_db(env.blue_db, base, ("one",))
    make_db(env.green_db, [*base, (4, "d", "green"), (5, "e", "green"), (6, "f", "green")],
            ("one", "two", "three"))  # fmt: skip


def test_checksum_is_order_independent() -> None:
    assert checksum(["00ff", "0a"]) == checksum(["0a", "00ff"]) == f"{0xFF + 0x0A:016x}"


async def test_dry_run_plans_and_writes_nothing(env: Env) -> None:
    _seed(env)
    before = env.blue_db.read_bytes()
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, dry_run=True))
    by_table = {item.item.rsplit(" ", 1)[1]: item for item in result.items}
    assert result.ok
    assert by_table["uploads"].missing == 3
    assert by_table["notes"].missing == 2
    assert result.copied == 0
    assert env.blue_db.read_bytes() == before
    assert count(env.blue_db, "uploads") == 3
    assert await env.control.events() == []  # a dry run is not an event


async def test_rows_copies_exactly_the_missing_rows_and_verifies(env: Env) -> None:
    _seed(env)
    seen: list[Progress] = []
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE), seen.append)
    assert result.ok, result.problems
    assert result.copied == 5  # uploads 4-6 and notes rowid 2-3
    assert all(item.verified for item in result.items)
    assert rows(env.blue_db, "uploads") == rows(env.green_db, "uploads")
    assert rows(env.blue_db, "notes") == rows(env.green_db, "notes")
    assert {p.phase for p in seen} >= {"inspect", "export", "transfer", "apply"}
    events = await env.control.events()
    assert [e.outcome for e in events] == ["started", "ok"]
    assert events[-1].details["copied"] == "5"
    again = await env.runner.migrate(MigrationRequest(GREEN, BLUE))
    assert again.ok
    assert again.copied == 0  # idempotent: nothing is missing any more


async def test_table_filter_and_missing_target_table(env: Env) -> None:
    _seed(env)
    with contextlib.closing(sqlite3.connect(env.green_db)) as db, db:
        db.execute("CREATE TABLE audit (at REAL, what TEXT)")
        db.execute("INSERT INTO audit VALUES (1.5, 'x')")
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("audit",)))
    assert result.ok, result.problems
    assert [i.note for i in result.items] == ["table created on the target"]
    assert rows(env.blue_db, "audit") == [(1, 1.5, "x")]
    assert count(env.blue_db, "uploads") == 3  # not asked for, not touched


async def test_conflicts_are_reported_not_overwritten(env: Env) -> None:
    make_db(env.blue_db, [(1, "a", "blue"), (2, "mine", "blue")])
    make_db(env.green_db, [(1, "a", "blue"), (2, "theirs", "green"), (3, "new", "green")])
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("uploads",)))
    assert not result.ok
    assert result.conflicts == 1
    assert result.copied == 1
    assert result.items[0].conflict_sample == ("[2]",)
    assert "differ" in result.problems[0]
    assert rows(env.blue_db, "uploads", "id")[1][2] == "mine"
    assert rows(env.blue_db, "uploads", "id")[2][2] == "new"
    assert (await env.control.events())[-1].outcome == "failed"
    forced = await env.runner.migrate(
        MigrationRequest(GREEN, BLUE, tables=("uploads",), overwrite=True)
    )
    assert forced.ok, forced.problems
    assert rows(env.blue_db, "uploads") == rows(env.green_db, "uploads")


async def test_table_without_primary_key_uses_rowid(env: Env) -> None:
    make_db(env.blue_db, [], ("x",))
    make_db(env.green_db, [], ("x", "y", "z"))
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("notes",)))
    assert result.ok
    assert result.copied == 2
    assert rows(env.blue_db, "notes") == [(1, "x", 1), (2, "y", 1), (3, "z", 1)]


async def test_interrupted_apply_leaves_the_table_as_it_was(env: Env) -> None:
    make_db(env.blue_db, [])
    make_db(env.green_db, [(i, f"f{i}", "green") for i in range(1, 801)])
    applying = asyncio.Event()

    def on_progress(p: Progress) -> None:
        if p.phase == "apply" and 0 < p.done < p.total:
            applying.set()

    request = MigrationRequest(GREEN, BLUE, tables=("uploads",), row_delay=0.01)
    task = asyncio.create_task(env.runner.migrate(request, on_progress))
    await asyncio.wait_for(applying.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Mid-transaction rows are invisible; once the host process is gone they are rolled back.
    assert count(env.blue_db, "uploads") == 0
    await asyncio.sleep(1.0)
    assert count(env.blue_db, "uploads") == 0
    with contextlib.closing(sqlite3.connect(env.blue_db, timeout=5)) as db, db:
        db.execute("INSERT INTO uploads (id, name, colour) VALUES (9999, 'w', 'blue')")  # unlocked
    assert (await env.control.events())[-1].outcome == "cancelled"
    assert await env.control.lock_info("migrate") is None
    finished = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("uploads",)))
    assert finished.copied == 800
    assert count(env.blue_db, "uploads") == 801


async def test_ssh_drop_mid_apply_leaves_target_unchanged(env: Env, ssh_server: SshServer) -> None:
    make_db(env.blue_db, [])
    make_db(env.green_db, [(i, f"f{i}", "green") for i in range(1, 801)])
    applying = asyncio.Event()

    def on_progress(p: Progress) -> None:
        if p.phase == "apply" and 0 < p.done < p.total:
            applying.set()

    request = MigrationRequest(GREEN, BLUE, tables=("uploads",), row_delay=0.01)
    task = asyncio.create_task(env.runner.migrate(request, on_progress))
    await asyncio.wait_for(applying.wait(), 20)
    ssh_server.stop()
    with pytest.raises(ConsoleError) as caught:
        await asyncio.wait_for(task, 30)
    assert "\n" not in str(caught.value)
    assert (await env.control.events())[-1].outcome == "failed"
    await asyncio.sleep(1.0)
    assert count(env.blue_db, "uploads") == 0
    # The drop left the run's temp files on the host; the next run sweeps them, then
    # finishes the job and cleans up after itself.
    assert leftovers(), "an SSH drop mid-run should have left temp files to sweep"
    ssh_server.start()
    other_app = Path(tempfile.gettempdir()) / "bgconsole-migrate-otherapp-x.rows.jsonl"
    other_app.write_text("another application's migration, in flight\n")
    try:
        result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("uploads",)))
        assert result.ok
        assert count(env.blue_db, "uploads") == 800
        assert leftovers() == []
        assert other_app.exists()  # the sweep takes only this application's files
    finally:
        other_app.unlink(missing_ok=True)


def leftovers() -> list[str]:
    """This application's migration temp files on the (loopback) host."""
    prefix = f"bgconsole-migrate-{APP}-"
    return [name for name in os.listdir(tempfile.gettempdir()) if name.startswith(prefix)]


async def test_lock_conflict_names_the_holder(env: Env) -> None:
    _seed(env)
    other = ControlPlane(env.control.url, APP, actor="alice@jump1")
    try:
        await other.acquire_lock("migrate", "migrate rows blue -> green", 60)
        with pytest.raises(LockHeld, match="alice@jump1"):
            await env.runner.migrate(MigrationRequest(GREEN, BLUE))
    finally:
        await other.aclose()
    assert count(env.blue_db, "uploads") == 3


async def test_live_target_needs_consent_and_same_colour_is_refused(env: Env) -> None:
    _seed(env)
    await env.control.ensure_active(BLUE)
    with pytest.raises(UsageError, match="blue is live"):
        await env.runner.migrate(MigrationRequest(GREEN, BLUE))
    with pytest.raises(UsageError, match="both"):
        await env.runner.migrate(MigrationRequest(GREEN, GREEN))
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, live_ok=True))
    assert result.ok
