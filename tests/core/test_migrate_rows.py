"""The rows strategy against real SQLite files on a real sshd, control plane on redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
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


async def _until_applying(env: Env, request: MigrationRequest) -> asyncio.Task[object]:
    applying = asyncio.Event()

    def on_progress(p: Progress) -> None:
        # Some slices in: the cancel lands mid-table, with commits behind it.
        if p.phase == "apply" and 50 <= p.done < p.total:
            applying.set()

    task: asyncio.Task[object] = asyncio.create_task(env.runner.migrate(request, on_progress))
    await asyncio.wait_for(applying.wait(), 20)
    return task


async def _settled(db: Path, table: str) -> int:
    """The row count once it stops moving: nothing may commit after the client is gone."""
    first = count(db, table)
    await asyncio.sleep(1.0)
    second = count(db, table)
    assert second == first, "the host side kept committing after its client went away"
    return second


async def test_cancelled_apply_stops_and_the_rerun_copies_the_rest_once(env: Env) -> None:
    make_db(env.blue_db, [])
    make_db(env.green_db, [(i, f"f{i}", "green") for i in range(1, 801)])
    request = MigrationRequest(GREEN, BLUE, tables=("uploads",), row_delay=0.01)
    task = await _until_applying(env, request)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    partial = await _settled(env.blue_db, "uploads")
    assert 0 < partial < 800  # committed slices stay (progress may run ahead of commits)
    with contextlib.closing(sqlite3.connect(env.blue_db, timeout=5)) as db, db:
        db.execute("INSERT INTO uploads (id, name, colour) VALUES (9999, 'w', 'blue')")  # unlocked
    assert (await env.control.events())[-1].outcome == "cancelled"
    assert await env.control.lock_info("migrate") is None
    finished = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("uploads",)))
    assert finished.ok, finished.problems
    assert finished.copied == 800 - partial  # each row exactly once
    assert count(env.blue_db, "uploads") == 801
    # The next run says what the interrupted one had really committed.
    # (Both colours are this machine: whichever host name swept it first reports it.)
    assert len(finished.previous) == 1
    assert finished.previous[0].endswith(
        f"was interrupted after committing: uploads {partial} inserted (unfinished)"
    )
    kinds = [e.outcome for e in await env.control.events()]
    assert "interrupted" in kinds


async def test_whole_tables_leave_a_cancelled_table_untouched(env: Env) -> None:
    # --whole-tables: one transaction per table, so an interrupted table is all or nothing
    # (the default slices keep the live app's writers waiting at most a slice instead).
    make_db(env.blue_db, [])
    make_db(env.green_db, [(i, f"f{i}", "green") for i in range(1, 801)])
    request = MigrationRequest(GREEN, BLUE, tables=("uploads",), row_delay=0.01, whole_tables=True)
    task = await _until_applying(env, request)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _settled(env.blue_db, "uploads") == 0
    finished = await env.runner.migrate(
        MigrationRequest(GREEN, BLUE, tables=("uploads",), whole_tables=True)
    )
    assert finished.ok, finished.problems
    assert finished.copied == 800
    assert count(env.blue_db, "uploads") == 800
    with pytest.raises(UsageError, match="--whole-tables applies to the rows strategy only"):
        await env.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot", whole_tables=True))


async def test_ssh_drop_mid_apply_then_the_rerun_sweeps_only_dead_runs(
    env: Env, ssh_server: SshServer
) -> None:
    make_db(env.blue_db, [])
    make_db(env.green_db, [(i, f"f{i}", "green") for i in range(1, 801)])
    request = MigrationRequest(GREEN, BLUE, tables=("uploads",), row_delay=0.01)
    task = await _until_applying(env, request)
    ssh_server.stop()
    with pytest.raises(ConsoleError) as caught:
        await asyncio.wait_for(task, 30)
    assert "\n" not in str(caught.value)
    assert (await env.control.events())[-1].outcome == "failed"
    partial = await _settled(env.blue_db, "uploads")
    with contextlib.closing(sqlite3.connect(env.blue_db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    work = env.blue_db.parent.parent / "work"
    assert leftovers(work), "an SSH drop mid-run should have left files to sweep"
    # Another run in flight (another console, even with the same app name): its lock is
    # held by a live process, so the sweep must leave its files alone.
    other = "0123456789ab"
    lock = (work / f"bgconsole-migrate-{other}.lock").open("a+")
    fcntl.flock(lock, fcntl.LOCK_EX)
    in_flight = work / f"bgconsole-migrate-{other}-{APP}-x.rows.jsonl"
    in_flight.write_text("another run's transfer, in flight\n")
    ssh_server.start()
    try:
        result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("uploads",)))
        assert result.ok, result.problems
        assert result.copied == 800 - partial
        assert count(env.blue_db, "uploads") == 800
        assert in_flight.exists()
        assert sorted(leftovers(work)) == sorted(
            [in_flight.name, f"bgconsole-migrate-{other}.lock"]
        )
    finally:
        lock.close()


def leftovers(work: Path) -> list[str]:
    """Migration files in the host's work directory (backups aside)."""
    if not work.exists():
        return []
    return [p.name for p in work.iterdir() if p.name.startswith("bgconsole-migrate-")]


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
