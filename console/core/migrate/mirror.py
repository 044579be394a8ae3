"""The ``mirror`` strategy without change capture: keep copying appended rows.

This is the fallback when ``migrate mirror --setup`` has not installed change capture
(capture.py, which carries updates and deletes too). After a rows catch-up, every
``interval`` the source is asked for the rows above a per-table rowid mark (oldest
first, a bounded batch); they are applied on the target in short transactions and the
mark advances only after the apply committed, so a cycle cut short is simply done again.
Each cycle reports a :class:`MirrorStatus`: rows copied, rows still behind, and the lag
in seconds (how old the newest state the target is known to have caught up with is).
Only appended rows are mirrored, not updates or deletes, and tables need a rowid (not
WITHOUT ROWID). A failing cycle (host down) is reported and retried; the mirror ends
when ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from console.core.errors import ConsoleError
from console.core.migrate.plan import Progress, ProgressCallback
from console.core.migrate.remote import RemoteSqlite
from console.core.migrate.tables import TableState

BATCH = 1000
"""Rows per table per cycle; a backlog drains over several cycles without pausing."""


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """The mirror after a cycle."""

    cycles: int
    copied: int
    """Rows copied since the mirror started (after the catch-up)."""
    behind: int
    """Rows the source had above the marks that are not on the target yet."""
    lag: float
    """Seconds since the moment the target was last known to hold all of the source's rows."""
    conflicts: int = 0
    error: str = ""
    """Why the last cycle failed (the mirror keeps trying), or empty."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "cycles": self.cycles,
            "copied": self.copied,
            "behind": self.behind,
            "lag": round(self.lag, 3),
            "conflicts": self.conflicts,
            "error": self.error,
        }


StatusCallback = Callable[[MirrorStatus], None]


def initial_marks(states: dict[str, TableState]) -> dict[str, int | None]:
    """Per table, the highest rowid the catch-up saw: the tail compares rowids, so the
    marks must be rowids too (a ``BIGINT PRIMARY KEY`` is not the rowid: marks taken from
    it skipped rows). WITHOUT ROWID tables (max_rowid None) are not tailed."""
    return {name: state.max_rowid for name, state in states.items() if state.max_rowid is not None}


class Mirror:
    """Continuous copy of new rows over pairs of (source, target) databases."""

    def __init__(
        self,
        pairs: list[tuple[RemoteSqlite, RemoteSqlite, dict[str, int | None]]],
        *,
        interval: float = 1.0,
        batch: int = BATCH,
        slice_seconds: float = 0.05,
        on_progress: ProgressCallback,
    ) -> None:
        self.pairs = pairs
        self.slice = slice_seconds
        self.interval = interval
        self.batch = batch
        self.on_progress = on_progress
        self.copied = 0
        self.conflicts = 0
        self.cycles = 0
        self.caught_up_at = time.time()

    async def run(self, on_status: StatusCallback, stop: asyncio.Event) -> MirrorStatus:
        """Mirror until ``stop`` is set; returns the last status."""
        status = MirrorStatus(0, 0, 0, 0.0)
        while not stop.is_set():
            status = await self.cycle()
            on_status(status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        return status

    async def cycle(self) -> MirrorStatus:
        """One pass over every pair; errors become the status's ``error``."""
        started = time.time()
        behind = 0
        error = ""
        for source, target, marks in self.pairs:
            try:
                behind += await self._pair(source, target, marks)
            except ConsoleError as e:
                error = str(e)
            finally:
                await asyncio.gather(source.cleanup(), target.cleanup())
        self.cycles += 1
        if not error and behind == 0:
            self.caught_up_at = started
        return MirrorStatus(
            self.cycles, self.copied, behind, time.time() - self.caught_up_at, self.conflicts, error
        )

    async def _pair(
        self,
        source: RemoteSqlite,
        target: RemoteSqlite,
        marks: dict[str, int | None],
    ) -> int:
        """Copy one batch; returns rows still behind. Advances ``marks`` in place."""
        tail = await source.call("tail", marks=marks, limit=self.batch)
        path = source.track(str(tail["path"]))
        rows = int(tail["rows"])
        pending = sum(int(n) for n in tail["pending"].values())
        last: dict[str, int] = {str(k): int(v) for k, v in tail["last"].items()}
        if rows:
            remote = await source.relay(path, target)

            def on_item(item: dict[str, Any]) -> None:
                if "refused" in item:
                    self.conflicts += 1
                elif "table" in item:
                    self.copied += int(item["inserted"])
                    self.on_progress(
                        Progress("apply", f"{target.name} {item['table']}", self.copied, 0)
                    )

            await target.stream("apply", on_item, rows=remote, slice=self.slice, delay=0)
        # Only now, with the rows committed on the target, may the marks move on.
        marks.update(last)
        return pending - rows
