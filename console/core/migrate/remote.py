"""Run the host-side SQLite script (hostside.py) on a host over SSH, and move its files."""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from console.core.config import HostConfig
from console.core.errors import BackendError, ConsoleError
from console.core.migrate import hostside
from console.core.ssh import CommandExit, Progress, SshPool, describe

PYTHON = "python3"
_SOURCE = Path(hostside.__file__).read_text(encoding="utf-8")
_MISSING_PYTHON = 127
_CLEANUP_TIMEOUT = 5.0


class MigrationError(BackendError):
    """A migration step failed on a host; the message names the host, step and cause."""


class RemoteSqlite:
    """One SQLite database on one host, driven by the host-side script."""

    def __init__(
        self, pool: SshPool, host: HostConfig, db: str, timeout: float, tag: str = ""
    ) -> None:
        self.pool = pool
        self.host = host
        self.db = db
        self.timeout = timeout
        self.tag = tag
        """The application's name in temp-file names, so a sweep removes only its own."""
        self.temp_files: list[str] = []

    @property
    def name(self) -> str:
        """``host:path``, how messages name this database."""
        return f"{self.host.name}:{self.db}"

    def _command(self, command: str, args: dict[str, Any]) -> str:
        payload = json.dumps({"db": self.db, "tag": self.tag, **args})
        return shlex.join([PYTHON, "-c", _SOURCE, command, payload])

    def _error(self, command: str, status: int | None, stderr: str) -> MigrationError:
        if status == _MISSING_PYTHON:
            return MigrationError(
                f"{describe(self.host)}: {PYTHON} not found; migrations run a small "
                f"{PYTHON} script on the host (install python3)"
            )
        lines = [line for line in stderr.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else f"exit status {status}"
        return MigrationError(f"{self.name}: {command} failed: {reason}")

    async def call(self, command: str, **args: Any) -> dict[str, Any]:
        """Run one command and return its (last) JSON line."""
        result = await self.pool.run(self.host, self._command(command, args), timeout=self.timeout)
        if not result.ok:
            raise self._error(command, result.exit_status, result.stderr)
        return _last_json(result.stdout, self.name, command)

    async def stream(
        self, command: str, on_item: Callable[[dict[str, Any]], None], **args: Any
    ) -> None:
        """Run one command, handing each JSON line to ``on_item`` as it arrives."""
        stderr: list[str] = []
        status: int | None = None
        async for item in self.pool.stream(
            self.host, self._command(command, args), timeout=self.timeout
        ):
            if isinstance(item, CommandExit):
                status = item.exit_status
            elif item.stream == "stderr":
                stderr.append(item.text)
            elif item.text.startswith("{"):
                on_item(json.loads(item.text))
        if status != 0:
            raise self._error(command, status, "\n".join(stderr))

    def track(self, path: str) -> str:
        """Remember a host temp file for :meth:`cleanup`; returns it."""
        self.temp_files.append(path)
        return path

    async def fetch(self, remote: str, local: Path, progress: Progress | None = None) -> None:
        """SFTP a host file to the local machine."""
        await self.pool.get(self.host, remote, local, progress)

    async def send(
        self, local: Path, progress: Progress | None = None, *, beside_db: bool = False
    ) -> str:
        """SFTP a local file to a new temp path on the host; returns that path.

        Args:
            beside_db: put it next to the database (same filesystem, so it can be renamed
                into place atomically) instead of in /tmp.
        """
        tag = f"{self.tag}-" if self.tag else ""
        unique = f"bgconsole-migrate-{tag}{secrets.token_hex(6)}-{local.name}"
        remote = f"{self.db}.{unique}" if beside_db else f"/tmp/{unique}"
        self.track(remote)
        await self.pool.put(self.host, local, remote, progress)
        return remote

    async def sweep(self) -> int:
        """Remove temp files an interrupted earlier run left on the host; how many.

        Only call it while holding the application's ``migrate`` lock: then no run of
        this application is using them. Best effort: a failure here never stops a run.
        """
        with contextlib.suppress(ConsoleError):
            result = await self.call("sweep")
            return int(result.get("removed", 0))
        return 0

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
