"""Helpers for the migration tests: configs whose two colours are SQLite files behind sshd."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from servers import SshServer

from console.core.config import Config, load_config
from console.core.control import ControlPlane
from console.core.migrate.runner import MigrationRunner
from console.core.ssh import SshPool

APP = "migratetest"

UPLOADS = (
    "CREATE TABLE uploads (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
    "colour TEXT NOT NULL, data BLOB)"
)
NOTES = "CREATE TABLE notes (body TEXT, n INTEGER)"
"""A table without a primary key: rows are matched by rowid."""


def config_data(
    ssh: SshServer,
    control_url: str,
    blue_db: Path,
    green_db: Path,
    *,
    blue_redis: str | None = None,
    green_redis: str | None = None,
    patterns: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Both colours on the same sshd (it serves this machine), each with its own db file."""

    def env(db: Path, redis: str | None, port: int) -> dict[str, Any]:
        data: dict[str, Any] = {"sqlite": [str(db)]}
        if redis:
            data["redis"] = redis
        if patterns:
            data["redis_keys"] = list(patterns)
        return {
            "url": f"http://127.0.0.1:{port}",
            "ssh": ssh.target,
            "identity": str(ssh.client_key_path),
            "data": data,
        }

    return {
        "console": {"name": APP},
        # Each test's own work directory on the (loopback) host, beside its databases.
        "migrate": {"work_dir": str(blue_db.parent.parent / "work")},
        "control": {"redis": control_url, "timeout": 2.0},
        "router": {"kind": "builtin"},
        "ssh": {
            "use_config": False,
            "use_agent": False,
            "known_hosts": str(ssh.known_hosts_path),
            "connect_timeout": 5.0,
            "keepalive": 0.0,
            "command_timeout": 30.0,
        },
        "env": {
            "blue": env(blue_db, blue_redis, 9),
            "green": env(green_db, green_redis, 10),
        },
    }


def write_config(path: Path, data: dict[str, Any]) -> Config:
    """Write the TOML and load it back."""
    path.write_text(tomli_w.dumps(data))
    return load_config(path)


def make_db(path: Path, uploads: list[tuple[int, str, str]], notes: tuple[str, ...] = ()) -> None:
    """A database with ``uploads`` (id, name, colour) and ``notes`` rows."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(UPLOADS)
        db.execute(NOTES)
        db.executemany(
            "INSERT INTO uploads (id, name, colour, data) VALUES (?, ?, ?, ?)",
            [(i, name, colour, bytes([i % 256]) * 3) for i, name, colour in uploads],
        )
        db.executemany("INSERT INTO notes (body, n) VALUES (?, ?)", [(b, len(b)) for b in notes])


def rows(path: Path, table: str, order: str = "rowid") -> list[tuple[Any, ...]]:
    """Every row of a table (with its rowid first), in ``order``."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        result = db.execute(f"SELECT rowid, * FROM {table} ORDER BY {order}").fetchall()
    return [tuple(r) for r in result]


def count(path: Path, table: str) -> int:
    """Rows in a table."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@dataclass
class Env:
    """What one migration test works with: config, clients, and the two databases."""

    config: Config
    control: ControlPlane
    pool: SshPool
    runner: MigrationRunner
    blue_db: Path
    green_db: Path


APP_SCHEMA = (
    # No key at all, as many real schemas have: whole-row identity, duplicates allowed.
    "CREATE TABLE files (name TEXT, size INTEGER, data BLOB)",
    # A key that is not the rowid alias.
    "CREATE TABLE events (id BIGINT PRIMARY KEY, body TEXT)",
    # Composite key, no rowid.
    "CREATE TABLE tags (item INTEGER NOT NULL, tag TEXT NOT NULL, weight REAL, "
    "PRIMARY KEY (item, tag)) WITHOUT ROWID",
    # Rowid alias plus a UNIQUE column.
    "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE)",
    # No primary key but a unique NOT NULL column: that is the identity.
    "CREATE TABLE accounts (email TEXT NOT NULL UNIQUE, plan TEXT)",
    # Foreign key and NULLs.
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), "
    "note TEXT, paid INTEGER)",
)


def make_app_db(path: Path, rows_by_table: dict[str, list[tuple[Any, ...]]]) -> None:
    """A database with :data:`APP_SCHEMA` holding ``rows_by_table`` (full rows)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA journal_mode=WAL")
        for sql in APP_SCHEMA:
            db.execute(sql)
        for table, values in rows_by_table.items():
            if values:
                marks = ", ".join("?" for _ in values[0])
                db.executemany(f"INSERT INTO {table} VALUES ({marks})", values)


def content(path: Path, table: str) -> list[tuple[Any, ...]]:
    """A table's rows without rowids, sorted (a multiset compare)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        found = db.execute(f"SELECT * FROM {table}").fetchall()
    return sorted((tuple(r) for r in found), key=repr)
