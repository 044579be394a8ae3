"""The ``rows`` strategy: copy the rows the target lacks, by row identity, then verify.

The flow per database pair:

1. inspect both sides (every row's identity and a content hash, one read transaction);
2. plan (tables.py): rows to insert, conflicts, rows only on the target, and the target
   table's promised content; a dry run stops here and shows exactly this plan;
3. export the planned rows on the source, SFTP them over, apply on the target in short
   transactions (``[migrate] slice`` seconds of write lock each, so the live app's
   writers wait at most that long). Conflicts are never resolved by deleting: a plain
   INSERT or UPDATE that hits a constraint is refused and reported, and ``--overwrite``
   UPDATEs the conflicting row by its identity; no other row is touched;
4. verify the whole table: the target's row count and order-independent digest must
   equal what the plan promised (less the rows the target refused, which are reported).

Killed midway, each committed slice stays and the run's journal on the host says how
far it got; running again copies what is still missing, each row exactly once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from console.core.migrate.plan import ItemResult, Progress, ProgressCallback
from console.core.migrate.remote import MigrationError, RemoteSqlite
from console.core.migrate.tables import (
    SAMPLE,
    TablePlan,
    TableState,
    checksum,
    digest,
    plan_table,
    state_from,
)

__all__ = ["PairPlan", "RowsMigration", "checksum", "inspect", "plan_pair"]


@dataclass(frozen=True, slots=True)
class PairPlan:
    """The plan for one (source, target) database pair."""

    source: str
    target: str
    tables: tuple[TablePlan, ...]


async def inspect(
    db: RemoteSqlite,
    workdir: Path,
    tables: tuple[str, ...] = (),
    *,
    missing_ok: bool = False,
    on_progress: ProgressCallback | None = None,
) -> dict[str, TableState]:
    """Every row's identity and hash of ``db`` (only ``tables`` if given)."""
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
    finally:
        local.unlink(missing_ok=True)
    top = data.get("changes_top")
    db.changes_top = int(top) if top is not None else None
    return {name: state_from(name, meta) for name, meta in data["tables"].items()}


def plan_pair(
    target_name: str,
    source: dict[str, TableState],
    target: dict[str, TableState],
    *,
    overwrite: bool,
) -> tuple[TablePlan, ...]:
    """One plan per source table, by the source's row identity."""
    return tuple(
        plan_table(f"{target_name} {name}", state, target.get(name), overwrite=overwrite)
        for name, state in sorted(source.items())
    )


@dataclass
class _Applied:
    """What the host reported for one table."""

    inserted: int = 0
    updated: int = 0
    created: bool = False
    changed: tuple[str, ...] = ()
    refused: dict[str, str] | None = None
    refusal_reasons: tuple[str, ...] = ()
    vanished: tuple[str, ...] = ()
    longest_lock: float = 0.0


class RowsMigration:
    """The rows strategy over pairs of (source, target) databases."""

    def __init__(
        self,
        pairs: list[tuple[RemoteSqlite, RemoteSqlite]],
        *,
        tables: tuple[str, ...] = (),
        overwrite: bool = False,
        row_delay: float = 0.0,
        slice_seconds: float = 0.05,
        on_progress: ProgressCallback,
    ) -> None:
        self.pairs = pairs
        self.tables = tables
        self.overwrite = overwrite
        self.row_delay = row_delay
        self.slice_seconds = slice_seconds
        self.on_progress = on_progress
        self.source_states: list[dict[str, TableState]] = []
        """Each pair's source inspection, as the plan saw it (the mirror starts from it)."""

    async def plan(self, workdir: Path) -> list[PairPlan]:
        """Inspect every pair and compute exactly what a run would do (writes nothing)."""
        planned = []
        self.source_states = []
        for source, target in self.pairs:
            # Both sides at once: they are read-only and usually on different hosts.
            src, dst = await asyncio.gather(
                inspect(source, workdir, self.tables, on_progress=self.on_progress),
                inspect(target, workdir, missing_ok=True, on_progress=self.on_progress),
            )
            self.source_states.append(src)
            tables = plan_pair(target.name, src, dst, overwrite=self.overwrite)
            planned.append(PairPlan(source.name, target.name, tables))
        return planned

    async def execute(
        self, plans: list[PairPlan], workdir: Path
    ) -> tuple[list[ItemResult], list[str]]:
        """Carry out ``plans`` (from :meth:`plan`) and verify every table against them."""
        items: list[ItemResult] = []
        problems: list[str] = []
        for (source, target), pair in zip(self.pairs, plans, strict=True):
            done, found = await self._copy(source, target, pair.tables, workdir)
            items.extend(done)
            problems.extend(found)
        conflicts = sum(i.conflicts for i in items)
        if conflicts:
            problems.append(
                f"{conflicts} row(s) differ between the colours and were left as they are on "
                "the target (see the conflicts; --overwrite updates them to the source's "
                "version, where no other row's constraint stands in the way)"
            )
        return items, problems

    async def _copy(
        self,
        source: RemoteSqlite,
        target: RemoteSqlite,
        plans: tuple[TablePlan, ...],
        workdir: Path,
    ) -> tuple[list[ItemResult], list[str]]:
        request = {p.table: p.request() for p in plans if p.insert or p.update}
        applied: dict[str, _Applied] = {}
        names = [p.table for p in plans]
        found: dict[str, Any] = {}
        if request:
            applied, found = await self._transfer_and_apply(
                source, target, request, plans, workdir, names
            )
        self.on_progress(Progress("verify", target.name, 0, len(plans), "tables"))
        if "tables" not in found:  # nothing applied: the digest is a command of its own
            found = await target.call("digest", tables=names)
        after = {
            str(name): (int(meta["count"]), str(meta["digest"]))
            for name, meta in found["tables"].items()
        }
        self.on_progress(Progress("verify", target.name, len(plans), len(plans), "tables"))
        return self._verify(plans, applied, after)

    async def _transfer_and_apply(
        self,
        source: RemoteSqlite,
        target: RemoteSqlite,
        request: dict[str, dict[str, Any]],
        plans: tuple[TablePlan, ...],
        workdir: Path,
        verify: list[str],
    ) -> tuple[dict[str, _Applied], dict[str, Any]]:
        """Export, move and apply the rows; the apply ends with the digest of the
        ``verify`` tables, read after its last commit (returned as the digest command's
        answer)."""
        request_file = workdir / "request.json"
        request_file.write_text(json.dumps(request), encoding="utf-8")
        remote_request = await source.send(request_file)
        wanted = sum(p.missing + len(p.update) for p in plans if p.table in request)
        self.on_progress(Progress("export", source.name, 0, wanted))
        exported = await source.call("export", request=remote_request)
        self.on_progress(Progress("export", source.name, int(exported["rows"]), wanted))
        rows_path = source.track(str(exported["path"]))
        remote_rows = target.new_file(PurePosixPath(rows_path).name)
        relayed = source.relay(
            rows_path, target, self._bytes("transfer", target.name), into=remote_rows
        )
        by_table = {p.table: p for p in plans}
        applied: dict[str, _Applied] = {}
        refused: dict[str, dict[str, str]] = {}
        reasons: dict[str, list[str]] = {}
        changed: dict[str, list[str]] = {}
        vanished: dict[str, list[str]] = {}
        digest: dict[str, Any] = {}

        def on_item(item: dict[str, Any]) -> None:
            if "digest" in item:
                digest["tables"] = item["digest"]
            elif "progress" in item:
                plan = by_table.get(str(item["progress"]))
                name = plan.item if plan else str(item["progress"])
                self.on_progress(Progress("apply", name, int(item["done"]), int(item["total"])))
            elif "refused" in item:
                table = str(item["refused"])
                refused.setdefault(table, {})[str(item["key"])] = str(item["hash"])
                if len(reasons.setdefault(table, [])) < SAMPLE:
                    reasons[table].append(f"{item['key']}: {item['error']}")
            elif "changed" in item:
                changed.setdefault(str(item["changed"]), []).append(str(item["key"]))
            elif "vanished" in item:
                vanished.setdefault(str(item["vanished"]), []).append(str(item["key"]))
            elif "table" in item:
                table = str(item["table"])
                applied[table] = _Applied(
                    inserted=int(item["inserted"]),
                    updated=int(item["updated"]),
                    created=bool(item["created"]),
                    changed=tuple(changed.get(table, ())),
                    refused=refused.get(table, {}),
                    refusal_reasons=tuple(reasons.get(table, ())),
                    vanished=tuple(vanished.get(table, ())),
                    longest_lock=float(item.get("longest", 0.0)),
                )
                plan = by_table.get(table)
                if plan is not None:
                    total = len(request.get(plan.table, {}).get("update", ())) + plan.missing
                    self.on_progress(Progress("apply", plan.item, total, total))

        await target.then(
            relayed,
            "apply",
            on_item,
            remote_rows,
            rows=remote_rows,
            slice=self.slice_seconds,
            delay=self.row_delay,
            digest=verify,
        )
        return applied, digest

    def _verify(
        self,
        plans: tuple[TablePlan, ...],
        applied: dict[str, _Applied],
        after: dict[str, tuple[int, str]],
    ) -> tuple[list[ItemResult], list[str]]:
        items: list[ItemResult] = []
        problems: list[str] = []
        for plan in plans:
            outcome = applied.get(plan.table, _Applied())
            refused = outcome.refused or {}
            expected = plan.allowing(refused, outcome.vanished)
            kind = plan.identity.kind
            want_count = _count(kind, expected)
            want_digest = digest(kind, expected)
            got_count, got_digest = after.get(plan.table, (0, digest(kind, {})))
            verified = (want_count, want_digest) == (got_count, got_digest)
            if not verified:
                problems.append(
                    f"verification failed for {plan.item}: expected {want_count} row(s) "
                    f"(digest {want_digest}), found {got_count} (digest {got_digest}); the "
                    "table changed during the run, or the apply was incomplete"
                )
            refusals = [k for k in refused if k not in plan.update]
            unresolved = plan.conflicts if not self.overwrite else ()
            failed_updates = [k for k in refused if k in plan.update]
            conflicts = len(unresolved) + len(refusals) + len(failed_updates)
            sample = [*unresolved, *refusals, *failed_updates][:SAMPLE]
            notes = [*plan.warnings, *outcome.refusal_reasons]
            if outcome.created:
                notes.insert(0, "table created on the target")
            if outcome.vanished:
                notes.append(f"{len(outcome.vanished)} row(s) deleted on the target meanwhile")
            items.append(
                ItemResult(
                    item=plan.item,
                    source_count=plan.source_count,
                    target_count=plan.target_count,
                    missing=plan.missing,
                    conflicts=conflicts,
                    copied=outcome.inserted,
                    verified=verified,
                    conflict_sample=tuple(sample),
                    checksum=got_digest,
                    note="; ".join(notes),
                    identity=plan.identity.describe(),
                    only_on_target=plan.only_on_target,
                    updated=outcome.updated,
                    changed=outcome.changed,
                    expected=f"{want_count} rows, digest {want_digest}",
                    longest_lock=outcome.longest_lock,
                )
            )
        return items, problems

    def _bytes(self, phase: str, item: str) -> Any:
        def report(done: int, total: int) -> None:
            self.on_progress(Progress(phase, item, done, total, "bytes"))

        return report


def _count(kind: str, rows: dict[str, Any]) -> int:
    if kind == "row":
        return sum(int(n) for n in rows.values())
    return len(rows)


def planned_item(plan: TablePlan) -> ItemResult:
    """A dry run's row for one table: exactly what the run would do."""
    return ItemResult(
        item=plan.item,
        source_count=plan.source_count,
        target_count=plan.target_count,
        missing=plan.missing,
        conflicts=len(plan.conflicts),
        conflict_sample=plan.conflicts[:SAMPLE],
        checksum=plan.expected_digest(),
        note="; ".join(plan.warnings),
        identity=plan.identity.describe(),
        only_on_target=plan.only_on_target,
        updated=len(plan.update),
        expected=f"{plan.expected_count} rows, digest {plan.expected_digest()}",
    )
