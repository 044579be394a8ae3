"""Data migration benchmark and crash trial against a real sshd, SQLite files and Redis.

Run from the repository root: ``.venv/bin/python bench/migrate_bench.py [--rows 100000]
[--kills 20] [--drops 10]`` (a few minutes). Both colours are SQLite files on this
machine behind one OpenSSH sshd on 127.0.0.1, as in the tests. It measures:

- rows: the rows strategy copying ``--rows`` rows of an app-shaped table (key, text,
  100-byte BLOB, NULLs) plus as many rows of a keyless table: rows/s (target >= 50 000);
- the live app's writes during that apply: a writer inserting into the target every
  5 ms, its longest wait for the write lock (target <= 4 x the 50 ms slice: the slice
  plus fsync and scheduling on a loaded 2-core machine);
- mirror: with change capture set up, ``--rows`` / 5 rows inserted on the source in one
  transaction, until they are all on the target: changes/s;
- snapshot: the snapshot strategy against the same work by hand in the same run
  (``sqlite3 SRC .backup`` over ssh, ``sftp`` get then put, ``sqlite3 DST .restore``
  over ssh): time ratio (target <= 1.3 x);
- crash trial: from an empty target each time, the CLI SIGKILLed (``--kills`` times) or
  the SSH server stopped (``--drops`` times) at a random point of a throttled rows
  migration; after each, the target must pass ``PRAGMA integrity_check`` and hold only
  source rows, no host process may be left anywhere on the machine, and a rerun must
  copy exactly the rows still missing, each once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from common import REPO, report

sys.path[:0] = [str(REPO / "tests")]

from migrate_support import APP, config_data, write_config  # noqa: E402
from servers import RedisServer, SshServer  # noqa: E402

from console.core.config import Config  # noqa: E402
from console.core.control import ControlPlane  # noqa: E402
from console.core.errors import ConsoleError  # noqa: E402
from console.core.migrate.mirror import MirrorStatus  # noqa: E402
from console.core.migrate.plan import MigrationRequest, Progress  # noqa: E402
from console.core.migrate.runner import MigrationRunner  # noqa: E402
from console.core.models import Colour  # noqa: E402
from console.core.ssh import SshPool  # noqa: E402

GREEN, BLUE = Colour.GREEN, Colour.BLUE
SCHEMA = (
    "CREATE TABLE uploads (id BIGINT PRIMARY KEY, name TEXT NOT NULL, note TEXT, data BLOB)",
    "CREATE TABLE hits (path TEXT, status INTEGER)",  # no key, duplicates
    "CREATE TABLE live (id INTEGER PRIMARY KEY, at REAL)",  # the live app's writes
)


def make(path: Path, rows: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA journal_mode=WAL")
        for sql in SCHEMA:
            db.execute(sql)
        blob = bytes(range(100))
        db.executemany(
            "INSERT INTO uploads VALUES (?, ?, ?, ?)",
            ((i, f"file{i}.png", None if i % 3 else "n", blob) for i in range(1, rows + 1)),
        )
        db.executemany(
            "INSERT INTO hits VALUES (?, ?)", ((f"/p{i % 1000}", 200) for i in range(rows))
        )


def content(path: Path, table: str) -> Counter[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return Counter(tuple(r) for r in db.execute(f"SELECT * FROM {table}"))


def count(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


WRITER = """
import json, os, sqlite3, sys, time
db, stop = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, timeout=30)
waits = []
while not os.path.exists(stop):
    began = time.perf_counter()
    with conn:
        conn.execute("INSERT INTO live (at) VALUES (?)", (time.time(),))
    waits.append(time.perf_counter() - began)
    time.sleep(0.005)
print(json.dumps(waits))
"""


class Writer:
    """The live application, in a process of its own (so the bench's own work cannot
    stall it): one insert every 5 ms; records how long each one waited for the lock."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.stop_file = db.parent / "writer.stop"
        self.waits: list[float] = []
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(self.db), str(self.stop_file),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def finish(self) -> None:
        assert self.proc is not None
        await asyncio.to_thread(self.stop_file.touch)
        out, _ = await self.proc.communicate()
        self.waits = json.loads(out)


class Bench:
    def __init__(self, ssh: SshServer, redis: RedisServer, root: Path, rows: int) -> None:
        self.ssh = ssh
        self.root = root
        self.rows = rows
        (root / "blue").mkdir()
        (root / "green").mkdir()
        self.blue = root / "blue" / "app.db"
        self.green = root / "green" / "app.db"
        self.config_path = root / "bg.toml"
        self.config: Config = write_config(
            self.config_path, config_data(ssh, redis.url, self.blue, self.green)
        )
        self.control = ControlPlane(redis.url, APP, actor="bench@local")
        self.pool = SshPool(self.config.ssh)
        self.runner = MigrationRunner(self.config, self.control, self.pool)
        self._apply_at = 0.0

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.control.aclose()

    async def rows_and_live_writes(self) -> bool:
        make(self.green, self.rows)
        make(self.blue, 0)
        writer = Writer(self.blue)
        await writer.start()
        started = time.perf_counter()
        request = MigrationRequest(GREEN, BLUE, tables=("uploads", "hits"))
        result = await self.runner.migrate(request)
        took = time.perf_counter() - started
        await writer.finish()
        assert result.copied == 2 * self.rows, result.summary()
        # The writer's rows land in "live", a table not migrated (a table the app writes
        # during the run would fail its whole-table verification, rightly).
        print(f"    rows: {result.summary()}")
        ok = report(
            "rows: rows/s (rows strategy, 2 tables)", result.copied / took, 50_000, "rows/s"
        )
        held = max(item.longest_lock for item in result.items) * 1000
        ok &= report("rows: longest write transaction (host)", held, 50, "ms", higher=False)
        waits = sorted(writer.waits)
        median, p99 = waits[len(waits) // 2] * 1000, waits[len(waits) * 99 // 100] * 1000
        print(f"    live writes during the run: {len(waits)}; wait median {median:.1f} ms, "
              f"p99 {p99:.1f} ms, max {waits[-1] * 1000:.1f} ms (each includes its own "
              "commit's fsync)")  # fmt: skip
        return ok

    async def mirror(self) -> bool:
        request = MigrationRequest(GREEN, BLUE, "mirror")
        await self.runner.mirror_setup(request)
        stop = asyncio.Event()
        statuses: list[MirrorStatus] = []
        task = asyncio.create_task(
            self.runner.mirror(request, statuses.append, stop, interval=0.05)
        )
        await poll(lambda: bool(statuses) or task.done())
        base = count(self.blue, "uploads")
        burst = max(1, self.rows // 5)
        blob = bytes(range(100))
        with contextlib.closing(sqlite3.connect(self.green, timeout=30)) as db, db:
            db.executemany(
                "INSERT INTO uploads VALUES (?, ?, ?, ?)",
                ((10_000_000 + i, f"m{i}", None, blob) for i in range(burst)),
            )
        started = time.perf_counter()
        await poll(lambda: count(self.blue, "uploads") >= base + burst, every=0.02)
        took = time.perf_counter() - started
        stop.set()
        await asyncio.wait_for(task, 60)
        await self.runner.mirror_setup(request, teardown=True)
        return report("mirror: changes/s (inserts, change capture)", burst / took, 50_000,
                      "rows/s")  # fmt: skip

    def _by_hand(self) -> float:
        """What an operator would type: seconds for backup, get, put, restore."""
        staged = self.root / "by-hand.db"
        local = self.root / "by-hand-local.db"
        dest = self.root / "by-hand-dest.db"
        started = time.perf_counter()
        self._ssh(f"sqlite3 {self.green} '.backup {staged}'")
        batch = f"get {staged} {local}\nput {local} {dest}\n"
        subprocess.run([*self._openssh("sftp"), "-b", "-", f"{self.ssh.user}@127.0.0.1"],
                       input=batch.encode(), check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        self._ssh(f"sqlite3 {self.blue} '.restore {dest}'")
        return time.perf_counter() - started

    def _ssh(self, command: str) -> None:
        subprocess.run([*self._openssh("ssh"), f"{self.ssh.user}@127.0.0.1", command],
                       check=True, stdin=subprocess.DEVNULL)  # fmt: skip

    def _openssh(self, tool: str) -> list[str]:
        port = ["-p", str(self.ssh.port)] if tool == "ssh" else ["-P", str(self.ssh.port)]
        return [tool, "-F", "/dev/null", *port, "-i", str(self.ssh.client_key_path),
                "-o", f"UserKnownHostsFile={self.ssh.known_hosts_path}",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]  # fmt: skip

    async def snapshot(self) -> bool:
        started = time.perf_counter()
        result = await self.runner.migrate(MigrationRequest(GREEN, BLUE, "snapshot"))
        ours = time.perf_counter() - started
        assert result.ok, result.problems
        by_hand = await asyncio.to_thread(self._by_hand)
        print(f"    snapshot: ours {ours:.2f} s, by hand {by_hand:.2f} s")
        return report("snapshot: time vs sqlite3 .backup + sftp", ours / by_hand, 1.3, "x",
                      higher=False)  # fmt: skip

    async def crash_trial(self, kills: int, drops: int, seed: int) -> bool:
        """Interrupt runs at random points, each from an empty target: check the target,
        then that a rerun copies exactly what is missing, each row once."""
        rng = random.Random(seed)
        trial_rows = max(1000, self.rows // 50)
        await asyncio.to_thread(self._fresh, trial_rows)
        source = {t: content(self.green, t) for t in ("uploads", "hits")}
        total = sum(sum(rows.values()) for rows in source.values())
        marker = str(self.root / "work")
        applying = asyncio.Event()
        started = time.perf_counter()
        await self._cli_run(applying)
        reference = time.perf_counter() - started
        apply_phase = reference - (self._apply_at - started)
        print(f"    crash trial: {trial_rows} rows per table; an uninterrupted run takes "
              f"{reference:.1f} s, its apply the last {apply_phase:.1f} s; every other "
              "interruption lands at a random point of the whole run, the rest during the "
              "apply")  # fmt: skip
        failures: list[str] = []
        mid_apply = 0
        for i in range(kills + drops):
            await asyncio.to_thread(self._reset_target)
            in_apply = i % 2 == 1
            at = rng.uniform(0.05, 1.0) * (apply_phase if in_apply else reference)
            where = "into the apply" if in_apply else "into the run"
            applying = asyncio.Event()
            if i < kills:
                what = f"kill {i + 1} {at:.1f} s {where}"
                proc = await self._cli_start()
                watcher = asyncio.create_task(self._watch(proc, applying))
                if in_apply:
                    await _wait(applying, 120)
                await asyncio.sleep(at)
                with contextlib.suppress(ProcessLookupError):  # it may have finished first
                    proc.kill()
                await proc.wait()
                watcher.cancel()
            else:
                what = f"drop {i + 1 - kills} {at:.1f} s {where}"

                def on_progress(p: Progress, applying: asyncio.Event = applying) -> None:
                    if p.phase == "apply":
                        applying.set()

                task = asyncio.create_task(self.runner.migrate(self._trial_request(), on_progress))
                if in_apply:
                    await _wait(applying, 120)
                await asyncio.sleep(at)
                self.ssh.stop()
                with contextlib.suppress(ConsoleError, Exception):
                    await asyncio.wait_for(task, 60)
                self.ssh.start()
            failures += await self._check_after(what, source, marker)
            await self._expire_lock()
            before = sum(count(self.blue, t) for t in source)
            mid_apply += 0 < before < total
            result = await self.runner.migrate(self._trial_request())
            exact = all(content(self.blue, t) == source[t] for t in source)
            if not (result.ok and exact and result.copied == total - before):
                failures.append(f"{what}: rerun ok={result.ok} exact={exact} copied "
                                f"{result.copied}, expected {total - before}")  # fmt: skip
        print(f"    {kills} kills and {drops} drops; {mid_apply} landed mid-apply "
              "(target partly migrated), the rest before or after it")  # fmt: skip
        for failure in failures:
            print(f"    FAILED: {failure}")
        return report("crash trial: failures", len(failures), 0, "", higher=False)

    def _trial_request(self) -> MigrationRequest:
        return MigrationRequest(GREEN, BLUE, tables=("uploads", "hits"), row_delay=0.0005)

    async def _cli_start(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "migrate", "--from", "green", "--to", "blue",
            "--table", "uploads", "--table", "hits", "--throttle", "0.0005",
            "-c", str(self.config_path),
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def _watch(self, proc: asyncio.subprocess.Process, applying: asyncio.Event) -> None:
        """Set ``applying`` at the CLI's first ``apply:`` progress line (plain, no tty)."""
        assert proc.stdout is not None
        async for line in proc.stdout:
            if line.startswith(b"apply:") and not applying.is_set():
                self._apply_at = time.perf_counter()
                applying.set()

    async def _cli_run(self, applying: asyncio.Event) -> None:
        proc = await self._cli_start()
        await self._watch(proc, applying)
        await proc.wait()

    def _reset_target(self) -> None:
        with contextlib.closing(sqlite3.connect(self.blue, timeout=30)) as db, db:
            db.execute("DELETE FROM uploads")
            db.execute("DELETE FROM hits")

    def _fresh(self, rows: int) -> None:
        for path in (self.blue, self.green):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        make(self.green, rows)
        make(self.blue, 0)

    async def _check_after(
        self, what: str, source: dict[str, Counter[tuple[object, ...]]], marker: str
    ) -> list[str]:
        problems = []
        await poll(lambda: not _processes(marker), within=6.0)
        if left := _processes(marker):
            problems.append(f"{what}: host processes left: {left}")
        with contextlib.closing(sqlite3.connect(self.blue, timeout=30)) as db:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"{what}: integrity_check {check}")
        for table, rows in source.items():
            if not content(self.blue, table) <= rows:
                problems.append(f"{what}: {table} holds rows the source lacks or too many")
        return problems

    async def _expire_lock(self) -> None:
        # A SIGKILLed client leaves its lock (holder named) until the TTL; expire it now.
        redis = self.control._redis  # bench only: skip the TTL wait
        await redis.pexpire(f"bg:{APP}:lock:migrate", 1)
        await asyncio.sleep(0.05)


async def _wait(event: asyncio.Event, within: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), within)


async def poll(condition: Callable[[], bool], within: float = 120.0, every: float = 0.05) -> None:
    """Wait until ``condition()`` holds (or ``within`` seconds pass: the caller checks)."""
    for _ in range(int(within / every)):
        if condition():
            return
        await asyncio.sleep(every)


def _processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--drops", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--only-crash", action="store_true", help="run the crash trial only")
    args = parser.parse_args()
    os.makedirs("/run/sshd", exist_ok=True)
    with (
        SshServer() as ssh,
        RedisServer() as redis,
        tempfile.TemporaryDirectory(prefix="bgmig", dir="/tmp") as tmp,
    ):
        bench = Bench(ssh, redis, Path(tmp), args.rows)
        try:
            ok = True
            if not args.only_crash:
                ok &= await bench.rows_and_live_writes()
                ok &= await bench.mirror()
                ok &= await bench.snapshot()
            ok &= await bench.crash_trial(args.kills, args.drops, args.seed)
        finally:
            await bench.aclose()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
