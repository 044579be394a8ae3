"""The ``rows`` strategy: copy the rows the target lacks, one transaction per table, verify.

Rows are matched by primary key (rowid for tables without one). A source row whose key
the target lacks is copied; a key both have with different content is a conflict,
reported and left alone unless ``overwrite``. The flow per database pair:

1. inspect both sides (every row's key and a content hash, from one read transaction);
2. plan: missing and conflicting keys per table (a dry run stops here);
3. export the wanted rows on the source to a file, SFTP it over, apply on the target
   in ONE transaction per table (``BEGIN IMMEDIATE`` ... ``COMMIT``): killed midway, a
   table has all of its new rows or none;
4. verify: inspect the target again; every migrated key must carry the source's hash
   (an order-independent checksum of the migrated keys is reported).

Running it again is safe: it only copies what is still missing.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.core.migrate.plan import ItemResult, Progress, ProgressCallback
from console.core.migrate.remote import MigrationError, RemoteSqlite

_SAMPLE = 5
"""Conflicting keys named in results (the rest are counted)."""


@dataclass(frozen=True, slots=True)
class TableState:
    """One table as inspected: its shape and each row's key -> content hash."""

    name: str
    columns: tuple[str, ...]
    pk: tuple[str, ...]
    rowid: bool
    sql: str
    rows: dict[str, str]


@dataclass(frozen=True, slots=True)
class TablePlan:
    """What the rows strategy would do to one table of one database pair."""

    item: str
    table: str
    source: TableState
    target_count: int
    missing: tuple[str, ...]
    conflicts: tuple[str, ...]

    def keys_to_copy(self, overwrite: bool) -> tuple[str, ...]:
        """Missing keys, plus the conflicting ones when overwriting."""
        return self.missing + self.conflicts if overwrite else self.missing


def checksum(hashes: Iterable[str]) -> str:
    """Order-independent checksum of row hashes: their sum modulo 2**64, in hex."""
    return f"{sum(int(h, 16) for h in hashes) % (1 << 64):016x}"


async def inspect(
    db: RemoteSqlite,
    workdir: Path,
    tables: tuple[str, ...] = (),
    *,
    missing_ok: bool = False,
    on_progress: ProgressCallback | None = None,
) -> dict[str, TableState]:
    """Every row's key and hash of ``db`` (only ``tables`` if given)."""
    args: dict[str, Any] = {"missing_ok": missing_ok}
    if tables:
        args["tables"] = list(tables)
    answer = await db.call("inspect", **args)
    path = db.track(str(answer["path"]))
    local = workdir / f"inspect-{abs(hash((db.name, path)))}.json"

    def report(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(Progress("inspect", db.name, done, total, "bytes"))

    await db.fetch(path, local, report)
    try:
        data = json.loads(local.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MigrationError(f"{db.name}: inspection unreadable: {e}") from e
    return {
        name: TableState(
            name=name,
            columns=tuple(meta["columns"]),
            pk=tuple(meta["pk"]),
            rowid=bool(meta["rowid"]),
            sql=str(meta["sql"]),
            rows=dict(meta["rows"]),
        )
        for name, meta in data["tables"].items()
    }


def plan_tables(
    item_prefix: str, source: dict[str, TableState], target: dict[str, TableState]
) -> list[TablePlan]:
    """Missing and conflicting keys per source table."""
    plans = []
    for name, state in sorted(source.items()):
        other = target.get(name)
        theirs = other.rows if other is not None else {}
        missing = tuple(k for k in state.rows if k not in theirs)
        conflicts = tuple(k for k, h in state.rows.items() if k in theirs and theirs[k] != h)
        plans.append(
            TablePlan(f"{item_prefix} {name}", name, state, len(theirs), missing, conflicts)
        )
    return plans


class RowsMigration:
    """The rows strategy over pairs of (source, target) databases."""

    def __init__(
        self,
        pairs: list[tuple[RemoteSqlite, RemoteSqlite]],
        *,
        tables: tuple[str, ...] = (),
        overwrite: bool = False,
        row_delay: float = 0.0,
        on_progress: ProgressCallback,
    ) -> None:
        self.pairs = pairs
        self.tables = tables
        self.overwrite = overwrite
        self.row_delay = row_delay
        self.on_progress = on_progress
        self.source_states: list[dict[str, TableState]] = []
        """Each pair's source inspection, as the plan saw it (the mirror starts from it)."""

    async def plan(self, workdir: Path) -> list[tuple[RemoteSqlite, RemoteSqlite, list[TablePlan]]]:
        """Inspect every pair and compute what is missing (writes nothing)."""
        planned = []
        for source, target in self.pairs:
            src = await inspect(source, workdir, self.tables, on_progress=self.on_progress)
            dst = await inspect(target, workdir, missing_ok=True, on_progress=self.on_progress)
            self.source_states.append(src)
            planned.append((source, target, plan_tables(_prefix(source, target), src, dst)))
        return planned

    async def run(self, *, dry_run: bool) -> tuple[list[ItemResult], list[str]]:
        """Plan, and unless ``dry_run`` copy, apply and verify; returns items and problems."""
        items: list[ItemResult] = []
        problems: list[str] = []
        with tempfile.TemporaryDirectory(prefix="bgconsole-migrate-") as tmp:
            workdir = Path(tmp)
            try:
                for source, target, plans in await self.plan(workdir):
                    if dry_run:
                        items.extend(_planned(p) for p in plans)
                        continue
                    done, found = await self._copy(source, target, plans, workdir)
                    items.extend(done)
                    problems.extend(found)
            finally:
                for source, target in self.pairs:
                    await source.cleanup()
                    await target.cleanup()
        if dry_run:
            return items, problems
        conflicts = sum(i.conflicts for i in items)
        if conflicts and not self.overwrite:
            problems.append(
                f"{conflicts} row(s) differ between the colours and were left as they are on "
                "the target (see the conflicts; --overwrite takes the source's version)"
            )
        return items, problems

    async def _copy(
        self,
        source: RemoteSqlite,
        target: RemoteSqlite,
        plans: list[TablePlan],
        workdir: Path,
    ) -> tuple[list[ItemResult], list[str]]:
        request = {p.table: list(p.keys_to_copy(self.overwrite)) for p in plans}
        request = {table: keys for table, keys in request.items() if keys}
        if not request:
            return [_planned(p, verified=True, copied=0) for p in plans], []
        applied = await self._transfer_and_apply(source, target, request, plans, workdir)
        after = await inspect(target, workdir, tuple(request), on_progress=self.on_progress)
        return self._verify(plans, applied, after)

    async def _transfer_and_apply(
        self,
        source: RemoteSqlite,
        target: RemoteSqlite,
        request: dict[str, list[str]],
        plans: list[TablePlan],
        workdir: Path,
    ) -> dict[str, dict[str, Any]]:
        request_file = workdir / "request.json"
        request_file.write_text(json.dumps(request), encoding="utf-8")
        remote_request = await source.send(request_file)
        exported = await source.call("export", request=remote_request)
        rows_path = source.track(str(exported["path"]))
        local_rows = workdir / f"rows-{len(source.temp_files)}.jsonl"
        await source.fetch(rows_path, local_rows, self._bytes("export", source.name))
        remote_rows = await target.send(local_rows, self._bytes("transfer", target.name))
        by_table = {p.table: p for p in plans}
        applied: dict[str, dict[str, Any]] = {}

        def on_item(item: dict[str, Any]) -> None:
            if "progress" in item:
                plan = by_table.get(str(item["progress"]))
                name = plan.item if plan else str(item["progress"])
                self.on_progress(Progress("apply", name, int(item["done"]), int(item["total"])))
            elif "table" in item:
                applied[str(item["table"])] = item
                plan = by_table.get(str(item["table"]))
                if plan is not None:
                    total = len(request.get(plan.table, ()))
                    self.on_progress(Progress("apply", plan.item, total, total))

        await target.stream(
            "apply",
            on_item,
            rows=remote_rows,
            overwrite=self.overwrite,
            delay=self.row_delay,
        )
        return applied

    def _verify(
        self,
        plans: list[TablePlan],
        applied: dict[str, dict[str, Any]],
        after: dict[str, TableState],
    ) -> tuple[list[ItemResult], list[str]]:
        items: list[ItemResult] = []
        problems: list[str] = []
        for plan in plans:
            wanted = plan.keys_to_copy(self.overwrite)
            outcome = applied.get(plan.table, {})
            late_conflicts = int(outcome.get("conflicts", 0))
            now = after.get(plan.table)
            rows = now.rows if now is not None else {}
            # Keys that hit a row the application wrote since the plan are conflicts too
            # (the apply reported them); any other mismatch is a failed verification.
            mismatched = [k for k in wanted if rows.get(k) != plan.source.rows[k]]
            late = [str(s.get("key")) for s in outcome.get("sample", ())]
            unexplained = [k for k in mismatched if k not in late]
            verified = len(mismatched) <= late_conflicts
            if not verified:
                problems.append(
                    f"verification failed for {plan.item}: {len(unexplained)} migrated row(s) "
                    f"do not match the source (e.g. key {(unexplained or mismatched)[0]})"
                )
            conflicts = plan.conflicts if not self.overwrite else ()
            sample = [*conflicts[:_SAMPLE], *late[: max(0, _SAMPLE - len(conflicts))]]
            copied = int(outcome.get("inserted", 0))
            good = [k for k in wanted if k not in mismatched]
            items.append(
                ItemResult(
                    item=plan.item,
                    source_count=len(plan.source.rows),
                    target_count=plan.target_count,
                    missing=len(plan.missing),
                    conflicts=len(conflicts) + late_conflicts,
                    copied=copied,
                    verified=verified,
                    conflict_sample=tuple(sample),
                    checksum=checksum(plan.source.rows[k] for k in good),
                    note="table created on the target" if outcome.get("created") else "",
                )
            )
        return items, problems

    def _bytes(self, phase: str, item: str) -> Any:
        def report(done: int, total: int) -> None:
            self.on_progress(Progress(phase, item, done, total, "bytes"))

        return report


def _prefix(source: RemoteSqlite, target: RemoteSqlite) -> str:
    """How items name a database pair: by the target's ``host:path``."""
    return target.name


def _planned(plan: TablePlan, *, verified: bool | None = None, copied: int = 0) -> ItemResult:
    return ItemResult(
        item=plan.item,
        source_count=len(plan.source.rows),
        target_count=plan.target_count,
        missing=len(plan.missing),
        conflicts=len(plan.conflicts),
        copied=copied,
        verified=verified,
        conflict_sample=plan.conflicts[:_SAMPLE],
    )
