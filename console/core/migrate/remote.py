"""Run the host-side SQLite script (hostside.py) on a host over SSH, and move its files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast

import asyncssh

from console.core.config import HostConfig
from console.core.errors import BackendError, ConsoleError
from console.core.migrate import hostside
from console.core.ssh import CommandExit, Progress, SshPool, describe

PYTHON = "python3"
_SOURCE = Path(hostside.__file__).read_text(encoding="utf-8")
MISSING_PYTHON = 127
"""The shell's exit status for a command not found."""
BOOT = """\
import hashlib, json, marshal, os, sys
s = sys.argv[1]
d = json.loads(sys.argv[3]).get("dir") or "/var/tmp/bgconsole-migrate"
h = hashlib.blake2b((sys.version + s).encode(), digest_size=8).hexdigest()
p = os.path.join(d, ".bgconsole-hostside-" + h)
try:
    with open(p, "rb") as f:
        c = marshal.loads(f.read())
except Exception:
    c = compile(s, "<bgconsole hostside>", "exec")
    try:
        os.makedirs(d, 0o700, exist_ok=True)
        for n in os.listdir(d):
            if n.startswith(".bgconsole-hostside-"):
                os.remove(os.path.join(d, n))
        t = p + "." + str(os.getpid())
        with open(t, "wb") as f:
            f.write(marshal.dumps(c))
        os.replace(t, p)
    except OSError:
        pass
sys.argv = [sys.argv[0]] + sys.argv[2:]
exec(c, {"__name__": "__main__"})
"""
"""Runs the host script (``python3 -S -c BOOT SOURCE COMMAND JSON``) from its compiled
form, kept in the work directory under the hash of the source and the interpreter's
version: compiling the script took longer than most commands' own work. A cache that
cannot be read or written only means compiling again; an older version's is replaced.
The name starts with a dot and carries no run id: sweeps and run files ignore it."""
ARRIVE_WITHIN = 3600.0
"""Seconds a host command started ahead of its file waits for it (a backstop: the client
stops the command when the transfer fails, and a closed channel stops it anyway)."""
_CLEANUP_TIMEOUT = 5.0


class MigrationError(BackendError):
    """A migration step failed on a host; the message names the host, step and cause."""


def new_run_id() -> str:
    """A run's id: in every file name it makes on the hosts and in its events."""
    return secrets.token_hex(6)


class RemoteSqlite:
    """One SQLite database on one host, driven by the host-side script."""

    def __init__(
        self,
        pool: SshPool,
        host: HostConfig,
        db: str,
        timeout: float,
        tag: str = "",
        *,
        run: str = "",
        work_dir: str = "/var/tmp/bgconsole-migrate",
    ) -> None:
        self.pool = pool
        self.host = host
        self.db = db
        self.timeout = timeout
        self.tag = tag
        """The application's name, for people reading the host's work directory."""
        self.run = run or new_run_id()
        self.work_dir = work_dir
        self.temp_files: list[str] = []
        self._sftp: tuple[object, asyncssh.SFTPClient] | None = None
        self.python = PYTHON
        """The interpreter the commands run: ``python3`` until the run's hold on the host
        names the one it resolved to (see :meth:`use_python`)."""
        self.changes_top: int | None = None
        """The change log's position at the last inspection (None: no change capture)."""

    def use_python(self, path: object) -> None:
        """Run the next commands with ``path``, the interpreter ``python3`` resolved to on
        this host (its ``sys.executable``): skips PATH lookup and shims, which can cost
        more than a command. Ignored unless it is a plain absolute path."""
        if isinstance(path, str) and path.startswith("/") and path.isprintable():
            self.python = path

    @property
    def name(self) -> str:
        """``host:path``, how messages name this database."""
        return f"{self.host.name}:{self.db}"

    def command_line(self, command: str, args: dict[str, Any]) -> str:
        """The shell command that runs the host-side ``command`` with ``args``."""
        payload = json.dumps(
            {"db": self.db, "tag": self.tag, "run": self.run, "dir": self.work_dir, **args}
        )
        # -S: no site module. The script needs only the standard library, and site's
        # .pth files can cost more than the command itself (0.17 s per start on a host
        # measured); it also keeps installed packages from shadowing the stdlib.
        return shlex.join([self.python, "-S", "-c", BOOT, _SOURCE, command, payload])

    def _error(self, command: str, status: int | None, stderr: str) -> MigrationError:
        if status == MISSING_PYTHON:
            return MigrationError(
                f"{describe(self.host)}: {PYTHON} not found; migrations run a small "
                f"{PYTHON} script on the host (install python3)"
            )
        lines = [line for line in stderr.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else f"exit status {status}"
        return MigrationError(f"{self.name}: {command} failed: {reason}")

    async def call(self, command: str, **args: Any) -> dict[str, Any]:
        """Run one command and return its (last) JSON line."""
        result = await self.pool.run(
            self.host, self.command_line(command, args), timeout=self.timeout
        )
        if not result.ok:
            raise self._error(command, result.exit_status, result.stderr)
        return _last_json(result.stdout, self.name, command)

    async def then(
        self,
        relayed: Awaitable[str],
        command: str,
        on_item: Callable[[dict[str, Any]], None],
        file: str,
        **args: Any,
    ) -> None:
        """Stream ``command`` on the file ``relayed`` is bringing here (at ``file``),
        started while it is still on its way: the command's start-up (an SSH round trip,
        the interpreter) overlaps the transfer; the host side waits for the file to
        appear complete. The command gets the usual time limit from the transfer's end.

        Raises:
            MigrationError: the command did not finish in time, or the transfer failed.
        """
        running = asyncio.create_task(
            self.stream(command, on_item, within=None, arrive=ARRIVE_WITHIN, **args)
        )
        try:
            await relayed
        except BaseException:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConsoleError):
                await running
            raise
        try:
            await asyncio.wait_for(running, self.timeout)
        except TimeoutError:
            raise MigrationError(
                f"{self.name}: {command} did not finish within {self.timeout:.0f} s of {file} "
                "arriving"
            ) from None

    async def stream(
        self,
        command: str,
        on_item: Callable[[dict[str, Any]], None],
        *,
        within: float | Literal["default"] | None = "default",
        **args: Any,
    ) -> None:
        """Run one command, handing each JSON line to ``on_item`` as it arrives; it may
        take ``within`` seconds (default: the command timeout; None: no limit).

        Stopped early (cancelled, or the connection failed), the command's whole process
        group on the host is sent SIGTERM as soon as the host is reachable, besides the
        channel close that already stops it: a host-side apply must commit nothing more
        once its client has given up on it.
        """
        stderr: list[str] = []
        status: int | None = None
        pgid: int | None = None
        finished = False
        try:
            limit = self.timeout if within == "default" else within
            async for item in self.pool.stream(
                self.host, self.command_line(command, args), timeout=limit
            ):
                if isinstance(item, CommandExit):
                    status = item.exit_status
                elif item.stream == "stderr":
                    stderr.append(item.text)
                elif item.text.startswith("{"):
                    data = json.loads(item.text)
                    if "pgid" in data and pgid is None:
                        pgid = int(data["pgid"])
                    on_item(data)
            finished = True
        finally:
            if not finished and pgid is not None:
                await asyncio.shield(self._kill_group(pgid))
        if status != 0:
            raise self._error(command, status, "\n".join(stderr))

    async def _kill_group(self, pgid: int) -> None:
        """SIGTERM a host process group; best effort (the host may be unreachable)."""
        if pgid <= 1:
            return
        # dash (Debian's /bin/sh) rejects "kill -TERM -- -PGID"; "-TERM -PGID" works in
        # every POSIX shell.
        with contextlib.suppress(ConsoleError, OSError, TimeoutError):
            await self.pool.run(self.host, f"kill -TERM -{pgid}", timeout=_CLEANUP_TIMEOUT)

    def track(self, path: str) -> str:
        """Remember a host temp file for :meth:`cleanup`; returns it."""
        self.temp_files.append(path)
        return path

    async def fetch(self, remote: str, local: Path, progress: Progress | None = None) -> None:
        """SFTP a host file to the local machine."""
        handler = None
        if progress is not None:

            def handler(_src: bytes, _dst: bytes, done: int, total: int) -> None:
                progress(done, total)

        try:
            sftp = await self.sftp()
            await sftp.get(remote, str(local), progress_handler=handler)
        except (OSError, asyncssh.Error) as e:
            self.close_sftp()
            raise MigrationError(f"{self.name}: SFTP get {remote} failed: {_reason(e)}") from e

    async def sftp(self) -> asyncssh.SFTPClient:
        """This run's SFTP session with the host, opened once: a session costs a channel
        and an sftp-server start on the host, and a run (a mirror above all) moves files
        many times. Reopened when the pool's connection changed; closed by
        :meth:`close_sftp`."""
        conn = await self.pool.connection(self.host)
        if self._sftp is not None and self._sftp[0] is conn:
            return self._sftp[1]
        self.close_sftp()
        client = await conn.start_sftp_client()
        self._sftp = (conn, client)
        return client

    def close_sftp(self) -> None:
        """End the SFTP session, if any (the run is over, or the session failed)."""
        if self._sftp is not None:
            self._sftp[1].exit()
            self._sftp = None

    def new_file(self, name: str) -> str:
        """A new file of this run in the host's work directory (tracked for cleanup)."""
        tag = f"{self.tag}-" if self.tag else ""
        unique = f"bgconsole-migrate-{self.run}-{tag}{secrets.token_hex(4)}-{name}"
        return self.track(f"{self.work_dir}/{unique}")

    async def send(self, local: Path, progress: Progress | None = None) -> str:
        """SFTP a local file to a new file of this run in the host's work directory."""
        remote = self.new_file(local.name)
        handler = None
        if progress is not None:

            def handler(_src: bytes, _dst: bytes, done: int, total: int) -> None:
                progress(done, total)

        try:
            sftp = await self.sftp()
            await sftp.put(str(local), remote, progress_handler=handler)
        except (OSError, asyncssh.Error) as e:
            self.close_sftp()
            raise MigrationError(f"{self.name}: SFTP put {remote} failed: {_reason(e)}") from e
        return remote

    async def relay(
        self,
        path: str,
        target: RemoteSqlite,
        progress: Progress | None = None,
        *,
        into: str | None = None,
    ) -> str:
        """Copy this host's file ``path`` to a new work file on ``target`` (``into``, from
        :meth:`new_file`, if given); returns its path there. The file appears there under
        its name only once complete (written as ``NAME.part``, then renamed), so a command
        started beforehand can wait for it (see :meth:`then`).

        Streamed: each block read from this host is written to the target while the next
        one is read, so the two legs overlap and nothing is stored on this machine (a
        fetch then a send took the sum of both).

        Raises:
            MigrationError: either side failed (the message names both paths).
        """
        remote = into or target.new_file(PurePosixPath(path).name)
        part = target.track(remote + ".part")
        try:
            source_sftp, target_sftp = await asyncio.gather(self.sftp(), target.sftp())
            total = (await source_sftp.stat(path)).size or 0
            async with (
                source_sftp.open(path, "rb") as reading,
                target_sftp.open(part, "wb") as writing,
            ):
                await _pipe(reading, writing, total, progress)
            await target_sftp.rename(part, remote)
        except (OSError, asyncssh.Error) as e:
            self.close_sftp()
            target.close_sftp()
            raise MigrationError(
                f"copying {self.name}:{path} to {target.name}:{remote} failed: {_reason(e)}"
            ) from e
        return remote

    async def cleanup(self) -> None:
        """Remove the temp files this migration left on the host; best effort."""
        if not self.temp_files:
            return
        paths, self.temp_files = self.temp_files, []
        # Leftovers are named bgconsole-migrate-*; never worth failing a migration over.
        with contextlib.suppress(ConsoleError):
            await self.pool.run(
                self.host, shlex.join(["rm", "-f", "--", *paths]), timeout=_CLEANUP_TIMEOUT
            )


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or getattr(e, "strerror", None) or e)


RELAY_BLOCK = 1 << 20
"""Bytes per block relayed: large enough for asyncssh's parallel SFTP requests."""


async def _pipe(
    reading: asyncssh.SFTPClientFile,
    writing: asyncssh.SFTPClientFile,
    total: int,
    progress: Progress | None,
) -> None:
    """Write what ``reading`` yields to ``writing``, reading ahead while writing."""
    blocks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

    async def read() -> None:
        while True:
            block = cast(bytes, await reading.read(RELAY_BLOCK))
            await blocks.put(block)  # an empty block is the end
            if not block:
                return

    reader = asyncio.create_task(read())
    done = 0
    try:
        while block := await blocks.get():
            await writing.write(block)
            done += len(block)
            if progress is not None:
                progress(done, max(total, done))
        await reader
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _last_json(stdout: str, name: str, command: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                break
            if isinstance(data, dict):
                return data
    raise MigrationError(f"{name}: {command} printed no result (is {PYTHON} working there?)")
