"""A run's presence on its hosts: a lock held while it lives, and the sweep of dead runs.

Every file a run makes on a host carries its run id. While the run lives, a ``hold``
command on each host keeps an exclusive lock on the run's lock file; it dies with the SSH
channel (client killed, connection dropped), and the kernel then drops the lock. A sweep
removes a run's files only when it can take that lock: the run is provably dead, which a
name (two consoles both called ``demo`` on one machine) or an age cannot prove.

The sweep also returns what each dead run's journal says it committed, so the next run
(and its event) can say what an interrupted run really did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from console.core.errors import ConsoleError
from console.core.migrate.remote import MISSING_PYTHON, PYTHON, MigrationError, RemoteSqlite
from console.core.ssh import CommandExit

FINISHED = ("-journal.jsonl", ".lock")
"""The run's own files on each host (hostside.py names them), removed when it ends well."""
FINISH_TIMEOUT = 10.0
HOLD_TIMEOUT = 15.0
"""Seconds to wait for a host to confirm the run's lock before giving up on the run."""


@dataclass(frozen=True, slots=True)
class DeadRun:
    """What an interrupted run had committed on one host before it died."""

    host: str
    run: str
    tables: dict[str, tuple[int, int, bool]]
    """table -> (rows inserted, rows updated, finished)."""

    def describe(self) -> str:
        """``run 1a2b3c4d5e6f on blue was interrupted after committing: uploads 120
        inserted (unfinished)``."""
        if not self.tables:
            return f"run {self.run} on {self.host} was interrupted before committing anything"
        parts = []
        for table, (inserted, updated, finished) in sorted(self.tables.items()):
            text = f"{table} {inserted} inserted"
            if updated:
                text += f", {updated} updated"
            parts.append(text + ("" if finished else " (unfinished)"))
        return f"run {self.run} on {self.host} was interrupted after committing: " + "; ".join(
            parts
        )


def summarise(host: str, run: str, journal: list[Any]) -> DeadRun:
    """A dead run's journal lines, added up per table."""
    tables: dict[str, tuple[int, int, bool]] = {}
    for entry in journal:
        if not isinstance(entry, dict) or "table" not in entry:
            continue
        name = str(entry["table"])
        inserted, updated, finished = tables.get(name, (0, 0, False))
        tables[name] = (
            inserted + int(entry.get("inserted", 0)),
            updated + int(entry.get("updated", 0)),
            finished or bool(entry.get("finished")),
        )
    return DeadRun(host, run, tables)


class HostRun:
    """Holds a run's lock on each host for the run's lifetime (``async with``)."""

    def __init__(self, remotes: list[RemoteSqlite]) -> None:
        by_host: dict[str, list[RemoteSqlite]] = {}
        for remote in remotes:
            by_host.setdefault(remote.host.name, []).append(remote)
        self.by_host = by_host
        self.tasks: list[asyncio.Task[None]] = []
        self.dead: list[DeadRun] = []

    @contextlib.asynccontextmanager
    async def held(self, *, sweep: bool) -> AsyncIterator[HostRun]:
        """Hold the lock on every host (and sweep what dead runs left), then release."""
        # Hosts are independent: each step runs on all of them at once (a command costs
        # an SSH round trip and a Python start-up on the host).
        hosts = list(self.by_host.values())
        try:
            found = await asyncio.gather(
                *(self._hold(remotes, sweep=sweep) for remotes in hosts),
                return_exceptions=True,
            )
            self.dead = []
            for result in found:
                if isinstance(result, BaseException):
                    raise result
                self.dead.extend(result)
            yield self
            # Ended normally: nothing for the next run to report. An interrupted run's
            # journal stays (its holder dies with the channel) for the next sweep.
            await _all(_finish(remotes) for remotes in hosts)
        finally:
            for remotes in hosts:
                for remote in remotes:
                    remote.close_sftp()
            for task in self.tasks:
                task.cancel()
            for task in self.tasks:
                with contextlib.suppress(asyncio.CancelledError, ConsoleError):
                    await task

    async def _hold(self, remotes: list[RemoteSqlite], *, sweep: bool) -> list[DeadRun]:
        """Start the run's lock holder on one host; with ``sweep`` it first sweeps what
        dead runs left there. Returns the dead runs found."""
        remote = remotes[0]
        held = asyncio.Event()
        failure: list[str] = []
        swept: list[DeadRun] = []

        key = _host_key(remote)
        for each in remotes:
            each.use_python(_RESOLVED.get(key))

        def on_held(answer: dict[str, Any]) -> None:
            swept.extend(_dead_runs(remote.host.name, answer))
            for each in remotes:
                each.use_python(answer.get("python"))
            _RESOLVED[key] = remote.python
            held.set()

        async def hold() -> None:
            args = {"sweep": [r.db for r in remotes]} if sweep else {}
            stderr: list[str] = []
            for _attempt in range(2):
                status = await _holding(remote, args, stderr, on_held)
                if held.is_set() or status != MISSING_PYTHON or remote.python == PYTHON:
                    break
                # The interpreter a previous run found is gone (upgraded): look again.
                _RESOLVED.pop(key, None)
                for each in remotes:
                    each.python = PYTHON
            failure.append(stderr[-1] if stderr else "the run's lock holder ended")
            held.set()

        self.tasks.append(asyncio.create_task(hold()))
        async with asyncio.timeout(HOLD_TIMEOUT):
            await held.wait()
        if failure:
            raise MigrationError(f"{remote.host.name}: cannot hold the run's lock: {failure[0]}")
        return swept


async def _holding(
    remote: RemoteSqlite,
    args: dict[str, Any],
    stderr: list[str],
    on_held: Callable[[dict[str, Any]], None],
) -> int | None:
    """Run the hold command until it ends (the run's end, or a failure); returns its exit
    status (None: the connection failed), collecting stderr."""
    command = remote.command_line("hold", args)
    try:
        async for item in remote.pool.stream(remote.host, command, timeout=None):
            if isinstance(item, CommandExit):
                return item.exit_status
            if item.stream == "stderr":
                stderr.append(item.text)
            elif item.text.startswith('{"held"'):
                on_held(json.loads(item.text))
    except ConsoleError as e:
        stderr.append(str(e))
    return None


_RESOLVED: dict[tuple[str, str, str], str] = {}
"""The interpreter ``python3`` resolved to on each host, as the last run's hold reported
it: the next run's hold starts with it (a console runs many migrations)."""


def _host_key(remote: RemoteSqlite) -> tuple[str, str, str]:
    return (remote.host.name, repr(remote.host.ssh), repr(remote.host.jump))


def _dead_runs(host: str, answer: dict[str, Any]) -> list[DeadRun]:
    """The dead runs a sweep reported (none if it failed: a sweep is best effort)."""
    return [
        summarise(host, str(dead["run"]), dead.get("journal", []))
        for dead in answer.get("dead", [])
    ]


async def _finish(remotes: list[RemoteSqlite]) -> None:
    """Drop the run's journal and lock on one host, and the transfer files its databases
    still hold (one command: the run's steps leave their files to this)."""
    paths = [path for remote in remotes for path in remote.temp_files]
    first = remotes[0]
    # The lock file last: until it goes, a crash here leaves the run for a sweep to find.
    ours = [f"{first.work_dir}/bgconsole-migrate-{first.run}{end}" for end in FINISHED]
    # A plain rm, not the host script: no interpreter to start for deleting files.
    with contextlib.suppress(ConsoleError):
        await first.pool.run(
            first.host, shlex.join(["rm", "-f", "--", *paths, *ours]), timeout=FINISH_TIMEOUT
        )
        for remote in remotes:
            remote.temp_files = [p for p in remote.temp_files if p not in paths]


async def _all(steps: Iterable[Awaitable[None]]) -> None:
    """Run ``steps`` together; the first failure is raised once all have ended."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
