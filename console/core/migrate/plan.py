"""What a migration is asked to do, how it reports progress, and what it did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from console.core.migrate.tables import TablePlan
from console.core.models import Colour

Strategy = Literal["rows", "snapshot", "mirror", "redis"]
STRATEGIES: tuple[Strategy, ...] = ("rows", "snapshot", "mirror", "redis")
LOCK_NAME = "migrate"
"""The control-plane lock every migration holds (one migration at a time per app)."""


@dataclass(frozen=True, slots=True)
class MigrationRequest:
    """One migration as the operator asked for it."""

    source: Colour
    target: Colour
    strategy: Strategy = "rows"
    tables: tuple[str, ...] = ()
    """Only these tables (rows, mirror); empty means every table."""
    dry_run: bool = False
    overwrite: bool = False
    """Replace target rows/keys that differ from the source's instead of reporting them."""
    live_ok: bool = False
    """Allow writing into the live colour (the application is using it)."""
    reason: str = ""
    row_delay: float = 0.0
    """Seconds to pause after each row applied: a throttle for a busy target."""
    whole_tables: bool = False
    """Rows: each table in one transaction (all or nothing per table) instead of slices of
    ``[migrate] slice``: the target's write lock is held for a whole table."""


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress report: ``done`` of ``total`` units of one phase of one item."""

    phase: str
    """inspect, export, transfer, apply, verify, backup, install, copy."""
    item: str
    done: int
    total: int
    unit: str = "rows"

    @property
    def share(self) -> float:
        """How much of this phase is done, 0.0 to 1.0 (0.0 when the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total else 0.0

    def amount(self) -> str:
        """``3/10 rows``, or ``12/40 KiB`` for bytes."""
        if self.unit == "bytes":
            return f"{self.done / 1024:.0f}/{self.total / 1024:.0f} KiB"
        return f"{self.done}/{self.total} {self.unit}"


ProgressCallback = Callable[[Progress], None]

RESULT_COLUMNS: tuple[str, ...] = (
    "item", "identity", "source", "target", "missing", "conflicts", "target only", "copied",
    "updated", "verified",
)  # fmt: skip
"""Column names of :meth:`ItemResult.cells`, for the CLI's and the console's result tables."""


def no_progress(_: Progress) -> None:
    """The default progress callback: ignore."""


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome for one table (``host:db table``) or one Redis key pattern."""

    item: str
    source_count: int
    target_count: int
    """Rows or keys the target had before."""
    missing: int
    """Rows or keys the target lacked."""
    conflicts: int = 0
    """Same key, different content; left alone unless overwrite."""
    copied: int = 0
    verified: bool | None = None
    """None for a dry run or an item not verified."""
    conflict_sample: tuple[str, ...] = ()
    checksum: str = ""
    """Order-independent digest of the whole target table after the run (for a dry run:
    the digest the plan promises)."""
    note: str = ""
    identity: str = ""
    """How rows are told apart: ``pk(id)``, ``unique(email)``, ``whole row``; or empty."""
    only_on_target: int = 0
    """Rows the target has and the source lacks: kept by rows, dropped by snapshot."""
    updated: int = 0
    """Rows overwritten with the source's version (dry run: to be overwritten)."""
    changed: tuple[str, ...] = ()
    """The identity of every row overwritten."""
    expected: str = ""
    """What the plan promised for the whole target table (count and digest)."""
    longest_lock: float = 0.0
    """Seconds of the longest write transaction the apply held on the target."""

    def cells(self) -> tuple[str, ...]:
        """This item as text cells, in :data:`RESULT_COLUMNS` order."""
        verified = {True: "yes", False: "NO", None: "-"}[self.verified]
        return (
            self.item,
            self.identity or "-",
            str(self.source_count),
            str(self.target_count),
            str(self.missing),
            str(self.conflicts),
            str(self.only_on_target),
            str(self.copied),
            str(self.updated),
            verified,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "item": self.item,
            "source_count": self.source_count,
            "target_count": self.target_count,
            "missing": self.missing,
            "conflicts": self.conflicts,
            "copied": self.copied,
            "verified": self.verified,
            "conflict_sample": list(self.conflict_sample),
            "checksum": self.checksum,
            "note": self.note,
            "identity": self.identity,
            "only_on_target": self.only_on_target,
            "updated": self.updated,
            "changed": list(self.changed),
            "expected": self.expected,
            "longest_lock": round(self.longest_lock, 4),
        }


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What a migration (or its dry run) found and did."""

    strategy: Strategy
    source: Colour
    target: Colour
    dry_run: bool
    items: tuple[ItemResult, ...]
    duration: float = 0.0
    problems: tuple[str, ...] = ()
    """Why the migration is not a success (verification failed, conflicts left)."""
    backups: tuple[str, ...] = field(default=())
    """``host:path`` of the files a snapshot kept before replacing them."""
    plans: tuple[TablePlan, ...] = ()
    """The plan the dry run showed or the run executed (rows): the same object type, so
    a dry run's plan can be compared with what the run then did."""
    run: str = ""
    """This run's id, in its temp files on the hosts and in its events."""
    previous: tuple[str, ...] = ()
    """What interrupted earlier runs had committed before they died (found by this run)."""

    @property
    def ok(self) -> bool:
        """Whether it did everything asked and verified it (a dry run: found no problem)."""
        return not self.problems

    @property
    def copied(self) -> int:
        """Rows or keys written in total."""
        return sum(item.copied for item in self.items)

    @property
    def missing(self) -> int:
        """Rows or keys the target lacked in total."""
        return sum(item.missing for item in self.items)

    @property
    def conflicts(self) -> int:
        """Conflicting rows or keys in total."""
        return sum(item.conflicts for item in self.items)

    @property
    def only_on_target(self) -> int:
        """Target rows the source lacks, in total."""
        return sum(item.only_on_target for item in self.items)

    def notes(self) -> list[str]:
        """Lines below the table: conflicts, rows changed, warnings, backups, dead runs."""
        lines = []
        for item in self.items:
            if item.conflict_sample:
                lines.append(f"conflicts in {item.item}: {', '.join(item.conflict_sample)}")
            if item.changed:
                lines.append(f"updated in {item.item}: {', '.join(item.changed)}")
            if item.note:
                lines.append(f"{item.item}: {item.note}")
            if item.verified is False:
                lines.append(f"NOT VERIFIED {item.item}: expected {item.expected}, found digest "
                             f"{item.checksum}")  # fmt: skip
        lines.extend(f"backup kept: {backup}" for backup in self.backups)
        lines.extend(f"previous run: {text}" for text in self.previous)
        return lines

    def summary(self) -> str:
        """One line: what moved where, and the verdict."""
        what = "dry run" if self.dry_run else "migration"
        verdict = "ok" if self.ok else "FAILED"
        if self.dry_run:
            counts = f"{self.missing} to copy, {self.conflicts} conflicting"
        else:
            counts = f"{self.copied} copied, {self.conflicts} conflicting"
        updated = sum(item.updated for item in self.items)
        if updated:
            counts += f", {updated} {'to update' if self.dry_run else 'updated'}"
        if self.only_on_target:
            fate = "kept" if self.strategy == "rows" else "dropped (kept in the backup)"
            if self.strategy == "snapshot" and self.dry_run:
                fate = "would be dropped (kept only in the backup)"
            counts += f", {self.only_on_target} only on the target {fate}"
        return (
            f"{self.strategy} {what} {self.source} -> {self.target}: {verdict}; {counts} "
            f"in {self.duration:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "strategy": self.strategy,
            "source": self.source.value,
            "target": self.target.value,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "copied": self.copied,
            "missing": self.missing,
            "conflicts": self.conflicts,
            "duration": round(self.duration, 3),
            "problems": list(self.problems),
            "backups": list(self.backups),
            "only_on_target": self.only_on_target,
            "run": self.run,
            "previous": list(self.previous),
            "items": [item.as_dict() for item in self.items],
        }
