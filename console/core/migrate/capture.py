"""Change capture for the mirror: triggers on the source, changes applied in order.

``migrate mirror --setup`` installs, on each source database, a change table
(``_bgconsole_changes``) and an AFTER INSERT/UPDATE/DELETE trigger per table that records
the new row and the old row's identity (see tables.py). The mirror then applies the
changes in sequence order on the target, by identity, in short transactions; the target
keeps the last change applied (``_bgconsole_mirror``) in the same transaction, so a
change re-sent after a crash is skipped, never applied twice. ``--teardown`` removes
all of it from both sides. Both are idempotent.

The lag (changes not yet applied, age of the oldest) is :func:`mirror_lag`, a plain
call for ``status``, the console and the switch's go/no-go.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from console.core.errors import ConsoleError
from console.core.migrate.mirror import MirrorStatus, StatusCallback
from console.core.migrate.plan import Progress, ProgressCallback
from console.core.migrate.remote import RemoteSqlite

BATCH = 100_000
"""Changes fetched per cycle; a backlog drains over several cycles. Large: each cycle
costs a handful of SSH round trips, while a change costs microseconds."""


LONG_POLL = 2.0
"""Least seconds a source waits for a change (when the interval is shorter): a change is
seen within 10 ms of its commit. Longer waits leave fewer gaps between them (a new wait
costs an SSH round trip); ``stop`` ends a wait at once."""


@dataclass(frozen=True, slots=True)
class MirrorLag:
    """How far a target is behind its source's captured changes."""

    captured: bool
    """Whether change capture is set up on every source (else nothing to measure)."""
    pending: int
    """Changes the targets have not applied yet."""
    oldest_age: float
    """Seconds since the oldest of them was made (0 when none is pending)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "captured": self.captured,
            "pending": self.pending,
            "oldest_age": round(self.oldest_age, 3),
        }

    def describe(self) -> str:
        """``mirror: 3 change(s) behind, oldest 1.2 s`` (or caught up / not set up)."""
        if not self.captured:
            return "mirror: change capture not set up"
        if not self.pending:
            return "mirror: caught up"
        return f"mirror: {self.pending} change(s) behind, oldest {self.oldest_age:.1f} s"


def source_id(source: RemoteSqlite) -> str:
    """How a target's cursor names the source it follows."""
    return source.name


async def setup(pairs: list[tuple[RemoteSqlite, RemoteSqlite]], tables: tuple[str, ...]) -> int:
    """Install capture on every source (idempotent); returns tables covered."""
    covered = 0
    for source, _ in pairs:
        args: dict[str, Any] = {"tables": list(tables)} if tables else {}
        result = await source.call("capture_setup", **args)
        covered += len(result.get("tables", ()))
    return covered


async def teardown(pairs: list[tuple[RemoteSqlite, RemoteSqlite]]) -> int:
    """Remove capture from every source and the cursor from every target (idempotent)."""
    removed = 0
    for source, target in pairs:
        removed += int((await source.call("capture_teardown")).get("removed", 0))
        removed += int((await target.call("capture_teardown")).get("removed", 0))
    return removed


async def mirror_lag(pairs: list[tuple[RemoteSqlite, RemoteSqlite]]) -> MirrorLag:
    """Changes not applied yet and the oldest one's age, over every pair.

    The hook for ``status`` and the switch's go/no-go: two short read-only host calls
    per pair, no lock and no temp files.
    """
    pending = 0
    oldest = 0.0
    for source, target in pairs:
        cursor = int((await target.call("cursor", source=source_id(source))).get("seq", 0))
        found = await source.call("changes", after=cursor, count_only=True)
        if not found.get("captured"):
            return MirrorLag(False, 0, 0.0)
        pending += int(found["pending"])
        oldest = max(oldest, float(found["oldest_age"]))
    return MirrorLag(True, pending, oldest)


async def captured(source: RemoteSqlite) -> bool:
    """Whether change capture is set up on this source."""
    found = await source.call("changes", after=0, count_only=True)
    return bool(found.get("captured"))


class ChangeMirror:
    """Applies captured changes over pairs of (source, target), cycle by cycle."""

    def __init__(
        self,
        pairs: list[tuple[RemoteSqlite, RemoteSqlite]],
        *,
        slice_seconds: float,
        interval: float = 1.0,
        batch: int = BATCH,
        on_progress: ProgressCallback,
    ) -> None:
        self.pairs = pairs
        self.interval = interval
        self.slice = slice_seconds
        self.batch = batch
        self.on_progress = on_progress
        self.cycles = 0
        self.copied = 0
        self.conflicts = 0
        self.caught_up_at = time.time()
        self.long_poll = max(interval, LONG_POLL) if len(pairs) == 1 else 0.0
        """Seconds the source waits for a change before answering (0: it answers at once).
        One pair only: pairs are visited in turn, and one waiting would hold up the rest."""
        self.polling = False
        """Whether the source is waiting for changes (all this cycle does meanwhile)."""
        self.cursors: dict[int, int] = {}
        """Per pair, the target's cursor as this mirror left it (only this mirror applies
        changes there: it holds the migrate lock); read from the target when unknown."""

    async def run(self, on_status: StatusCallback, stop: asyncio.Event) -> MirrorStatus:
        """Apply changes until ``stop`` is set; returns the last status. With one pair the
        source waits for changes (long poll) and they are applied right after their
        commit; else a cycle runs every ``interval``."""
        status = MirrorStatus(0, 0, 0, 0.0)
        with tempfile.TemporaryDirectory(prefix="bgconsole-mirror-") as tmp:
            while not stop.is_set():
                ended = await self._unless_stopped(self.cycle(Path(tmp)), stop)
                if ended is None:
                    break  # stopped while the source waited for changes
                status = ended
                on_status(status)
                if self.long_poll and not status.error:
                    continue  # the source waited for changes already
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        return status

    async def _unless_stopped(
        self, cycle: Coroutine[Any, Any, MirrorStatus], stop: asyncio.Event
    ) -> MirrorStatus | None:
        """Run one cycle; if ``stop`` is set while the source is waiting for changes (a
        read-only command), end it there and return None. A cycle that is applying
        changes is let finish."""
        running = asyncio.create_task(cycle)
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not running.done() and self.polling:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
                return None
            return await running
        finally:
            stopping.cancel()
            if not running.done():  # this task itself was cancelled: the cycle goes too
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    async def cycle(self, workdir: Path) -> MirrorStatus:
        """One pass over every pair; errors become the status's ``error``."""
        behind = 0
        lag = 0.0
        error = ""
        for index, (source, target) in enumerate(self.pairs):
            try:
                left, age = await self._pair(source, target, workdir, index)
                behind += left
                lag = max(lag, age)
            except ConsoleError as e:
                error = str(e)
                # Whatever was committed, the target's own cursor says: read it again.
                self.cursors.pop(index, None)
                await asyncio.gather(source.cleanup(), target.cleanup())
        self.cycles += 1
        if error:
            lag = time.time() - self.caught_up_at
        elif behind == 0:
            self.caught_up_at = time.time()
        return MirrorStatus(self.cycles, self.copied, behind, lag, self.conflicts, error)

    async def _pair(
        self, source: RemoteSqlite, target: RemoteSqlite, workdir: Path, index: int
    ) -> tuple[int, float]:
        """Apply one batch; returns (changes still behind, age of the oldest of them)."""
        cursor = self.cursors.get(index)
        if cursor is None:
            cursor = int((await target.call("cursor", source=source_id(source))).get("seq", 0))
        self.polling = True
        try:
            found = await source.call(
                "changes", after=cursor, limit=self.batch, wait=self.long_poll
            )
        finally:
            self.polling = False
        if not found.get("captured"):
            raise ConsoleError(
                f"{source.name}: change capture is not set up (bgconsole migrate mirror --setup)"
            )
        # The same file every cycle (the next one overwrites it): tracked once.
        path = str(found["path"])
        if path not in source.temp_files:
            source.track(path)
        rows = int(found["rows"])
        pending = int(found["pending"])
        self.cursors[index] = cursor
        last = int(found["last"])
        if not rows:
            if last > cursor:
                # Only changes of tables dropped since: move the target's position past
                # them, or every cycle would fetch the same batch again.
                await target.call("set_cursor", source=source_id(source), seq=last)
                self.cursors[index] = last
            return pending, float(found["oldest_age"]) if pending else 0.0
        remote = target.new_file(PurePosixPath(path).name)
        relayed = source.relay(path, target, into=remote)

        def on_item(item: dict[str, Any]) -> None:
            if "refused" in item:
                self.conflicts += 1
            elif "done" in item:
                done = item["done"]
                self.copied += sum(int(done[k]) for k in ("inserted", "updated", "deleted"))
                self.on_progress(Progress("apply", target.name, self.copied, 0, "changes"))

        # The apply starts while the changes travel and waits for them on the host.
        await target.then(
            relayed, "apply_changes", on_item, remote,
            rows=remote, source=source_id(source), slice=self.slice,
        )  # fmt: skip
        # Applied to the end (the command succeeded), and it removed its file: the
        # target's cursor is now this batch's last change; no need to ask it next time.
        target.temp_files = [p for p in target.temp_files if not p.startswith(remote)]
        self.cursors[index] = last
        left = pending - rows
        return left, float(found["oldest_age"]) if left else 0.0
