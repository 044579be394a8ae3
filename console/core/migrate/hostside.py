"""The script migrations run on a host (``python3 -S -c``): SQLite inspect/export/apply/backup.

Standard library only and self-contained: its source is sent over SSH as the argument of
``python3 -c`` and runs with whatever python3 the host has, so it must not import
anything of bgconsole. ``python3`` is used rather than the ``sqlite3`` CLI because the
CLI is often missing on application hosts while python3 (with its built-in sqlite3
module) is on every Linux host we target, and because the backup API and per-row
conflict handling need a real program, not a shell pipeline.

Usage: ``python3 -S -c SOURCE COMMAND JSON``; every command prints JSON lines on stdout
and bulky data goes through files (fetched or sent by SFTP), because SSH output lines
are capped in length. Errors print ``error: ...`` on stderr and exit with status 3.

Every file a run makes lives in the work directory (``dir``) and is named
``bgconsole-migrate-<run>-...``; the run's ``hold`` command keeps an exclusive lock on
``bgconsole-migrate-<run>.lock`` for as long as the run's client is connected. A sweep
removes a run's files only once it can take that lock itself: the kernel drops a lock
when its holder dies, so a run is provably dead then, whatever application or console
name it belongs to. A run that ends normally has the client remove its files, journal
and lock file (a plain ``rm``, see hostrun.py).

Row identity (never rowid: two databases number their rows independently): the declared
primary key; else the narrowest unique index over NOT NULL columns; else the whole row,
as a multiset (the key is the row's hash and a row may be present several times).

Commands:
    hold     {dir, run, sweep?}          -> keeps the run's lock until the client is gone
                                          (and first sweeps, as below, for those dbs)
    sweep    {dir, dbs}                  -> removes the files of dead runs, returns journals
    inspect  {db, tables?}               -> file of every row's key and content hash
    digest   {db, tables?}               -> row count and digest per table (verification)
    export   {db, request}               -> SQLite file of the requested rows and ops
    apply    {db, rows, slice, delay, digest?, arrive?} -> short transactions; progress;
                                          journal; the digest of the ``digest`` tables;
                                          ``arrive``: first wait that long for ``rows``
    tail     {db, marks, limit}          -> rows above per-table rowid marks (mirror)
    backup   {db}                        -> a consistent copy (backup API) in a temp file
    install  {db, new}                   -> keep the old db as a backup, restore the new one
    check    {db}                        -> integrity_check and row counts
    cleanup  {paths}                     -> remove transfer files
    capture_setup / capture_teardown {db} -> change-capture triggers (mirror), idempotent
    changes  {db, after, limit, wait?}   -> captured changes after a sequence number, lag
    cursor   {db, source}                -> the last change applied to a target
    apply_changes {db, rows, source}     -> apply captured changes in order, exactly once
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import marshal
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

BUSY_MS = 10000
"""How long a write waits for the application's own writers (SQLite busy timeout)."""
PROGRESS_EVERY = 0.2
SAMPLE = 20
"""Conflicting keys listed by name; the rest are only counted."""
PREFIX = "bgconsole-migrate-"
RUN_ID_LEN = 12
"""Run ids are 12 hex digits (the client's secrets.token_hex(6))."""
EXIT_CLIENT_GONE = 4
VERIFY_GRACE = 0.15
"""Seconds between the apply's last commit and its verification read (see cmd_apply)."""
CHECKPOINT_EVERY = 0.5
"""Seconds of applying between WAL checkpoints (a few MB of WAL at most)."""
CHUNK = 256
"""Rows per executemany: a millisecond or two of work, well inside one slice."""
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}


class Failure(Exception):
    """An error with a message for the operator."""


class ClientGone(Exception):
    """The client that started this command is gone: stop, and commit nothing more."""


class Context:
    """Where this run keeps its files."""

    dir = "/var/tmp/bgconsole-migrate"
    run = "000000000000"
    db_tag = "db"

    @classmethod
    def name(cls, suffix: str) -> str:
        return os.path.join(cls.dir, PREFIX + cls.run + "-" + suffix)


def encode(value: Any) -> Any:
    """A column value as JSON: blobs become {"$b": base64}."""
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$b" in value:
            return base64.b64decode(value["$b"])
        if "$x" in value:  # a BLOB as the change-capture triggers write it (hex)
            return bytes.fromhex(value["$x"])
        if "$r" in value:  # a REAL with all 17 digits (SQLite's JSON keeps only 15)
            return float(value["$r"])
    return value


def row_hash(values: Any) -> str:
    """64 bits of BLAKE2b over the row's values, marshalled (see :func:`row_digest`)."""
    return row_digest(values).hex()


def row_digest(values: Any) -> bytes:
    """8 bytes of BLAKE2b over ``marshal`` format 2 of the row as a tuple.

    Format 2 is pinned because it is deterministic and has not changed since Python 2.5:
    no reference flags (format 3+ marks objects by refcount), ints in 15-bit digits on
    every platform, floats as IEEE bytes, text as UTF-8; int 1, real 1.0, text '1' and
    BLOB x'31' all differ, as SQLite tells them apart. It is several times cheaper than
    hashing a repr, and every row is hashed on each inspection and verification.
    """
    row = values if type(values) is tuple else tuple(values)
    return _blake2b(_marshal(row, 2), digest_size=8).digest()


_blake2b = hashlib.blake2b
_marshal = marshal.dumps


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


def emit(data: Any) -> None:
    """One JSON line to the client. A closed channel makes this raise ClientGone."""
    try:
        sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError) as e:
        raise ClientGone(str(e)) from None


def work_file(suffix: str) -> str:
    os.makedirs(Context.dir, mode=0o700, exist_ok=True)
    return Context.name(suffix)


def db_file(suffix: str) -> str:
    """A work file of this run for this database: both databases of a pair may live on
    one machine and work concurrently (inspected at the same time, say)."""
    return work_file(Context.db_tag + "-" + suffix)


# -- schema and identity -------------------------------------------------------------------


def identity(conn: sqlite3.Connection, name: str, info: list[Any]) -> dict[str, Any]:
    """How rows of a table are told apart: pk, unique (non-null) or the whole row."""
    pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0]
    if pk:
        return {"kind": "pk", "columns": pk}
    notnull = {r[1] for r in info if r[3]}
    best: list[str] | None = None
    for index in conn.execute("PRAGMA index_list(" + quote(name) + ")").fetchall():
        unique, partial = index[2], index[4] if len(index) > 4 else 0
        if not unique or partial:
            continue  # a partial index is unique only where its WHERE holds
        cols = [r[2] for r in conn.execute("PRAGMA index_info(" + quote(index[1]) + ")")]
        # NULLs never collide in a UNIQUE index, so only NOT NULL columns identify a row.
        if None in cols or not all(c in notnull for c in cols):
            continue
        if best is None or (len(cols), cols) < (len(best), best):
            best = cols
    if best is not None:
        return {"kind": "unique", "columns": best}
    return {"kind": "row", "columns": [r[1] for r in info]}


def has_rowid(conn: sqlite3.Connection, name: str) -> bool:
    try:
        conn.execute("SELECT rowid FROM " + quote(name) + " LIMIT 0")
    except sqlite3.OperationalError:
        return False  # WITHOUT ROWID
    return True


def id_column(info: list[Any]) -> str | None:
    """The rowid alias (``INTEGER PRIMARY KEY``): the column that ids are handed out in."""
    pk = [r for r in info if r[5] > 0]
    if len(pk) == 1 and str(pk[0][2]).upper() == "INTEGER":
        return str(pk[0][1])
    return None


def tables(conn: sqlite3.Connection, wanted: list[str] | None = None) -> dict[str, Any]:
    """Ordinary tables: name -> {sql, columns, identity, rowid, id_column}."""
    found: dict[str, Any] = {}
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE '\\_bgconsole\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    for name, sql in rows:
        if wanted and name not in wanted:
            continue
        if (sql or "").upper().startswith("CREATE VIRTUAL"):
            continue  # virtual tables hold no rows of their own
        info = conn.execute("PRAGMA table_info(" + quote(name) + ")").fetchall()
        found[name] = {
            "sql": sql,
            "columns": [r[1] for r in info],
            "identity": identity(conn, name, info),
            "rowid": has_rowid(conn, name),
            "id_column": id_column(info),
        }
    if wanted:
        missing = [t for t in wanted if t not in found]
        if missing:
            raise Failure("no table " + ", ".join(missing))
    return found


def key_of(meta: dict[str, Any], row: Any) -> str:
    """A row's identity as text: its key columns as JSON, or its hash (whole-row identity)."""
    keyer = meta.get("_keyer")
    if keyer is None:
        keyer = meta["_keyer"] = make_keyer(meta)
    return str(keyer(row))


def make_keyer(meta: dict[str, Any]) -> Callable[[Any], str]:
    """The function :func:`key_of` applies, built once per table: a per-row call is what
    an inspection of many rows spends its time on, so the common single integer key skips
    the JSON encoder (the text is the same: ``[5]``)."""
    ident = meta["identity"]
    if ident["kind"] == "row":
        return row_hash
    positions = [meta["columns"].index(c) for c in ident["columns"]]
    dumps = json.dumps

    def general(row: Any) -> str:
        return dumps([encode(row[i]) for i in positions], separators=(",", ":"))

    if len(positions) != 1:
        return general
    at = positions[0]

    def single(row: Any) -> str:
        value = row[at]
        if type(value) is int:
            return "[" + str(value) + "]"
        return general(row)

    return single


def select_all(name: str, meta: dict[str, Any]) -> str:
    return "SELECT " + ", ".join(quote(c) for c in meta["columns"]) + " FROM " + quote(name)


def id_range(conn: sqlite3.Connection, name: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    col = meta["id_column"]
    if col is None:
        return None
    low, high = conn.execute(
        "SELECT min(" + quote(col) + "), max(" + quote(col) + ") FROM " + quote(name)
    ).fetchone()
    seq = None
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).fetchone()
        seq = found[0] if found else None
    return {"column": col, "min": low, "max": high, "seq": seq}


# -- commands ------------------------------------------------------------------------------


def cmd_hold(args: dict[str, Any]) -> None:
    """Hold the run's lock while the client is connected (see the module docstring)."""
    work_file("lock")  # makes the directory
    path = os.path.join(Context.dir, PREFIX + Context.run + ".lock")
    handle = open(path, "a+")  # noqa: SIM115 (held open until this process ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shared = False
    except OSError:
        # Run ids are random: the holder can only be this run's other holder (two host
        # names for one machine), which keeps the run alive as well as this one would.
        shared = True
    parent = os.getppid()
    # "python": this interpreter's own path, for the run's next commands: "python3" may
    # be a shim (pyenv, asdf) that costs more than most commands take.
    held: dict[str, Any] = {"held": path, "shared": shared, "pid": os.getpid(),
                            "pgid": os.getpgrp(), "python": sys.executable}  # fmt: skip
    if args.get("sweep") is not None:
        # The sweep rides on the hold (which must come first: it is what keeps this
        # run's own files from a concurrent sweep): a command less per host and run.
        try:
            held.update(sweep(list(args["sweep"])))
        except (OSError, sqlite3.Error, ValueError) as e:
            held["sweep_error"] = str(e)  # best effort, as a sweep of its own is
    emit(held)
    while os.getppid() == parent:
        time.sleep(0.5)
        emit({"alive": time.time()})  # raises ClientGone once the channel is closed


def _run_of(name: str) -> str | None:
    if not name.startswith(PREFIX):
        return None
    run = name[len(PREFIX) : len(PREFIX) + RUN_ID_LEN]
    if len(run) != RUN_ID_LEN or any(c not in "0123456789abcdef" for c in run):
        return None
    return run


def _journal(path: str) -> list[Any]:
    entries: list[Any] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    break  # a line cut short by the crash
    except OSError:
        pass
    return entries


def _same_file(handle: Any, path: str) -> bool:
    """Whether ``path`` still names the file ``handle`` has locked: a sweep that took the
    lock just after another one finished (and removed the file) must not sweep again."""
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def cmd_sweep(args: dict[str, Any]) -> None:
    emit(sweep(args["dbs"]))


def sweep(dbs: list[str]) -> dict[str, Any]:
    """Remove the files of runs that are provably dead; return what their journals say."""
    try:
        names = os.listdir(Context.dir)
    except OSError:
        names = []
    runs = {r for r in (_run_of(n) for n in names) if r and r != Context.run}
    places = [Context.dir, *sorted({os.path.dirname(os.path.abspath(d)) for d in dbs})]
    dead: list[dict[str, Any]] = []
    removed = 0
    for run in sorted(runs):
        lock = os.path.join(Context.dir, PREFIX + run + ".lock")
        try:
            handle = open(lock)  # noqa: SIM115
        except OSError:
            continue  # no lock file: nothing proves this run is over; leave it alone
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its holder lives: the run is in flight
            if not _same_file(handle, lock):
                continue  # another sweep (another host name for this machine) took it
            journal = _journal(os.path.join(Context.dir, PREFIX + run + "-journal.jsonl"))
            dead.append({"run": run, "journal": journal})
            for place in places:
                try:
                    here = os.listdir(place)
                except OSError:
                    continue
                for name in here:
                    if PREFIX + run in name and not name.endswith(".lock"):
                        try:
                            os.remove(os.path.join(place, name))
                            removed += 1
                        except OSError:
                            pass
            with contextlib.suppress(OSError):
                os.remove(lock)  # last: until now a crash of this sweep leaves the run findable
    return {"removed": removed, "dead": dead}


def cmd_inspect(args: dict[str, Any]) -> None:
    out = db_file("inspect.json")
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
        rows = _hashed_rows(conn.execute(select_all(name, meta)), meta)
        max_rowid = None
        if meta["rowid"]:
            max_rowid = conn.execute("SELECT max(rowid) FROM " + quote(name)).fetchone()[0] or 0
        meta.pop("_keyer", None)
        result[name] = dict(meta, rows=rows, ids=id_range(conn, name, meta), max_rowid=max_rowid)
    # The change log's position at this very moment: a mirror's catch-up copies this
    # state, and the captured changes after it follow.
    top = None
    if _captured(conn):
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM " + CHANGES).fetchone()[0]
    conn.execute("COMMIT")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"tables": result, "changes_top": top}, f, separators=(",", ":"))
    emit({"path": out, "tables": {t: len(m["rows"]) for t, m in result.items()}})


def _hashed_rows(cursor: sqlite3.Cursor, meta: dict[str, Any]) -> dict[str, Any]:
    """key -> content hash (keyed identities), or hash -> copies (whole-row identity).

    The loop is the inspection's hot spot: names are bound locally and the hash is
    inlined (see row_digest)."""
    rows: dict[str, Any] = {}
    blake, dump = _blake2b, _marshal
    if meta["identity"]["kind"] == "row":
        get = rows.get
        for row in cursor:
            h = blake(dump(row, 2), digest_size=8).hexdigest()
            rows[h] = get(h, 0) + 1
        return rows
    keyer = make_keyer(meta)
    for row in cursor:
        rows[keyer(row)] = blake(dump(row, 2), digest_size=8).hexdigest()
    return rows


def _digest(cursor: sqlite3.Cursor) -> tuple[int, int]:
    """(rows, sum of their hashes) over a cursor of whole rows."""
    total = 0
    count = 0
    blake, dump, from_bytes = _blake2b, _marshal, int.from_bytes
    for row in cursor:
        total += from_bytes(blake(dump(row, 2), digest_size=8).digest(), "big")
        count += 1
    return count, total


def cmd_digest(args: dict[str, Any]) -> None:
    """Row count and order-independent digest (sum of row hashes mod 2**64) per table:
    the verification's whole-table check, without shipping every key."""
    conn = connect(args["db"], readonly=True)
    emit({"tables": digests(conn, args.get("tables"))})


def digests(conn: sqlite3.Connection, wanted: list[str] | None) -> dict[str, Any]:
    """Row count and digest of each table (all, or ``wanted``), in one read transaction."""
    conn.execute("BEGIN")
    result: dict[str, Any] = {}
    for name, meta in tables(conn, wanted).items():
        rows, total = _digest(conn.execute(select_all(name, meta)))
        result[name] = {"count": rows, "digest": "%016x" % (total % (1 << 64))}
    conn.execute("COMMIT")
    return result


def cmd_export(args: dict[str, Any]) -> None:
    """The rows a plan asks for, by identity: ``{table: {insert: {key: n}, update: [key]}}``.

    One scan per table (a full scan beats a point query per key at these sizes, and the
    whole-row identity has no index to look up anyway), of the key columns and rowid
    only unless rows are identified whole; the chosen rows then go from the table into
    the export file inside SQLite (see :func:`export_table`), by rowid, in the same read
    transaction.
    """
    conn = connect(args["db"], readonly=True)
    with open(args["request"], encoding="utf-8") as f:
        request = json.load(f)
    out = db_file("rows.db")
    with contextlib.suppress(OSError):
        os.remove(out)
    # A work file, not a database anyone relies on: no journal and no fsync (a crash
    # loses only the run that was writing it).
    conn.execute("ATTACH DATABASE ? AS bgout", (out,))
    conn.execute("PRAGMA bgout.journal_mode=OFF")
    conn.execute("PRAGMA bgout.synchronous=OFF")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE bgout._tables (n INTEGER PRIMARY KEY, header TEXT NOT NULL)")
    all_tables = tables(conn, list(request))
    total = 0
    for index, (name, wanted) in enumerate(request.items()):
        meta = all_tables[name]
        into = export_table(conn, index, name, meta)
        alias = _rowid_alias(meta)
        if alias is None:
            total += _export_rows(conn, into, name, meta, wanted)
            continue
        runs, count = _picks(conn, name, meta, wanted, alias)
        cols = ", ".join(quote(c) for c in meta["columns"])
        conn.executemany(
            "INSERT INTO " + into + " SELECT ?, " + cols + " FROM main." + quote(name)
            + " WHERE " + alias + " BETWEEN ? AND ? ORDER BY " + alias,
            runs,
        )  # fmt: skip
        total += count
    conn.execute("COMMIT")
    emit({"path": out, "rows": total})


def _rowid_alias(meta: dict[str, Any]) -> str | None:
    """A name for the rowid no column shadows, or None (WITHOUT ROWID, or all shadowed)."""
    if not meta["rowid"]:
        return None
    for alias in ("_rowid_", "rowid", "oid"):
        if alias not in {c.lower() for c in meta["columns"]}:
            return alias
    return None


def _wanted(wanted: dict[str, Any]) -> tuple[dict[str, int], set[str]]:
    return dict(wanted.get("insert", {})), set(wanted.get("update", ()))


def _picks(
    conn: sqlite3.Connection, name: str, meta: dict[str, Any], wanted: dict[str, Any], alias: str
) -> tuple[list[list[Any]], int]:
    """The requested rows as runs ``[op, first rowid, last rowid]`` of consecutive rows
    (in rowid order) with the same operation, and how many rows they hold: usually a
    handful of runs, each copied by one statement. The loops are the export's hot spot:
    the whole-row hash and the single integer key are inlined (see row_digest and
    make_keyer: the same text)."""
    insert, update = _wanted(wanted)
    ident = meta["identity"]
    whole = ident["kind"] == "row"
    cols = meta["columns"] if whole else ident["columns"]
    # ORDER BY rowid: a scan of a covering index would come in key order, and a run
    # must hold every row between its ends.
    sql = (
        "SELECT " + alias + ", " + ", ".join(quote(c) for c in cols) + " FROM main."
        + quote(name) + " ORDER BY " + alias
    )  # fmt: skip
    runs: list[list[Any]] = []
    current: list[Any] = ["", 0, 0]
    count = 0
    get = insert.get

    def choose(key: str, rowid: int) -> None:
        nonlocal current, count
        left = get(key, 0)
        if left > 0:
            insert[key] = left - 1
            op = "i"
        elif key in update:
            op = "u"
        else:
            current = ["", 0, 0]  # a row left out ends the run
            return
        count += 1
        if current[0] == op:
            current[2] = rowid
        else:
            current = [op, rowid, rowid]
            runs.append(current)

    if whole:
        blake, dump = _blake2b, _marshal
        for row in conn.execute(sql):
            choose(blake(dump(row[1:], 2), digest_size=8).hexdigest(), row[0])
    elif len(cols) == 1:
        general = make_keyer({"identity": ident, "columns": cols})
        for rowid, value in conn.execute(sql):
            if type(value) is int:
                choose("[" + str(value) + "]", rowid)
            else:
                choose(general((value,)), rowid)
    else:
        keyer = make_keyer({"identity": ident, "columns": cols})
        for row in conn.execute(sql):
            choose(keyer(row[1:]), row[0])
    return runs, count


def _export_rows(
    conn: sqlite3.Connection, into: str, name: str, meta: dict[str, Any], wanted: dict[str, Any]
) -> int:
    """A table without a usable rowid: the requested rows go through Python."""
    insert, update = _wanted(wanted)
    keyer = make_keyer(meta)
    sql = "INSERT INTO " + into + " VALUES (?, " + ", ".join("?" for _ in meta["columns"]) + ")"
    select = "SELECT " + ", ".join(quote(c) for c in meta["columns"]) + " FROM main." + quote(name)
    batch: list[Any] = []
    total = 0
    for row in conn.execute(select):
        key = keyer(row)
        if insert.get(key, 0) > 0:
            insert[key] -= 1
            batch.append(("i", *row))
        elif key in update:
            batch.append(("u", *row))
        if len(batch) >= EXPORT_BATCH:
            conn.executemany(sql, batch)
            total += len(batch)
            batch.clear()
    conn.executemany(sql, batch)
    return total + len(batch)


EXPORT_BATCH = 5000
SQLITE_MAGIC = b"SQLite format 3\x00"


def export_table(conn: sqlite3.Connection, index: int, name: str, meta: dict[str, Any]) -> str:
    """Start table ``index`` of the export file attached as ``bgout``: its header in
    ``_tables (n, header)`` and ``t<n> (op, c0, c1, ...)`` for its rows, in export order.
    The columns have no declared type, so SQLite keeps every value exactly as it was
    stored (no affinity conversion). Returns the rows table's name."""
    header = {k: v for k, v in meta.items() if not k.startswith("_")}
    conn.execute(
        "INSERT INTO bgout._tables (n, header) VALUES (?, ?)",
        (index, json.dumps({"table": name, **header})),
    )
    into = "bgout.t" + str(index)
    cols = ["c" + str(i) for i in range(len(meta["columns"]))]
    conn.execute("CREATE TABLE " + into + " (op, " + ", ".join(cols) + ")")
    return into


def cmd_tail(args: dict[str, Any]) -> None:
    """Rows above each table's rowid mark, oldest first, at most ``limit`` per table.

    Marks are rowids on both ends (the mark comes from inspect's ``max_rowid``): comparing
    a rowid with a primary-key value skipped rows when the key was not the rowid alias.
    A mark of null starts at the table's current end. Reports, per table, the last rowid
    exported (the next mark) and how many rows were above the mark.
    """
    conn = connect(args["db"], readonly=True)
    out = db_file("tail.jsonl")
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
            if not meta["rowid"]:
                continue  # WITHOUT ROWID: no append order to follow
            if mark is None:
                mark = conn.execute("SELECT max(rowid) FROM " + quote(name)).fetchone()[0] or 0
            last[name] = int(mark)
            pending[name] = conn.execute(
                "SELECT count(*) FROM " + quote(name) + " WHERE rowid > ?", (int(mark),)
            ).fetchone()[0]
            header = {k: v for k, v in meta.items() if not k.startswith("_")}
            f.write(json.dumps({"table": name, **header}) + "\n")
            cols = ", ".join(quote(c) for c in meta["columns"])
            rows = conn.execute(
                "SELECT rowid, " + cols + " FROM " + quote(name) + " WHERE rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (mark, limit),
            )
            for row in rows:
                values = [encode(v) for v in row[1:]]
                f.write(json.dumps(["i", values], separators=(",", ":")) + "\n")
                last[name] = row[0]
                total += 1
    conn.execute("COMMIT")
    emit({"path": out, "rows": total, "last": last, "pending": pending})


def _blocks(path: str) -> Iterator[tuple[dict[str, Any], list[tuple[str, Any]]]]:
    """(header, [(op, values)]) per table of a JSON-lines file (the mirror's tail and
    captured changes)."""
    header: dict[str, Any] | None = None
    lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("{"):
                lines.append(line)
                continue
            if header is not None:
                yield header, _ops_of(lines)
            header, lines = json.loads(line), []
    if header is not None:
        yield header, _ops_of(lines)


def _ops_of(lines: list[str]) -> list[tuple[str, Any]]:
    """The (op, values) of a table's lines. One parse for all of them: a json.loads per
    line costs more in call overhead than in parsing."""
    rows: list[tuple[str, Any]] = []
    for item in json.loads("[" + ",".join(lines) + "]"):
        if item[0].startswith("c"):
            rows.append((item[0], item[1:]))  # a captured change: [seq, old, new]
        else:
            rows.append((item[0], [decode(v) for v in item[1]]))
    return rows


class Ops:
    """One table's rows to apply, in order: ``ops[i]`` is row ``i``'s operation."""

    def __init__(self, ops: list[str]) -> None:
        self.ops = ops

    def inserts_only(self, start: int, end: int) -> bool:
        return self.ops[start:end].count("i") == end - start

    def rows(self, start: int, end: int) -> list[tuple[str, Any]]:
        """Rows ``start`` to ``end`` (excluded) as (op, values)."""
        raise NotImplementedError

    def insert(self, conn: sqlite3.Connection, sql: str, start: int, end: int) -> None:
        """Insert rows ``start`` to ``end`` (all inserts) in one go; ``sql`` inserts one
        row from parameters."""
        raise NotImplementedError


class ListOps(Ops):
    """Rows held in memory (from a JSON-lines file: the mirror's tail)."""

    def __init__(self, rows: list[tuple[str, Any]]) -> None:
        super().__init__([op for op, _ in rows])
        self.items = rows

    def rows(self, start: int, end: int) -> list[tuple[str, Any]]:
        return self.items[start:end]

    def insert(self, conn: sqlite3.Connection, sql: str, start: int, end: int) -> None:
        conn.executemany(sql, [values for _, values in self.items[start:end]])


class FileOps(Ops):
    """Rows of an export file attached as ``bgrows`` (see :func:`export_table`): inserts
    go from it to the table inside SQLite (INSERT ... SELECT), no row passes through
    Python unless it needs handling of its own (an update, a constraint hit)."""

    def __init__(self, conn: sqlite3.Connection, index: int, header: dict[str, Any]) -> None:
        self.conn = conn
        self.table = "bgrows.t" + str(int(index))
        super().__init__([r[0] for r in conn.execute("SELECT op FROM " + self.table)])
        cols = header["columns"]
        picked = ", ".join("c" + str(i) for i in range(len(cols)))
        # An export table is only ever appended to: row i has rowid i + 1.
        self.insert_sql = (
            "INSERT INTO main." + quote(header["table"]) + " ("
            + ", ".join(quote(c) for c in cols) + ") SELECT " + picked + " FROM " + self.table
            + " WHERE rowid > ? AND rowid <= ? ORDER BY rowid"
        )  # fmt: skip

    def rows(self, start: int, end: int) -> list[tuple[str, Any]]:
        found = self.conn.execute(
            "SELECT * FROM " + self.table + " WHERE rowid > ? AND rowid <= ? ORDER BY rowid",
            (start, end),
        )
        return [(row[0], row[1:]) for row in found]

    def insert(self, conn: sqlite3.Connection, sql: str, start: int, end: int) -> None:
        conn.execute(self.insert_sql, (start, end))


def _table_ops(conn: sqlite3.Connection, path: str) -> Iterator[tuple[dict[str, Any], Ops]]:
    """(header, ops) per table of an export file (SQLite, attached to ``conn`` for the
    duration) or of a JSON-lines file."""
    with open(path, "rb") as f:
        magic = f.read(len(SQLITE_MAGIC))
    if magic != SQLITE_MAGIC:
        for header, rows in _blocks(path):
            yield header, ListOps(rows)
        return
    conn.execute("ATTACH DATABASE ? AS bgrows", (path,))
    try:
        found = conn.execute("SELECT n, header FROM bgrows._tables ORDER BY n").fetchall()
        for index, text in found:
            header = json.loads(text)
            yield header, FileOps(conn, index, header)
    finally:
        conn.execute("DETACH DATABASE bgrows")


class Applier:
    """Applies one table's ops in transactions of at most ``slice`` seconds of write lock.

    Before each COMMIT it makes sure its client is still there (the parent process is
    the same, and a progress line can still be written: a closed channel fails the
    write); if not, it rolls back and stops, so nothing is committed after the client
    went away. Every commit is appended to the run's journal, so the next run can tell
    what an interrupted one really did.
    """

    def __init__(self, conn: sqlite3.Connection, slice_s: float, delay: float) -> None:
        self.conn = conn
        self.slice = slice_s
        self.delay = delay
        self.parent = os.getppid()
        self.journal = work_file("journal.jsonl")
        self.locked_at = time.monotonic()
        # The last few commits' durations; until one is measured, assume a fifth of the
        # slice (a first slice that ignored its commit overran the budget).
        self.commit_costs: list[float] = [slice_s / 5]
        # Our commits do not checkpoint the WAL (see _checkpoint): a checkpoint inside
        # COMMIT would be timed as lock held, although the app may write meanwhile.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self.checkpointed = time.monotonic()

    def _alive(self) -> None:
        if os.getppid() != self.parent:
            raise ClientGone("parent process gone")

    def _note(self, entry: dict[str, Any]) -> None:
        with open(self.journal, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def table(self, header: dict[str, Any], ops: Ops) -> dict[str, Any]:
        name = header["table"]
        cols = list(header["columns"])
        ident = header["identity"]
        insert = (
            "INSERT INTO main." + quote(name) + " (" + ", ".join(quote(c) for c in cols)
            + ") VALUES (" + ", ".join("?" for _ in cols) + ")"
        )  # fmt: skip
        key_cols = list(ident["columns"]) if ident["kind"] != "row" else []
        key_pos = [cols.index(c) for c in key_cols]
        set_pos = [i for i, c in enumerate(cols) if c not in key_cols]
        # Only the non-key columns change: the key is what found the row. A table whose
        # every column is in the key cannot conflict (same key, same content).
        update = (
            "UPDATE main." + quote(name) + " SET "
            + ", ".join(quote(cols[i]) + " = ?" for i in set_pos)
            + " WHERE " + " AND ".join(quote(c) + " IS ?" for c in key_cols)
        )  # fmt: skip
        outcome: dict[str, Any] = {
            "table": name, "inserted": 0, "updated": 0, "created": False, "longest": 0.0,
        }  # fmt: skip
        done = 0
        total = len(ops.ops)
        last_progress = time.monotonic()
        # IMMEDIATE takes the write lock now, so the app's writers wait (at most one
        # slice) instead of failing halfway.
        self._begin()
        if not self.conn.execute(
            "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone():
            self.conn.execute(header["sql"])
            outcome["created"] = True
        pending = {"inserted": 0, "updated": 0}
        # Inserts go in chunks (one statement for many rows: several times faster than a
        # call per row); a chunk that hits a constraint is redone row by row to find the
        # culprit. A throttled apply (delay) goes row by row.
        chunk = 1 if self.delay else CHUNK
        while done < total:
            chunk_began = time.monotonic()
            end = min(done + chunk, total)
            if end - done > 1 and ops.inserts_only(done, end):
                self.conn.execute("SAVEPOINT chunk")
                try:
                    ops.insert(self.conn, insert, done, end)
                    self.conn.execute("RELEASE chunk")
                    pending["inserted"] += end - done
                except sqlite3.IntegrityError:
                    self.conn.execute("ROLLBACK TO chunk")
                    self.conn.execute("RELEASE chunk")
                    for op, values in ops.rows(done, end):
                        self._row(header, op, values, insert, update, set_pos, key_pos, pending)
            else:
                for op, values in ops.rows(done, end):
                    self._row(header, op, values, insert, update, set_pos, key_pos, pending)
            done = end
            if self.delay:
                time.sleep(self.delay)
            now = time.monotonic()
            if self._due(now, now - chunk_began):
                self._commit(name, done, total, pending, outcome)
                self._begin()
            if now - last_progress >= PROGRESS_EVERY:
                last_progress = now
                emit({"progress": name, "done": done, "total": total})
        self._commit(name, done, total, pending, outcome)
        self._note({"table": name, "finished": True, "at": time.time()})
        return outcome

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.locked_at = time.monotonic()

    def _due(self, now: float, chunk_cost: float) -> bool:
        """Whether to commit now: one more chunk and then the commit itself must still
        fit in the slice, so that slice + commit stays in budget. The commit is counted
        at twice the slowest of the recent ones (an fsync varies a lot on a busy disk)
        and a tenth of the slice is kept spare (the next chunk may be preempted)."""
        if self.slice <= 0:
            return False  # whole tables: the one commit is at the end of the table
        commit = max(self.commit_costs) * 2
        return now - self.locked_at + chunk_cost + commit >= self.slice * 0.9

    def _row(
        self,
        header: dict[str, Any],
        op: str,
        values: list[Any],
        insert: str,
        update: str,
        set_pos: list[int],
        key_pos: list[int],
        pending: dict[str, int],
    ) -> None:
        name = header["table"]
        try:
            if op == "u":
                cur = self.conn.execute(
                    update, [values[i] for i in set_pos] + [values[i] for i in key_pos]
                )
                if cur.rowcount == 0:
                    # The application deleted it meanwhile.
                    emit({"vanished": name, "key": key_of(header, values)})
                else:
                    pending["updated"] += 1
                    emit({"changed": name, "key": key_of(header, values)})
            else:
                self.conn.execute(insert, values)
                pending["inserted"] += 1
        except sqlite3.IntegrityError as e:
            # Never resolved by deleting: the row that blocks it stays, this one waits.
            emit({"refused": name, "key": key_of(header, values), "hash": row_hash(values),
                  "error": str(e)})  # fmt: skip

    def _commit(
        self,
        name: str,
        done: int,
        total: int,
        pending: dict[str, int],
        outcome: dict[str, Any],
    ) -> None:
        # The stop signals wait until the commit and its journal line are both done: the
        # journal must say exactly what was committed, never one slice less.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            try:
                self._alive()
                emit({"progress": name, "done": done, "total": total})
            except ClientGone:
                self.conn.execute("ROLLBACK")
                raise
            committing = time.monotonic()
            self.conn.execute("COMMIT")
            ended = time.monotonic()
            self.commit_costs = [*self.commit_costs[-4:], ended - committing]
            # How long the write lock was held, BEGIN IMMEDIATE to the end of COMMIT (its
            # fsync included): what the live application's writers may have waited.
            held = ended - self.locked_at
            outcome["longest"] = max(outcome["longest"], held)
            outcome["inserted"] += pending["inserted"]
            outcome["updated"] += pending["updated"]
            self._note({"table": name, "inserted": pending["inserted"],
                        "updated": pending["updated"], "at": time.time()})  # fmt: skip
            pending["inserted"] = pending["updated"] = 0
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        if time.monotonic() - self.checkpointed >= CHECKPOINT_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Move committed pages from the WAL into the database, outside any transaction:
        a PASSIVE checkpoint never blocks the application's writers (nor waits for
        them), and keeps the WAL from growing until one of the app's own commits has to
        checkpoint it instead. A no-op for a database that is not in WAL mode."""
        with contextlib.suppress(sqlite3.OperationalError):
            self.conn.execute("PRAGMA main.wal_checkpoint(PASSIVE)").fetchall()
        self.checkpointed = time.monotonic()


def arrived(args: dict[str, Any], key: str) -> None:
    """With ``arrive`` (seconds), wait for the file ``args[key]`` to appear: the command
    was started while the client was still bringing it (it appears complete, renamed)."""
    wait = float(args.get("arrive") or 0)
    deadline = time.monotonic() + wait
    while wait and not os.path.exists(args[key]):
        if time.monotonic() > deadline:
            raise Failure(args[key] + " never arrived")
        time.sleep(ARRIVE_POLL)


ARRIVE_POLL = 0.005


def cmd_apply(args: dict[str, Any]) -> None:
    emit({"pid": os.getpid(), "pgid": os.getpgrp()})
    arrived(args, "rows")
    conn = connect(args["db"], readonly=False)
    applier = Applier(conn, float(args.get("slice", 0.05)), float(args.get("delay") or 0))
    for header, ops in _table_ops(conn, args["rows"]):
        emit(applier.table(header, ops))
    applier.checkpoint()
    if args.get("digest") is not None:
        # The verification's whole-table read, here rather than in a command of its own
        # (an SSH round trip and a Python start-up). First a pause: the application's
        # writers that our slices kept waiting sleep up to 100 ms between tries (SQLite's
        # busy handler), and they must get their turn before the read, so that a table
        # the app changed during the run fails verification, as it should.
        time.sleep(VERIFY_GRACE)
        emit({"digest": digests(conn, list(args["digest"]))})


# -- change capture (mirror) ---------------------------------------------------------------

CHANGES = "_bgconsole_changes"
CURSOR = "_bgconsole_mirror"
TRIGGER_PREFIX = "_bgconsole_"


def _json_value(ref: str) -> str:
    """SQL turning one column value into JSON exactly: BLOBs as hex, REALs with 17 digits."""
    return (
        "CASE typeof(" + ref + ") WHEN 'blob' THEN json_object('$x', hex(" + ref + ")) "
        "WHEN 'real' THEN json_object('$r', printf('%!.17g', " + ref + ")) ELSE " + ref + " END"
    )


def _json_row(prefix: str, cols: list[str]) -> str:
    return "json_array(" + ", ".join(_json_value(prefix + "." + quote(c)) for c in cols) + ")"


def cmd_capture_setup(args: dict[str, Any]) -> None:
    """Install the change table and a trigger per table and operation (idempotent)."""
    conn = connect(args["db"], readonly=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS " + CHANGES + " (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "tbl TEXT NOT NULL, op TEXT NOT NULL, old TEXT, new TEXT, at REAL NOT NULL)"
    )
    now = "(julianday('now') - 2440587.5) * 86400.0"
    installed = []
    for name, meta in tables(conn, args.get("tables")).items():
        cols = list(meta["columns"])
        ident = meta["identity"]
        key_cols = cols if ident["kind"] == "row" else list(ident["columns"])
        old_key = _json_row("OLD", key_cols)
        base = quote(TRIGGER_PREFIX + name)
        bodies = {
            "_ins": ("INSERT", "'i', NULL, " + _json_row("NEW", cols)),
            "_upd": ("UPDATE", "'u', " + old_key + ", " + _json_row("NEW", cols)),
            "_del": ("DELETE", "'d', " + old_key + ", NULL"),
        }
        for suffix, (event, values) in bodies.items():
            trigger = base[:-1] + suffix + '"'
            conn.execute(
                "CREATE TRIGGER IF NOT EXISTS " + trigger + " AFTER " + event + " ON "
                + quote(name) + " BEGIN INSERT INTO " + CHANGES + " (tbl, op, old, new, at) "
                "VALUES (" + quote_literal(name) + ", " + values + ", " + now + "); END"
            )  # fmt: skip
        installed.append(name)
    conn.execute("COMMIT")
    emit({"tables": installed})


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def cmd_capture_teardown(args: dict[str, Any]) -> None:
    """Remove our triggers, change table and mirror cursor from a database (idempotent)."""
    if not os.path.exists(args["db"]):
        emit({"removed": 0})
        return
    conn = connect(args["db"], readonly=False)
    conn.execute("BEGIN IMMEDIATE")
    found = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'table') AND name "
        "LIKE '\\_bgconsole\\_%' ESCAPE '\\'"
    ).fetchall()
    for kind, name in sorted(found, key=lambda r: r[0] != "trigger"):
        conn.execute("DROP " + kind.upper() + " IF EXISTS " + quote(name))
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (CHANGES,))
    conn.execute("COMMIT")
    emit({"removed": len(found)})


def _captured(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (CHANGES,)).fetchone())


POLL_EVERY = 0.01


def _wait_for_change(conn: sqlite3.Connection, after: int, wait: float) -> None:
    """Return once the change log goes past ``after``, or after ``wait`` seconds. Each
    look is its own short read (the index's last entry), so writers never wait on it."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        top = conn.execute("SELECT max(seq) FROM " + CHANGES).fetchone()[0]
        if top is not None and top > after:
            return
        time.sleep(POLL_EVERY)


def _pending(conn: sqlite3.Connection, after: int) -> tuple[int, float | None]:
    """Changes after ``after`` and the time of the oldest. A table dropped since never
    has its changes applied: they are not "behind" either."""
    pending, oldest = conn.execute(
        "SELECT count(*), min(at) FROM " + CHANGES + " WHERE seq > ? AND tbl IN "
        "(SELECT name FROM sqlite_master WHERE type = 'table')",
        (after,),
    ).fetchone()
    return int(pending), oldest


def cmd_changes(args: dict[str, Any]) -> None:
    """Captured changes after ``after`` (oldest first, at most ``limit``) to a file, plus
    the lag: how many are pending and how old the oldest is. With ``wait``, first waits
    up to that many seconds for a change after ``after`` (a long poll: the mirror learns
    of a change within one POLL_EVERY instead of at its next cycle)."""
    conn = connect(args["db"], readonly=True)
    if float(args.get("wait") or 0) > 0 and _captured(conn):
        _wait_for_change(conn, int(args.get("after") or 0), float(args["wait"]))
    conn.execute("BEGIN")
    if not _captured(conn):
        conn.execute("COMMIT")
        emit({"captured": False})
        return
    after = int(args.get("after") or 0)
    limit = int(args.get("limit", 5000))
    if args.get("count_only"):
        pending, oldest = _pending(conn, after)
        conn.execute("COMMIT")
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        emit({"captured": True, "pending": pending, "oldest_age": age})
        return
    out = db_file("changes.jsonl")
    metas = tables(conn)
    pending, oldest = _pending(conn, after)
    top = conn.execute("SELECT max(seq) FROM " + CHANGES).fetchone()[0] or 0
    last = after
    total = 0
    current = None
    with open(out, "w", encoding="utf-8") as f:
        for seq, tbl, op, old, new in conn.execute(
            "SELECT seq, tbl, op, old, new FROM " + CHANGES + " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ):
            last = seq  # past a dropped table's changes too, or a batch of them repeats
            if tbl not in metas:
                continue  # a table dropped since
            if tbl != current:
                current = tbl
                header = {k: v for k, v in metas[tbl].items() if not k.startswith("_")}
                f.write(json.dumps({"table": tbl, **header}) + "\n")
            # The triggers wrote JSON already: pass it through rather than parse and redo it.
            olds, news = old or "null", new or "null"
            f.write('["c' + op + '",' + str(seq) + "," + olds + "," + news + "]\n")
            total += 1
    conn.execute("COMMIT")
    age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
    emit({"captured": True, "path": out, "rows": total, "last": last, "top": top,
          "pending": pending, "oldest_age": age})  # fmt: skip


def cmd_cursor(args: dict[str, Any]) -> None:
    """The last change of ``source`` applied to this (target) database, or 0."""
    if not os.path.exists(args["db"]):
        emit({"seq": 0})
        return
    conn = connect(args["db"], readonly=True)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (CURSOR,)).fetchone():
        emit({"seq": 0})
        return
    row = conn.execute(
        "SELECT seq FROM " + CURSOR + " WHERE source = ?", (args["source"],)
    ).fetchone()
    emit({"seq": row[0] if row else 0})


def cmd_set_cursor(args: dict[str, Any]) -> None:
    """Start a target's cursor at ``seq`` (after a catch-up), unless it is already past it."""
    conn = connect(args["db"], readonly=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE IF NOT EXISTS " + CURSOR + " (source TEXT PRIMARY KEY, seq INTEGER)")
    conn.execute(
        "INSERT INTO " + CURSOR + " (source, seq) VALUES (?, ?) ON CONFLICT (source) DO "
        "UPDATE SET seq = max(seq, excluded.seq)",
        (args["source"], int(args["seq"])),
    )
    conn.execute("COMMIT")
    emit({"ok": True})


def _insert_run(todo: list[tuple[str, Any]], at: int) -> int:
    """The end of the run of inserts (at most CHUNK) starting at ``at``, or ``at + 1``."""
    end = at + 1
    if todo[at][0] != "ci":
        return end
    while end < len(todo) and end - at < CHUNK and todo[end][0] == "ci":
        end += 1
    return end


class ChangeApplier:
    """Applies captured changes in order, in short transactions, exactly once.

    The target remembers the last change applied (per source) in the same transaction as
    the changes, so a change re-sent after a crash is skipped, never applied twice.
    """

    def __init__(self, conn: sqlite3.Connection, source: str, slice_s: float) -> None:
        self.conn = conn
        self.source = source
        self.slice = slice_s
        self.parent = os.getppid()
        self.sql: dict[str, tuple[str, str, str]] = {}
        self.commit_costs: list[float] = [slice_s / 5]  # until one is measured
        conn.execute(
            "CREATE TABLE IF NOT EXISTS " + CURSOR + " (source TEXT PRIMARY KEY, seq INTEGER)"
        )

    def cursor(self) -> int:
        row = self.conn.execute(
            "SELECT seq FROM " + CURSOR + " WHERE source = ?", (self.source,)
        ).fetchone()
        return int(row[0]) if row else 0

    def run(self, path: str) -> dict[str, int]:
        counts = {"inserted": 0, "updated": 0, "deleted": 0, "skipped": 0, "refused": 0}
        self.conn.execute("BEGIN IMMEDIATE")
        done = self.cursor()
        began = time.monotonic()
        last = done
        for header, ops in _blocks(path):
            todo = [(op, values) for op, values in ops if int(values[0]) > done]
            counts["skipped"] += len(ops) - len(todo)
            at = 0
            while at < len(todo):
                end = _insert_run(todo, at)
                if end - at > 1:
                    self._inserts(header, todo[at:end], counts)
                else:
                    op, values = todo[at]
                    self._one(header, op, values[1], values[2], counts)
                last = int(todo[end - 1][1][0])
                at = end
                now = time.monotonic()
                # Room for the commit too (the slowest recent one, plus half).
                if now - began + 1.5 * max(self.commit_costs) >= self.slice:
                    self._commit(last)
                    self.conn.execute("BEGIN IMMEDIATE")
                    began = time.monotonic()
        self._commit(last)
        return counts

    def _inserts(
        self, header: dict[str, Any], batch: list[tuple[str, Any]], counts: dict[str, int]
    ) -> None:
        """Consecutive inserts in one statement; on a constraint hit, one by one (to skip
        or report each as :meth:`_one` does)."""
        insert = self._statements(header)[0]
        # Only BLOBs and REALs come as objects: decode() the few values that need it.
        rows = [[decode(v) if type(v) is dict else v for v in values[2]] for _, values in batch]
        self.conn.execute("SAVEPOINT changes")
        try:
            self.conn.executemany(insert, rows)
            self.conn.execute("RELEASE changes")
            counts["inserted"] += len(rows)
        except sqlite3.IntegrityError:
            self.conn.execute("ROLLBACK TO changes")
            self.conn.execute("RELEASE changes")
            for op, values in batch:
                self._one(header, op, values[1], values[2], counts)

    def _commit(self, last: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            if os.getppid() != self.parent:
                self.conn.execute("ROLLBACK")
                raise ClientGone("parent process gone")
            try:
                emit({"applied": last})
            except ClientGone:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute(
                "INSERT INTO " + CURSOR + " (source, seq) VALUES (?, ?) "
                "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq",
                (self.source, last),
            )
            committing = time.monotonic()
            self.conn.execute("COMMIT")
            self.commit_costs = [*self.commit_costs[-4:], time.monotonic() - committing]
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _statements(self, header: dict[str, Any]) -> tuple[str, str, str]:
        """INSERT, UPDATE and DELETE of one row by identity (built once per table)."""
        cached = self.sql.get(header["table"])
        if cached is not None:
            return cached
        name = quote(header["table"])
        cols = list(header["columns"])
        ident = header["identity"]
        key_cols = cols if ident["kind"] == "row" else list(ident["columns"])
        where = " AND ".join(quote(c) + " IS ?" for c in key_cols)
        # One row, even when whole-row identity has duplicates (rowid picks one of them).
        one = (
            " WHERE rowid IN (SELECT rowid FROM " + name + " WHERE " + where + " LIMIT 1)"
            if header["rowid"]
            else " WHERE " + where
        )
        made = (
            "INSERT INTO " + name + " (" + ", ".join(quote(c) for c in cols) + ") VALUES ("
            + ", ".join("?" for _ in cols) + ")",
            "UPDATE " + name + " SET " + ", ".join(quote(c) + " = ?" for c in cols) + one,
            "DELETE FROM " + name + one,
        )  # fmt: skip
        self.sql[header["table"]] = made
        return made

    def _one(
        self, header: dict[str, Any], op: str, old: Any, new: Any, counts: dict[str, int]
    ) -> None:
        name = quote(header["table"])
        cols = list(header["columns"])
        insert, update, delete = self._statements(header)
        old_values = [decode(v) for v in old] if old is not None else []
        new_values = [decode(v) for v in new] if new is not None else []
        try:
            if op == "ci":
                self.conn.execute(insert, new_values)
                counts["inserted"] += 1
            elif op == "cu":
                cur = self.conn.execute(update, [*new_values, *old_values])
                if cur.rowcount:
                    counts["updated"] += 1
                else:  # the row to update is not on the target: said, not invented
                    counts["refused"] += 1
                    emit({"refused": header["table"], "key": json.dumps(old), "hash": "",
                          "error": "row to update is not on the target"})  # fmt: skip
            elif op == "cd":
                cur = self.conn.execute(delete, old_values)
                counts["deleted" if cur.rowcount else "skipped"] += 1
        except sqlite3.IntegrityError as e:
            if op == "ci" and self._present(name, cols, new_values):
                counts["skipped"] += 1  # the catch-up already copied this very row
                return
            counts["refused"] += 1
            emit({"refused": header["table"], "key": json.dumps(old or new), "hash": "",
                  "error": str(e)})  # fmt: skip

    def _present(self, name: str, cols: list[str], values: Any) -> bool:
        where = " AND ".join(quote(c) + " IS ?" for c in cols)
        return bool(
            self.conn.execute("SELECT 1 FROM " + name + " WHERE " + where, values).fetchone()
        )


def cmd_apply_changes(args: dict[str, Any]) -> None:
    emit({"pid": os.getpid(), "pgid": os.getpgrp()})
    arrived(args, "rows")
    conn = connect(args["db"], readonly=False)
    applier = ChangeApplier(conn, str(args["source"]), float(args.get("slice") or 0.05))
    emit({"done": applier.run(args["rows"])})
    _remove_ours([args["rows"]])  # applied: one file less for the client to clean up


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        name: conn.execute("SELECT count(*) FROM " + quote(name)).fetchone()[0]
        for name in tables(conn)
    }


def cmd_backup(args: dict[str, Any]) -> None:
    src = connect(args["db"], readonly=True)
    out = db_file("snapshot.db")
    dst = sqlite3.connect(out)
    # The backup API copies a consistent state even while the application writes.
    src.backup(dst)
    result = {"path": out, "size": os.path.getsize(out), "counts": counts(dst)}
    dst.close()
    emit(result)


def cmd_install(args: dict[str, Any]) -> None:
    emit({"pid": os.getpid(), "pgid": os.getpgrp()})
    arrived(args, "new")
    db = args["db"]
    new = args["new"]
    size = args.get("size")
    if size is not None and os.path.getsize(new) != int(size):
        got = str(os.path.getsize(new))
        raise Failure("the transferred snapshot is incomplete: " + got + " of " + str(size))
    fresh = sqlite3.connect(new)
    # One full integrity_check, of the installed database below. SSH's MACs rule out
    # damage in transit (and the size, a cut-short file); the file is the backup API's,
    # and quick_check (every page and record, not the index/table cross-check) catches
    # a damaged copy before it replaces anything.
    check = fresh.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise Failure("the transferred snapshot is damaged: " + str(check))
    backup = None
    if os.path.exists(db):
        # Backups go to the work directory, never beside the database: that is often
        # inside the application's git checkout, where a stray file is a problem.
        backups = os.path.join(Context.dir, "backups")
        os.makedirs(backups, mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = os.path.join(backups, os.path.basename(db) + ".bak-" + stamp + "-" + Context.run)
        old = connect(db, readonly=False)
        before = counts(old)
        keep = sqlite3.connect(backup)
        old.backup(keep)
        keep.close()
        # Restore into the live file with the backup API rather than os.replace: it is one
        # write transaction (all or nothing), and the app's open connections and WAL stay
        # valid; renaming a file under a WAL database corrupts it.
        fresh.backup(old)
        result = {"backup": backup, "counts": counts(old), "before": before, "replaced": True}
        old.close()
        fresh.close()
        os.remove(new)
    else:
        fresh.close()
        staged = db + "." + PREFIX + Context.run + "-new"
        fresh_copy = sqlite3.connect(new)
        into = sqlite3.connect(staged)
        fresh_copy.backup(into)  # the work dir may be on another filesystem than the db
        into.close()
        fresh_copy.close()
        os.replace(staged, db)  # atomic: the db appears complete or not at all
        os.remove(new)
        conn = connect(db, readonly=True)
        result = {"backup": None, "counts": counts(conn), "before": {}, "replaced": False}
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
    _remove_ours(args["paths"])
    emit({"ok": True})


def _remove_ours(paths: Any) -> None:
    """Remove transfer files, never anything not named by us."""
    for path in paths:
        if PREFIX in os.path.basename(path) and os.path.exists(path):
            os.remove(path)


COMMANDS: dict[str, Any] = {
    "hold": cmd_hold,
    "sweep": cmd_sweep,
    "capture_setup": cmd_capture_setup,
    "capture_teardown": cmd_capture_teardown,
    "changes": cmd_changes,
    "cursor": cmd_cursor,
    "set_cursor": cmd_set_cursor,
    "apply_changes": cmd_apply_changes,
    "inspect": cmd_inspect,
    "digest": cmd_digest,
    "export": cmd_export,
    "tail": cmd_tail,
    "apply": cmd_apply,
    "backup": cmd_backup,
    "install": cmd_install,
    "check": cmd_check,
    "cleanup": cmd_cleanup,
}


def main(argv: list[str]) -> int:
    try:
        args = json.loads(argv[2])
        Context.dir = str(args.get("dir") or Context.dir)
        Context.run = str(args.get("run") or Context.run)
        if args.get("db"):
            digest = hashlib.blake2b(str(args["db"]).encode(), digest_size=4).hexdigest()
            Context.db_tag = digest
        COMMANDS[argv[1]](args)
    except ClientGone:
        return EXIT_CLIENT_GONE
    except Failure as e:
        sys.stderr.write("error: " + str(e) + "\n")
        return 3
    except (sqlite3.Error, OSError, ValueError, KeyError) as e:
        sys.stderr.write("error: " + type(e).__name__ + ": " + str(e) + "\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
