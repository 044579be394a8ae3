"""Row identity, conflicts, verification and id ranges of the rows strategy (issue 12).

Against real SQLite files on a real sshd, control plane on redis-server, with a schema
shaped like real applications' (tables without keys, BIGINT and composite keys, UNIQUE,
foreign keys, BLOBs, NULLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from migrate_support import (
    APP,
    Env,
    config_data,
    content,
    count,
    make_app_db,
    make_db,
    write_config,
)
from servers import RedisServer, SshServer

from console.core.control import ControlPlane
from console.core.migrate.plan import MigrationRequest, Progress
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


def by_table(result: object) -> dict[str, object]:
    return {item.item.rsplit(" ", 1)[1]: item for item in result.items}  # type: ignore[attr-defined]


BLOB = bytes(range(256))

BLUE_ROWS: dict[str, list[tuple[object, ...]]] = {
    "files": [("a.png", 3, b"\x00\x01\x02"), ("dup.txt", 1, None)],
    "events": [(1000, "boot"), (1001, "deploy")],
    "tags": [(1, "red", 0.5)],
    "users": [(1, "ann@x"), (2, "bob@x")],
    "accounts": [("ann@x", "free")],
    "orders": [(1, 1, None, 0)],
}
GREEN_ROWS: dict[str, list[tuple[object, ...]]] = {
    # dup.txt three times: blue has it once, so two copies go over; b.bin is new.
    "files": [("a.png", 3, b"\x00\x01\x02"), ("dup.txt", 1, None), ("dup.txt", 1, None),
              ("dup.txt", 1, None), ("b.bin", 256, BLOB)],
    "events": [(1000, "boot"), (1001, "deploy"), (1002, "switch")],
    "tags": [(1, "red", 0.5), (1, "blue", None), (2, "red", 1.0)],
    "users": [(1, "ann@x"), (2, "bob@x"), (3, "cy@x")],
    "accounts": [("ann@x", "free"), ("cy@x", None)],
    "orders": [(1, 1, None, 0), (2, 3, "gift", None)],
}  # fmt: skip


async def test_app_schema_identity_per_table_and_the_dry_run_is_the_plan(env: Env) -> None:
    make_app_db(env.blue_db, BLUE_ROWS)
    make_app_db(env.green_db, GREEN_ROWS)
    dry = await env.runner.migrate(MigrationRequest(GREEN, BLUE, dry_run=True))
    assert dry.ok, dry.problems
    items = by_table(dry)
    assert {name: item.identity for name, item in items.items()} == {  # type: ignore[attr-defined]
        "accounts": "unique(email)",
        "events": "pk(id)",
        "files": "whole row",
        "orders": "pk(id)",
        "tags": "pk(item,tag)",
        "users": "pk(id)",
    }
    assert {name: item.missing for name, item in items.items()} == {  # type: ignore[attr-defined]
        "accounts": 1, "events": 1, "files": 3, "orders": 1, "tags": 2, "users": 1,
    }  # fmt: skip
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE))
    assert result.ok, result.problems
    # The run executed exactly the plan the dry run showed, and did what it said.
    assert result.plans == dry.plans
    assert result.copied == dry.missing == 9
    assert all(item.verified for item in result.items)
    for table in GREEN_ROWS:
        assert content(env.blue_db, table) == content(env.green_db, table), table
    with contextlib.closing(sqlite3.connect(env.blue_db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    again = await env.runner.migrate(MigrationRequest(GREEN, BLUE))
    assert again.ok
    assert again.copied == 0


async def test_no_key_tables_match_rows_not_rowids(env: Env) -> None:
    """The issue's case: one upload written straight to blue, two others to green."""
    make_app_db(env.blue_db, {"files": [("mine.png", 1, b"B")]})
    make_app_db(env.green_db, {"files": [("cat.png", 2, b"G1"), ("dog.png", 3, b"G2")]})
    # Same rowids (1 on blue, 1 and 2 on green), different rows: no conflict, two to copy.
    dry = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("files",), dry_run=True))
    assert (dry.missing, dry.conflicts, dry.only_on_target) == (2, 0, 1)
    assert "1 only on the target kept" in dry.summary()
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("files",)))
    assert result.ok, result.problems
    assert result.copied == 2
    assert content(env.blue_db, "files") == sorted(
        [("mine.png", 1, b"B"), ("cat.png", 2, b"G1"), ("dog.png", 3, b"G2")], key=repr
    )


async def test_overwrite_updates_by_identity_and_never_deletes(env: Env) -> None:
    """Source (5, a@x); target (5, b@x) and (7, a@x): (7, ...) must survive."""
    make_app_db(env.green_db, {"users": [(5, "a@x")]})
    make_app_db(env.blue_db, {"users": [(5, "b@x"), (7, "a@x")]})
    dry = await env.runner.migrate(
        MigrationRequest(GREEN, BLUE, tables=("users",), overwrite=True, dry_run=True)
    )
    assert dry.conflicts == 1
    assert dry.items[0].updated == 1
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("users",),
                                                       overwrite=True))  # fmt: skip
    assert not result.ok  # the update is refused by UNIQUE(email), and said so
    assert content(env.blue_db, "users") == [(5, "b@x"), (7, "a@x")]
    item = result.items[0]
    assert item.conflicts == 1
    assert item.updated == 0
    assert item.conflict_sample == ("[5]",)
    assert "UNIQUE" in item.note
    assert item.verified  # the target is exactly what the plan promised, less the refusal
    # With the obstacle gone, --overwrite updates row 5 in place and names it.
    with contextlib.closing(sqlite3.connect(env.blue_db)) as db, db:
        db.execute("UPDATE users SET email = 'z@x' WHERE id = 7")
    forced = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("users",),
                                                       overwrite=True))  # fmt: skip
    assert forced.ok, forced.problems
    assert forced.items[0].changed == ("[5]",)
    assert "updated in" in "\n".join(forced.notes())
    assert content(env.blue_db, "users") == [(5, "a@x"), (7, "z@x")]


async def test_insert_blocked_by_unique_is_reported_not_forced(env: Env) -> None:
    make_app_db(env.green_db, {"users": [(8, "a@x")]})
    make_app_db(env.blue_db, {"users": [(7, "a@x")]})
    result = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("users",),
                                                       overwrite=True))  # fmt: skip
    assert not result.ok
    assert result.conflicts == 1
    assert result.copied == 0
    assert content(env.blue_db, "users") == [(7, "a@x")]


async def test_target_changing_during_the_run_fails_verification_naming_the_table(
    env: Env,
) -> None:
    make_db(env.blue_db, [])
    make_db(env.green_db, [(i, f"f{i}", "green") for i in range(1, 201)])
    applying = asyncio.Event()

    def on_progress(p: Progress) -> None:
        if p.phase == "apply" and 0 < p.done < p.total:
            applying.set()

    request = MigrationRequest(GREEN, BLUE, tables=("uploads",), row_delay=0.01)
    task = asyncio.create_task(env.runner.migrate(request, on_progress))
    await asyncio.wait_for(applying.wait(), 20)
    # The live app writes between two slices (it waits at most one slice for the lock).
    with contextlib.closing(sqlite3.connect(env.blue_db, timeout=5)) as db, db:
        db.execute("INSERT INTO uploads (id, name, colour) VALUES (5000, 'live', 'blue')")
    result = await asyncio.wait_for(task, 60)
    assert not result.ok
    assert result.items[0].verified is False
    assert any("verification failed for blue:" in p and "uploads" in p for p in result.problems)
    assert count(env.blue_db, "uploads") == 201


async def test_planner_warns_when_ids_would_move_into_the_source_range(env: Env) -> None:
    make_db(env.blue_db, [(1, "a", "blue"), (2, "b", "blue")])
    make_db(env.green_db, [(1, "a", "blue"), (2, "b", "blue"), (1000, "g", "green")])
    dry = await env.runner.migrate(MigrationRequest(GREEN, BLUE, tables=("uploads",),
                                                    dry_run=True))  # fmt: skip
    note = dry.items[0].note
    assert "target 1-2, next 3" in note
    assert "source 1-1000, next 1001" in note
    assert "next id to 1001" in note
