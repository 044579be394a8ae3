"""MigrationRunner: one migration under the control-plane lock, with events and verification."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from console.core.config import Config, EnvConfig
from console.core.control import ControlPlane
from console.core.errors import ConfigError, ConsoleError, UsageError
from console.core.locks import HeldLock
from console.core.migrate import capture
from console.core.migrate.hostrun import HostRun
from console.core.migrate.mirror import Mirror, MirrorStatus, StatusCallback, initial_marks
from console.core.migrate.plan import (
    LOCK_NAME,
    ItemResult,
    MigrationRequest,
    MigrationResult,
    ProgressCallback,
    no_progress,
)
from console.core.migrate.redis_keys import RedisKeysMigration
from console.core.migrate.remote import RemoteSqlite, new_run_id
from console.core.migrate.rows import RowsMigration, planned_item
from console.core.migrate.snapshot import SnapshotMigration
from console.core.migrate.tables import TablePlan
from console.core.models import Colour
from console.core.ssh import SshPool

LOCK_TTL = 60.0
"""Seconds the migrate lock lasts without renewal (a crashed console frees it by then)."""
LOCK_RENEW_EVERY = 15.0


class MigrationRunner:
    """Runs migrations between the colours of one configuration.

    Every run (dry runs too, so a plan is not computed against data being rewritten)
    holds the control-plane lock ``migrate``; real runs record a ``migrate`` event when
    they start and when they end (ok, failed with the reason, or cancelled).
    """

    def __init__(
        self,
        config: Config,
        control: ControlPlane,
        pool: SshPool,
        *,
        lock_ttl: float = LOCK_TTL,
        lock_renew_every: float = LOCK_RENEW_EVERY,
    ) -> None:
        self.config = config
        self.control = control
        self.pool = pool
        self.lock_ttl = lock_ttl
        self.lock_renew_every = lock_renew_every

    # -- what goes where -------------------------------------------------------------------

    def database_pairs(
        self, source: Colour, target: Colour, run: str = ""
    ) -> list[tuple[RemoteSqlite, RemoteSqlite]]:
        """(source db, target db) pairs: hosts matched in order, then their sqlite paths.

        Raises:
            ConfigError: no databases configured, or the two colours' layouts differ.
        """
        src_env, dst_env = self.config.env(source), self.config.env(target)
        src_hosts = [h for h in src_env.hosts if h.data.sqlite]
        dst_hosts = [h for h in dst_env.hosts if h.data.sqlite]
        if not src_hosts:
            raise ConfigError(
                f"env.{source}: no SQLite databases to migrate (set data.sqlite = [PATH, ...])"
            )
        if len(src_hosts) != len(dst_hosts):
            raise ConfigError(
                f"env.{source} has {len(src_hosts)} host(s) with data.sqlite but env.{target} "
                f"has {len(dst_hosts)}; hosts are paired in order, so the counts must match"
            )
        timeout = self.config.ssh.command_timeout
        tag = self.config.console.name
        run = run or new_run_id()
        work_dir = self.config.migrate.work_dir
        pairs = []
        for src_host, dst_host in zip(src_hosts, dst_hosts, strict=True):
            if len(src_host.data.sqlite) != len(dst_host.data.sqlite):
                raise ConfigError(
                    f"hosts {src_host.name} ({source}) and {dst_host.name} ({target}) list "
                    "different numbers of data.sqlite paths; they are paired in order"
                )
            for src_db, dst_db in zip(src_host.data.sqlite, dst_host.data.sqlite, strict=True):
                pairs.append(
                    (
                        RemoteSqlite(
                            self.pool, src_host, src_db, timeout, tag, run=run, work_dir=work_dir
                        ),
                        RemoteSqlite(
                            self.pool, dst_host, dst_db, timeout, tag, run=run, work_dir=work_dir
                        ),
                    )
                )
        return pairs

    def redis_endpoints(self, source: Colour, target: Colour) -> tuple[str, str, tuple[str, ...]]:
        """(source URL, target URL, patterns) of the data Redis of each colour.

        Raises:
            ConfigError: a colour has no data Redis, or no key patterns are configured.
        """
        patterns: list[str] = []
        for host in self.config.env(source).hosts:
            patterns.extend(p for p in host.data.redis_keys if p not in patterns)
        if not patterns:
            raise ConfigError(
                f"env.{source}: no Redis key patterns to migrate (set data.redis_keys)"
            )
        return (
            _data_redis(self.config.env(source)),
            _data_redis(self.config.env(target)),
            tuple(patterns),
        )

    # -- running ---------------------------------------------------------------------------

    def _check(self, request: MigrationRequest) -> None:
        if request.source == request.target:
            raise UsageError(f"--from and --to are both {request.source}; pick two colours")
        if request.strategy in ("snapshot", "redis") and request.tables:
            raise UsageError(f"--table does not apply to the {request.strategy} strategy")
        if request.whole_tables and request.strategy != "rows":
            raise UsageError("--whole-tables applies to the rows strategy only")
        if request.strategy == "snapshot" and request.overwrite:
            raise UsageError("--overwrite does not apply to snapshot: it replaces the whole file")

    async def _refuse_live(self, request: MigrationRequest) -> None:
        if request.dry_run or request.live_ok:
            return
        active = await self.control.active()
        if active is not None and active.colour == request.target:
            raise UsageError(
                f"{request.target} is live: the application is writing to its data; "
                "pass --yes to migrate into it anyway (or migrate into the stand-by)"
            )

    def _locked(self, purpose: str) -> contextlib.AbstractAsyncContextManager[HeldLock]:
        return self.control.holding(
            LOCK_NAME, purpose, ttl=self.lock_ttl, renew_every=self.lock_renew_every
        )

    async def migrate(
        self, request: MigrationRequest, on_progress: ProgressCallback = no_progress
    ) -> MigrationResult:
        """Run (or, with ``dry_run``, only plan) one migration.

        Returns the result; failures found by verification or conflicts left behind are
        in ``result.problems`` (the event records them too).

        Raises:
            UsageError: a nonsensical request, or the target is live without ``live_ok``.
            ConfigError: the colours' data are not configured for this strategy.
            LockHeld: another migration runs (the message names its holder).
            BackendError: a host or Redis failed mid-way (the target is unchanged or each
                table fully migrated; running again finishes the job).
        """
        self._check(request)
        if request.strategy == "mirror":
            raise UsageError("mirror runs until stopped: use MigrationRunner.mirror()")
        await self._refuse_live(request)
        purpose = _purpose(request)
        started = time.monotonic()
        run = new_run_id()
        async with self._locked(purpose):
            if not request.dry_run:
                await self._record(request, f"{purpose} started", "started", run=run)
            try:
                result = await self._execute(request, on_progress, run)
            except asyncio.CancelledError:
                if not request.dry_run:
                    with contextlib.suppress(ConsoleError):
                        await self._record(request, f"{purpose} cancelled", "cancelled", run=run)
                raise
            except ConsoleError as e:
                if not request.dry_run:
                    with contextlib.suppress(ConsoleError):
                        await self._record(
                            request, f"{purpose} failed", "failed", reason=str(e), run=run
                        )
                raise
            result = replace(result, duration=time.monotonic() - started, run=run)
            if not request.dry_run:
                await self._record_result(request, result)
            return result

    async def _report_dead(self, request: MigrationRequest, hold: HostRun) -> tuple[str, ...]:
        """Record what interrupted runs had really committed (their journals), once."""
        found = tuple(dead.describe() for dead in hold.dead)
        for text in found:
            with contextlib.suppress(ConsoleError):
                await self.control.record(
                    "migrate",
                    f"interrupted migration found: {text}",
                    before=request.source.value,
                    after=request.target.value,
                    outcome="interrupted",
                    details={"strategy": request.strategy, "found_by": "next run"},
                )
        return found

    async def _execute(
        self, request: MigrationRequest, on_progress: ProgressCallback, run: str
    ) -> MigrationResult:
        items: list[ItemResult]
        backups: list[str] = []
        plans: tuple[TablePlan, ...] = ()
        previous: tuple[str, ...] = ()
        if request.strategy in ("rows", "snapshot"):
            pairs = self.database_pairs(request.source, request.target, run)
            hold = HostRun([r for pair in pairs for r in pair])
            async with hold.held(sweep=not request.dry_run):
                if not request.dry_run:
                    previous = await self._report_dead(request, hold)
                if request.strategy == "rows":
                    items, problems, plans = await self._rows(request, pairs, on_progress)
                else:
                    snap = SnapshotMigration(pairs, on_progress=on_progress)
                    items, problems, backups = await snap.run(dry_run=request.dry_run)
        else:
            src_url, dst_url, patterns = self.redis_endpoints(request.source, request.target)
            keys = RedisKeysMigration(
                src_url,
                dst_url,
                patterns,
                overwrite=request.overwrite,
                timeout=self.config.control.timeout * 5,
                on_progress=on_progress,
            )
            items, problems = await keys.run(dry_run=request.dry_run)
        return MigrationResult(
            request.strategy,
            request.source,
            request.target,
            request.dry_run,
            tuple(items),
            problems=tuple(problems),
            backups=tuple(backups),
            plans=plans,
            run=run,
            previous=previous,
        )

    async def _rows(
        self,
        request: MigrationRequest,
        pairs: list[tuple[RemoteSqlite, RemoteSqlite]],
        on_progress: ProgressCallback,
        rows: RowsMigration | None = None,
    ) -> tuple[list[ItemResult], list[str], tuple[TablePlan, ...]]:
        """Plan; a dry run returns the plan, a run executes exactly that plan.

        Transfer files stay on the hosts until the run's finish removes them (HostRun: one
        command per host rather than one more per database); a failed run removes them
        now."""
        rows = rows or self._rows_migration(request, pairs, on_progress)
        with tempfile.TemporaryDirectory(prefix="bgconsole-migrate-") as tmp:
            try:
                planned = await rows.plan(Path(tmp))
                plans = tuple(t for pair in planned for t in pair.tables)
                if request.dry_run:
                    return [planned_item(p) for p in plans], [], plans
                items, problems = await rows.execute(planned, Path(tmp))
                return items, problems, plans
            except BaseException:
                await asyncio.gather(*(db.cleanup() for pair in pairs for db in pair))
                raise

    def _rows_migration(
        self,
        request: MigrationRequest,
        pairs: list[tuple[RemoteSqlite, RemoteSqlite]],
        on_progress: ProgressCallback,
    ) -> RowsMigration:
        return RowsMigration(
            pairs,
            tables=request.tables,
            overwrite=request.overwrite,
            row_delay=request.row_delay,
            # 0: no slicing; each table commits once, whole (--whole-tables).
            slice_seconds=0.0 if request.whole_tables else self.config.migrate.slice,
            on_progress=on_progress,
        )

    async def mirror(
        self,
        request: MigrationRequest,
        on_status: StatusCallback,
        stop: asyncio.Event,
        *,
        interval: float = 1.0,
        on_progress: ProgressCallback = no_progress,
    ) -> tuple[MigrationResult, MirrorStatus]:
        """Catch up with a rows migration, then mirror until ``stop`` is set: captured
        changes (inserts, updates, deletes) when ``mirror_setup`` installed change capture,
        else appended rows. A mirror resumed over change capture skips the catch-up.

        Returns the catch-up's result and the mirror's last status. Raises as
        :meth:`migrate` does; a cycle that fails mid-mirror is reported through
        ``on_status`` and retried.
        """
        self._check(request)
        if request.dry_run:
            return await self.migrate(replace(request, strategy="rows")), MirrorStatus(0, 0, 0, 0)
        await self._refuse_live(request)
        purpose = _purpose(request)
        status = MirrorStatus(0, 0, 0, 0.0)
        run = new_run_id()
        async with self._locked(purpose):
            await self._record(request, f"{purpose} started", "started", run=run)
            try:
                pairs = self.database_pairs(request.source, request.target, run)
                hold = HostRun([r for pair in pairs for r in pair])
                async with hold.held(sweep=True):
                    previous = await self._report_dead(request, hold)
                    catch_up, status = await self._mirror_held(
                        request, pairs, on_status, stop, interval, on_progress
                    )
                    catch_up = replace(catch_up, run=run, previous=previous)
            except asyncio.CancelledError:
                with contextlib.suppress(ConsoleError):
                    await self._record(request, f"{purpose} cancelled", "cancelled")
                raise
            except ConsoleError as e:
                with contextlib.suppress(ConsoleError):
                    await self._record(request, f"{purpose} failed", "failed", reason=str(e))
                raise
            await self.control.record(
                "migrate",
                f"{purpose} stopped: {catch_up.copied + status.copied} row(s) copied",
                before=request.source.value,
                after=request.target.value,
                reason=request.reason,
                outcome="ok" if catch_up.ok else "failed",
                details={
                    "strategy": "mirror",
                    "catch_up_copied": str(catch_up.copied),
                    "mirrored": str(status.copied),
                    "cycles": str(status.cycles),
                    "conflicts": str(catch_up.conflicts + status.conflicts),
                },
            )
            return catch_up, status

    async def _mirror_held(
        self,
        request: MigrationRequest,
        pairs: list[tuple[RemoteSqlite, RemoteSqlite]],
        on_status: StatusCallback,
        stop: asyncio.Event,
        interval: float,
        on_progress: ProgressCallback,
    ) -> tuple[MigrationResult, MirrorStatus]:
        """Change capture when set up (inserts, updates, deletes), else appends only."""
        capturing = all([await capture.captured(source) for source, _ in pairs])
        cursors = [
            int((await t.call("cursor", source=capture.source_id(s))).get("seq", 0))
            for s, t in pairs
        ]
        empty = MigrationResult("rows", request.source, request.target, False, ())
        if capturing and all(cursors):
            # Resuming: the change log since each target's cursor is the whole story; a
            # catch-up now would copy rows whose insert is still in the log.
            changes = capture.ChangeMirror(
                pairs, slice_seconds=self.config.migrate.slice, interval=interval,
                on_progress=on_progress,
            )  # fmt: skip
            return empty, await changes.run(on_status, stop)
        rows = self._rows_migration(replace(request, overwrite=False), pairs, on_progress)
        items, problems, plans = await self._rows(request, pairs, on_progress, rows)
        catch_up = MigrationResult(
            "rows", request.source, request.target, False, tuple(items), 0.0,
            tuple(problems), plans=plans,
        )  # fmt: skip
        if capturing:
            # The catch-up copied the state at its inspection; the changes after the log
            # position of that same read transaction follow.
            for source, target in pairs:
                await target.call(
                    "set_cursor", source=capture.source_id(source), seq=source.changes_top or 0
                )
            changes = capture.ChangeMirror(
                pairs, slice_seconds=self.config.migrate.slice, interval=interval,
                on_progress=on_progress,
            )  # fmt: skip
            return catch_up, await changes.run(on_status, stop)
        # Marks from the catch-up's own inspection (rowids, as the tail compares): rows
        # written since are above them.
        mirrored = [
            (source, target, initial_marks(states))
            for (source, target), states in zip(pairs, rows.source_states, strict=True)
        ]
        mirror = Mirror(
            mirrored, interval=interval, slice_seconds=self.config.migrate.slice,
            on_progress=on_progress,
        )  # fmt: skip
        return catch_up, await mirror.run(on_status, stop)

    async def mirror_setup(self, request: MigrationRequest, *, teardown: bool = False) -> int:
        """Install (or remove) change capture for ``mirror``; idempotent. Returns how many
        tables were covered (or objects removed). Holds the migrate lock; recorded."""
        self._check(request)
        what = "teardown" if teardown else "setup"
        purpose = f"migrate mirror {what} {request.source} -> {request.target}"
        async with self._locked(purpose):
            pairs = self.database_pairs(request.source, request.target)
            if teardown:
                count = await capture.teardown(pairs)
                await self.control.set_mirror(None, None)
            else:
                count = await capture.setup(pairs, request.tables)
                await self.control.set_mirror(request.source, request.target)
            await self.control.record(
                "migrate",
                f"{purpose}: {count} {'object(s) removed' if teardown else 'table(s) captured'}",
                before=request.source.value,
                after=request.target.value,
                reason=request.reason,
                outcome="ok",
                details={"strategy": "mirror", "action": what},
            )
            return count

    async def mirror_lag(self, source: Colour, target: Colour) -> capture.MirrorLag:
        """Changes captured on ``source`` that ``target`` has not applied, and the oldest's
        age: the hook for ``status``, the console and the switch's go/no-go (read-only, no
        lock). Raises ConsoleError when a host cannot be read."""
        return await capture.mirror_lag(self.database_pairs(source, target))

    async def _record(
        self,
        request: MigrationRequest,
        summary: str,
        outcome: str,
        *,
        reason: str = "",
        run: str = "",
    ) -> None:
        await self.control.record(
            "migrate",
            summary,
            before=request.source.value,
            after=request.target.value,
            reason=reason or request.reason,
            outcome=outcome,
            details={
                "strategy": request.strategy,
                "tables": ",".join(request.tables),
                "run": run,
            },
        )

    async def _record_result(self, request: MigrationRequest, result: MigrationResult) -> None:
        purpose = _purpose(request)
        outcome = "ok" if result.ok else "failed"
        summary = f"{purpose}: {outcome}; {result.copied} copied, {result.conflicts} conflicting"
        await self.control.record(
            "migrate",
            summary,
            before=request.source.value,
            after=request.target.value,
            reason=result.problems[0] if result.problems else request.reason,
            outcome=outcome,
            details={
                "strategy": request.strategy,
                "copied": str(result.copied),
                "missing": str(result.missing),
                "conflicts": str(result.conflicts),
                "items": str(len(result.items)),
                "duration": f"{result.duration:.1f}",
                "backups": ",".join(result.backups),
                "run": result.run,
                "updated": str(sum(item.updated for item in result.items)),
                "only_on_target": str(result.only_on_target),
                "unverified": ",".join(i.item for i in result.items if i.verified is False),
            },
        )


def _purpose(request: MigrationRequest) -> str:
    return f"migrate {request.strategy} {request.source} -> {request.target}"


def _data_redis(env: EnvConfig) -> str:
    for host in env.hosts:
        if host.data.redis:
            return host.data.redis
    if env.flags_redis:
        return env.flags_redis
    raise ConfigError(
        f"env.{env.colour}: no data Redis (set data.redis, or flags_redis which it defaults to)"
    )
