"""The script migrations run on a host (``python3 -c``): SQLite inspect/export/apply/backup.

Standard library only and self-contained: its source is sent over SSH as the argument of
``python3 -c`` and runs with whatever python3 the host has, so it must not import
anything of bgconsole. ``python3`` is used rather than the ``sqlite3`` CLI because the
CLI is often missing on application hosts while python3 (with its built-in sqlite3
module) is on every Linux host we target, and because the backup API and per-row
conflict handling need a real program, not a shell pipeline.

Usage: ``python3 -c SOURCE COMMAND JSON``; every command prints JSON lines on stdout
and bulky data goes through files (fetched or sent by SFTP), because SSH output lines
are capped in length. Errors print ``error: ...`` on stderr and exit with status 3.

Commands:
    inspect  {db, tables?}            -> file of every row's key and content hash
    export   {db, request}            -> JSON-lines file of the requested rows
    apply    {db, rows, overwrite, delay} -> one transaction per table; progress lines
    tail     {db, marks, limit}       -> rows above per-table rowid marks (mirror)
    backup   {db}                     -> a consistent copy (backup API) in a temp file
    install  {db, new}                -> keep the old db as a backup, restore the new one
    check    {db}                     -> integrity_check and row counts
    cleanup  {paths}                  -> remove transfer files
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

BUSY_MS = 10000
"""How long a write waits for the application's own writers (SQLite busy timeout)."""
PROGRESS_EVERY = 0.2
SAMPLE = 20
"""Conflicting keys listed by name; the rest are only counted."""


class Failure(Exception):
    """An error with a message for the operator."""


def encode(value: Any) -> Any:
    """A column value as JSON: blobs become {"$b": base64}."""
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict) and "$b" in value:
        return base64.b64decode(value["$b"])
    return value


def row_hash(values: Any) -> str:
    text = json.dumps([encode(v) for v in values], separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(db: str, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not os.path.exists(db):
            raise Failure("no database at " + db)
        conn = sqlite3.connect("file:" + db + "?mode=ro", uri=True, timeout=BUSY_MS / 1000)
    else:
        directory = os.path.dirname(db) or "."
        if not os.path.isdir(directory):
            raise Failure("directory " + directory + " does not exist")
        conn = sqlite3.connect(db, timeout=BUSY_MS / 1000)
    # Transactions are managed explicitly (BEGIN ... COMMIT), not by the module.
    conn.isolation_level = None
    return conn


def tables(conn: sqlite3.Connection, wanted: list[str] | None = None) -> dict[str, Any]:
    """Ordinary tables: name -> {sql, columns, pk, rowid}."""
    found: dict[str, Any] = {}
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    for name, sql in rows:
        if wanted and name not in wanted:
            continue
        if (sql or "").upper().startswith("CREATE VIRTUAL"):
            continue  # virtual tables hold no rows of their own
        info = conn.execute("PRAGMA table_info(" + quote(name) + ")").fetchall()
        columns = [r[1] for r in info]
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0]
        found[name] = {"sql": sql, "columns": columns, "pk": pk, "rowid": not pk}
    if wanted:
        missing = [t for t in wanted if t not in found]
        if missing:
            raise Failure("no table " + ", ".join(missing))
    return found


def key_select(name: str, meta: dict[str, Any]) -> tuple[str, int]:
    """SELECT of key columns then every column, and the number of key columns."""
    cols = ", ".join(quote(c) for c in meta["columns"])
    if meta["rowid"]:
        return "SELECT rowid, " + cols + " FROM " + quote(name), 1
    keys = ", ".join(quote(c) for c in meta["pk"])
    return "SELECT " + keys + ", " + cols + " FROM " + quote(name), len(meta["pk"])


def key_of(row: Any, width: int) -> str:
    return json.dumps([encode(v) for v in row[:width]], separators=(",", ":"))


PREFIX = "bgconsole-migrate-"
"""Temp files are named PREFIX + the application's tag, so a sweep finds only its own."""


def temp_path(near: str | None, suffix: str) -> str:
    handle, path = tempfile.mkstemp(prefix=PREFIX, suffix=suffix, dir=near)
    os.close(handle)
    return path


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def cmd_inspect(args: dict[str, Any]) -> None:
    out = temp_path(None, ".inspect.json")
    if args.get("missing_ok") and not os.path.exists(args["db"]):
        # A target that does not exist yet is an empty one: apply creates it.
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"tables": {}, "missing": True}, f)
        emit({"path": out, "tables": {}, "missing": True})
        return
    conn = connect(args["db"], readonly=True)
    conn.execute("BEGIN")  # one read transaction: every table from the same moment
    result: dict[str, Any] = {}
    for name, meta in tables(conn, args.get("tables")).items():
        select, width = key_select(name, meta)
        rows = [[key_of(r, width), row_hash(r[width:])] for r in conn.execute(select)]
        result[name] = dict(meta, rows=rows)
    conn.execute("COMMIT")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"tables": result}, f, separators=(",", ":"))
    emit({"path": out, "tables": {t: len(m["rows"]) for t, m in result.items()}})


def cmd_export(args: dict[str, Any]) -> None:
    conn = connect(args["db"], readonly=True)
    with open(args["request"], encoding="utf-8") as f:
        request = json.load(f)
    out = temp_path(None, ".rows.jsonl")
    total = 0
    conn.execute("BEGIN")
    all_tables = tables(conn, list(request))
    with open(out, "w", encoding="utf-8") as f:
        for name, keys in request.items():
            meta = all_tables[name]
            select, width = key_select(name, meta)
            where = (
                "rowid = ?"
                if meta["rowid"]
                else " AND ".join(quote(c) + " = ?" for c in meta["pk"])
            )
            f.write(json.dumps({"table": name, **meta}) + "\n")
            for key in keys:
                params = [decode(v) for v in json.loads(key)]
                row = conn.execute(select + " WHERE " + where, params).fetchone()
                if row is None:
                    continue  # deleted on the source since the plan; nothing to copy
                values = ([row[0]] if meta["rowid"] else []) + list(row[width:])
                f.write(json.dumps([encode(v) for v in values], separators=(",", ":")) + "\n")
                total += 1
    conn.execute("COMMIT")
    emit({"path": out, "rows": total})


def cmd_tail(args: dict[str, Any]) -> None:
    """Rows above each table's rowid mark, oldest first, at most ``limit`` per table.

    A mark of null starts at the table's current end (nothing exported). Reports, per
    table, the last rowid exported (the next mark) and how many rows were above the mark.
    """
    conn = connect(args["db"], readonly=True)
    out = temp_path(None, ".rows.jsonl")
    marks = args["marks"]
    limit = int(args.get("limit", 1000))
    last: dict[str, int] = {}
    pending: dict[str, int] = {}
    total = 0
    conn.execute("BEGIN")
    all_tables = tables(conn, list(marks))
    with open(out, "w", encoding="utf-8") as f:
        for name, mark in marks.items():
            meta = all_tables[name]
            cols = ", ".join(quote(c) for c in meta["columns"])
            if mark is None:
                mark = conn.execute("SELECT max(rowid) FROM " + quote(name)).fetchone()[0] or 0
            last[name] = int(mark)
            pending[name] = conn.execute(
                "SELECT count(*) FROM " + quote(name) + " WHERE rowid > ?", (int(mark),)
            ).fetchone()[0]
            f.write(json.dumps({"table": name, **meta}) + "\n")
            select = "SELECT rowid, " + cols + " FROM " + quote(name)
            rows = conn.execute(select + " WHERE rowid > ? ORDER BY rowid LIMIT ?", (mark, limit))
            for row in rows:
                values = ([row[0]] if meta["rowid"] else []) + list(row[1:])
                f.write(json.dumps([encode(v) for v in values], separators=(",", ":")) + "\n")
                last[name] = row[0]
                total += 1
    conn.execute("COMMIT")
    emit({"path": out, "rows": total, "last": last, "pending": pending})


def _blocks(path: str) -> Iterator[tuple[dict[str, Any], list[list[Any]]]]:
    """(header, rows) per table of an exported JSON-lines file."""
    header: dict[str, Any] | None = None
    rows: list[list[Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            if isinstance(item, dict):
                if header is not None:
                    yield header, rows
                header, rows = item, []
            else:
                rows.append([decode(v) for v in item])
    if header is not None:
        yield header, rows


def cmd_apply(args: dict[str, Any]) -> None:
    conn = connect(args["db"], readonly=False)
    verb = "INSERT OR REPLACE" if args.get("overwrite") else "INSERT"
    delay = float(args.get("delay") or 0)
    for header, rows in _blocks(args["rows"]):
        name = header["table"]
        cols = list(header["columns"])
        if header["rowid"]:
            cols = ["rowid", *cols]
        sql = (
            verb
            + " INTO "
            + quote(name)
            + " ("
            + ", ".join(quote(c) for c in cols)
            + ") VALUES ("
            + ", ".join("?" for _ in cols)
            + ")"
        )
        width = 1 if header["rowid"] else len(header["pk"])
        key_positions = (
            [0] if header["rowid"] else [header["columns"].index(c) for c in header["pk"]]
        )
        # IMMEDIATE takes the write lock now, so the app's writers wait instead of failing
        # halfway; everything below commits together or not at all.
        conn.execute("BEGIN IMMEDIATE")
        created = False
        if (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
            is None
        ):
            conn.execute(header["sql"])
            created = True
        inserted = 0
        conflicts = 0
        sample: list[dict[str, str]] = []
        last = time.monotonic()
        for done, row in enumerate(rows, 1):
            try:
                conn.execute(sql, row)
                inserted += 1
            except sqlite3.IntegrityError as e:
                conflicts += 1
                if len(sample) < SAMPLE:
                    key = [encode(row[i]) for i in key_positions]
                    sample.append({"key": json.dumps(key[:width]), "error": str(e)})
            if delay:
                time.sleep(delay)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                emit({"progress": name, "done": done, "total": len(rows)})
        conn.execute("COMMIT")
        emit(
            {
                "table": name,
                "inserted": inserted,
                "conflicts": conflicts,
                "sample": sample,
                "created": created,
            }
        )


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        name: conn.execute("SELECT count(*) FROM " + quote(name)).fetchone()[0]
        for name in tables(conn)
    }


def cmd_backup(args: dict[str, Any]) -> None:
    src = connect(args["db"], readonly=True)
    out = temp_path(None, ".snapshot.db")
    dst = sqlite3.connect(out)
    # The backup API copies a consistent state even while the application writes.
    src.backup(dst)
    result = {"path": out, "size": os.path.getsize(out), "counts": counts(dst)}
    dst.close()
    emit(result)


def cmd_install(args: dict[str, Any]) -> None:
    db = args["db"]
    new = args["new"]
    fresh = sqlite3.connect(new)
    check = fresh.execute("PRAGMA integrity_check").fetchone()[0]
    if check != "ok":
        raise Failure("the transferred snapshot is damaged: " + str(check))
    backup = None
    if os.path.exists(db):
        backup = db + ".bak-" + time.strftime("%Y%m%d-%H%M%S")
        old = connect(db, readonly=False)
        keep = sqlite3.connect(backup)
        old.backup(keep)
        keep.close()
        # Restore into the live file with the backup API rather than os.replace: it is one
        # write transaction (all or nothing), and the app's open connections and WAL stay
        # valid; renaming a file under a WAL database corrupts it.
        fresh.backup(old)
        result = {"backup": backup, "counts": counts(old), "replaced": True}
        old.close()
        fresh.close()
        os.remove(new)
    else:
        fresh.close()
        os.replace(new, db)  # atomic: the db appears complete or not at all
        conn = connect(db, readonly=True)
        result = {"backup": None, "counts": counts(conn), "replaced": False}
    conn = connect(db, readonly=True)
    result["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
    emit(result)


def cmd_check(args: dict[str, Any]) -> None:
    if args.get("missing_ok") and not os.path.exists(args["db"]):
        emit({"integrity": "missing", "counts": {}, "missing": True})
        return
    conn = connect(args["db"], readonly=True)
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    emit({"integrity": integrity, "counts": counts(conn)})


def cmd_cleanup(args: dict[str, Any]) -> None:
    for path in args["paths"]:
        if os.path.basename(path).startswith("bgconsole-migrate-") and os.path.exists(path):
            os.remove(path)
    emit({"ok": True})


def cmd_sweep(args: dict[str, Any]) -> None:
    """Remove what an interrupted run of this application left: its temp files, in the
    temp dir and beside the database (``<db>.<PREFIX>...``)."""
    beside = os.path.basename(args["db"]) + "." + PREFIX
    places = {
        tempfile.gettempdir(): (PREFIX,),
        os.path.dirname(os.path.abspath(args["db"])): (PREFIX, beside),
    }
    removed = 0
    for place, prefixes in places.items():
        try:
            names = os.listdir(place)
        except OSError:
            continue
        for name in names:
            if name.startswith(prefixes):
                try:
                    os.remove(os.path.join(place, name))
                    removed += 1
                except OSError:
                    pass
    emit({"removed": removed})


COMMANDS: dict[str, Any] = {
    "sweep": cmd_sweep,
    "inspect": cmd_inspect,
    "export": cmd_export,
    "tail": cmd_tail,
    "apply": cmd_apply,
    "backup": cmd_backup,
    "install": cmd_install,
    "check": cmd_check,
    "cleanup": cmd_cleanup,
}


def main(argv: list[str]) -> int:
    global PREFIX
    try:
        args = json.loads(argv[2])
        if args.get("tag"):
            PREFIX = "bgconsole-migrate-" + args["tag"] + "-"
        COMMANDS[argv[1]](args)
    except Failure as e:
        sys.stderr.write("error: " + str(e) + "\n")
        return 3
    except (sqlite3.Error, OSError, ValueError, KeyError) as e:
        sys.stderr.write("error: " + type(e).__name__ + ": " + str(e) + "\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
