"""Before a flip: which rows written on the live colour are not on the target yet.

The answer comes from the migration planner itself (a rows dry run: the same ``plan()``
a real migration executes), never from a cheaper guess, so "every row is there" on the
switch confirmation means what ``bgconsole migrate --dry-run`` would say. When it cannot
tell (no SQLite data configured, a host unreachable, a migration holding the lock, too
slow), it says "not checked" and why: silence must never read as "nothing to migrate".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from console.core.errors import ConsoleError, LockHeld
from console.core.migrate.plan import MigrationRequest, MigrationResult
from console.core.models import Colour

DryRun = Callable[[MigrationRequest], Awaitable[MigrationResult]]
TIMEOUT = 30.0
"""Seconds the check may take before it says "not checked" (the dry run is cancelled;
its host side stops with it)."""


@dataclass(frozen=True, slots=True)
class DataCheck:
    """Rows on ``source`` the ``target`` lacks, per table; or why nobody knows."""

    source: Colour
    target: Colour
    checked: bool
    missing: tuple[tuple[str, int], ...] = ()
    """``(table, rows the target lacks)`` for each table with any."""
    differ: int = 0
    """Rows with the same identity and different content on the two colours."""
    tables: int = 0
    """Tables compared."""
    seconds: float = 0.0
    why: str = ""
    """Why it was not checked (empty when checked)."""

    @property
    def rows_missing(self) -> int:
        """Rows on the source the target lacks, in total."""
        return sum(count for _, count in self.missing)

    @property
    def clean(self) -> bool:
        """Checked, and every row of the source is on the target as it is."""
        return self.checked and not self.missing and not self.differ


async def check_data(
    dry_run: DryRun, source: Colour, target: Colour, *, limit: float = TIMEOUT
) -> DataCheck:
    """Plan a rows migration ``source -> target`` (writing nothing) and summarise it."""
    started = time.monotonic()
    request = MigrationRequest(source, target, "rows", dry_run=True, reason="go/no-go check")
    try:
        async with asyncio.timeout(limit):
            result = await dry_run(request)
    except TimeoutError:
        return DataCheck(source, target, False, why=f"the dry run took over {limit:g} s")
    except LockHeld as e:
        return DataCheck(source, target, False, why=f"a migration is running ({e})")
    except ConsoleError as e:
        return DataCheck(source, target, False, why=str(e))
    missing = tuple((item.item, item.missing) for item in result.items if item.missing)
    return DataCheck(
        source,
        target,
        True,
        missing=missing,
        differ=result.conflicts,
        tables=len(result.items),
        seconds=time.monotonic() - started,
    )
