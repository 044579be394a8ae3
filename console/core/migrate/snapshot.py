"""The ``snapshot`` strategy: replace the target database with a consistent copy of the source.

Per database pair: the source makes a consistent copy with SQLite's backup API (safe
while the application writes), the copy travels source -> this machine -> target by
SFTP, and the target keeps its old database as ``<work_dir>/backups/<db>.bak-<time>-<run>``
(outside the application's checkout) before the new content goes in. The dry run says
how many rows only the target has: a snapshot drops them (they survive in the backup).
An existing target is restored in place with the backup API, one write
transaction, rather than renamed over: renaming a file under an application that has the
database open in WAL mode corrupts it. A target that does not exist yet is renamed into
place (atomic). The copy is checked (size, ``PRAGMA quick_check``) before it replaces
anything; the result is verified by ``PRAGMA integrity_check`` and equal row counts.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from console.core.migrate.plan import ItemResult, Progress, ProgressCallback
from console.core.migrate.remote import RemoteSqlite
from console.core.migrate.rows import inspect, plan_pair


class SnapshotMigration:
    """The snapshot strategy over pairs of (source, target) databases."""

    def __init__(
        self, pairs: list[tuple[RemoteSqlite, RemoteSqlite]], *, on_progress: ProgressCallback
    ) -> None:
        self.pairs = pairs
        self.on_progress = on_progress

    async def run(self, *, dry_run: bool) -> tuple[list[ItemResult], list[str], list[str]]:
        """Copy every pair (or only report, for a dry run); returns items, problems, backups."""
        items: list[ItemResult] = []
        problems: list[str] = []
        backups: list[str] = []
        with tempfile.TemporaryDirectory(prefix="bgconsole-migrate-") as tmp:
            for source, target in self.pairs:
                try:
                    if dry_run:
                        items.extend(await self._plan(source, target, Path(tmp)))
                        continue
                    done, found, backup = await self._copy(source, target)
                    items.extend(done)
                    problems.extend(found)
                    if backup:
                        backups.append(f"{target.host.name}:{backup}")
                except BaseException:
                    # Else the run's finish removes them (HostRun), in one command.
                    await asyncio.gather(source.cleanup(), target.cleanup())
                    raise
        return items, problems, backups

    async def _plan(
        self, source: RemoteSqlite, target: RemoteSqlite, workdir: Path
    ) -> list[ItemResult]:
        """What replacing the target loses: rows only it has, and its differing versions.

        Compared by row identity as the rows strategy does, so the count is exact.
        """
        src = await inspect(source, workdir, on_progress=self.on_progress)
        dst = await inspect(target, workdir, missing_ok=True, on_progress=self.on_progress)
        plans = {p.table: p for p in plan_pair(target.name, src, dst, overwrite=True)}
        items = []
        for name in sorted(set(src) | set(dst)):
            plan = plans.get(name)
            if plan is None:  # a table only the target has: all of it goes
                lost, differing = dst[name].count, 0
                source_count, target_count = 0, dst[name].count
                identity = dst[name].identity.describe()
            else:
                lost, differing = plan.only_on_target, len(plan.conflicts)
                source_count, target_count = plan.source_count, plan.target_count
                identity = plan.identity.describe()
            note = "would replace the table"
            if lost or differing:
                note += (
                    f"; drops {lost} row(s) only on the target and {differing} target "
                    "version(s) that differ (kept only in the backup)"
                )
            items.append(
                ItemResult(
                    item=f"{target.name} {name}",
                    source_count=source_count,
                    target_count=target_count,
                    missing=plan.missing if plan is not None else 0,
                    conflicts=differing,
                    note=note,
                    identity=identity,
                    only_on_target=lost,
                )
            )
        return items

    async def _copy(
        self, source: RemoteSqlite, target: RemoteSqlite
    ) -> tuple[list[ItemResult], list[str], str | None]:
        copy = await source.call("backup")
        remote_copy = source.track(str(copy["path"]))
        staged = target.new_file(PurePosixPath(remote_copy).name)
        relayed = source.relay(
            remote_copy, target, self._bytes("transfer", target.name), into=staged
        )
        installed: dict[str, Any] = {}

        def on_item(item: dict[str, Any]) -> None:
            if "counts" in item:
                installed.update(item)

        # The install starts while the copy travels and waits for it on the host.
        await target.then(relayed, "install", on_item, staged, new=staged, size=copy.get("size"))
        self.on_progress(Progress("install", target.name, 1, 1, "files"))
        expected: dict[str, int] = copy["counts"]
        got: dict[str, int] = installed["counts"]
        problems = []
        if installed.get("integrity") != "ok":
            problems.append(
                f"{target.name}: integrity_check after install: {installed['integrity']}"
            )
        differing = sorted(t for t in expected if got.get(t) != expected[t])
        if differing or set(got) != set(expected):
            problems.append(
                f"{target.name}: row counts differ from the snapshot after install "
                f"(tables {', '.join(differing) or 'set differs'})"
            )
        items = _items(target, expected, installed.get("before", {}), not problems, copied=got)
        return items, problems, installed.get("backup")

    def _bytes(self, phase: str, item: str) -> Any:
        def report(done: int, total: int) -> None:
            self.on_progress(Progress(phase, item, done, total, "bytes"))

        return report


def _items(
    target: RemoteSqlite,
    source_counts: dict[str, int],
    target_counts: dict[str, int],
    verified: bool | None,
    copied: dict[str, int] | None = None,
) -> list[ItemResult]:
    return [
        ItemResult(
            item=f"{target.name} {table}",
            source_count=count,
            target_count=target_counts.get(table, 0),
            missing=count,
            copied=(copied or {}).get(table, 0),
            verified=verified,
            note="whole database replaced" if copied is not None else "would replace",
        )
        for table, count in sorted(source_counts.items())
    ]
