"""The ``redis`` strategy: copy keys matching patterns between the colours' data Redis.

SCAN MATCH on the source, DUMP + PTTL in pipelines, RESTORE on the target with the
remaining TTL (so an expiring job still expires on time). A key the target lacks is
copied; a key both have with a different value is a conflict, left alone unless
``overwrite`` (RESTORE ... REPLACE). Each pattern's RESTOREs go in one MULTI/EXEC, so an
interrupted run leaves a pattern's keys all copied or none. Verified by key count and
by comparing the DUMP of every copied key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from console.core.config import redact_url
from console.core.errors import BackendError
from console.core.migrate.plan import ItemResult, Progress, ProgressCallback

T = TypeVar("T")
_BATCH = 500
"""Keys per pipeline round trip."""
_SAMPLE = 5


class RedisKeysMigration:
    """Copy keys matching ``patterns`` from one Redis to another."""

    def __init__(
        self,
        source_url: str,
        target_url: str,
        patterns: tuple[str, ...],
        *,
        overwrite: bool = False,
        timeout: float = 10.0,
        on_progress: ProgressCallback,
    ) -> None:
        self.source_url = source_url
        self.target_url = target_url
        self.patterns = patterns
        self.overwrite = overwrite
        self.timeout = timeout
        self.on_progress = on_progress

    def _client(self, url: str) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )

    async def _call(self, url: str, awaitable: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout * 3):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as e:
            reason = str(e) or type(e).__name__
            raise BackendError(f"data Redis {redact_url(url)}: {reason}") from e

    async def run(self, *, dry_run: bool) -> tuple[list[ItemResult], list[str]]:
        """Plan (and unless ``dry_run``) copy and verify each pattern."""
        source = self._client(self.source_url)
        target = self._client(self.target_url)
        items: list[ItemResult] = []
        problems: list[str] = []
        try:
            for pattern in self.patterns:
                item, found = await self._pattern(source, target, pattern, dry_run)
                items.append(item)
                problems.extend(found)
        finally:
            await source.aclose()
            await target.aclose()
        conflicts = sum(i.conflicts for i in items)
        if conflicts and not dry_run and not self.overwrite:
            problems.append(
                f"{conflicts} key(s) differ between the colours and were left as they are "
                "on the target (--overwrite takes the source's version)"
            )
        return items, problems

    async def _scan(self, client: aioredis.Redis, url: str, pattern: str) -> list[bytes]:
        async def collect() -> list[bytes]:
            return [key async for key in client.scan_iter(match=pattern, count=_BATCH)]

        return sorted(await self._call(url, collect()))

    async def _dumps(self, client: aioredis.Redis, url: str, keys: list[bytes]) -> list[Any]:
        """[dump, pttl] per key, in pipelined batches."""
        out: list[Any] = []
        for start in range(0, len(keys), _BATCH):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + _BATCH]:
                pipe.dump(key)
                pipe.pttl(key)
            answers = await self._call(url, pipe.execute())
            out.extend(zip(answers[::2], answers[1::2], strict=True))
        return out

    async def _pattern(
        self, source: aioredis.Redis, target: aioredis.Redis, pattern: str, dry_run: bool
    ) -> tuple[ItemResult, list[str]]:
        keys = await self._scan(source, self.source_url, pattern)
        self.on_progress(Progress("inspect", pattern, 0, len(keys), "keys"))
        theirs = set(await self._scan(target, self.target_url, pattern))
        present = [k for k in keys if k in theirs]
        dumps = dict(zip(keys, await self._dumps(source, self.source_url, keys), strict=True))
        their_dumps = dict(
            zip(present, await self._dumps(target, self.target_url, present), strict=True)
        )
        missing = [k for k in keys if k not in theirs and dumps[k][0] is not None]
        conflicts = [k for k in present if their_dumps[k][0] != dumps[k][0]]
        wanted = missing + conflicts if self.overwrite else missing
        base = ItemResult(
            item=pattern,
            source_count=len(keys),
            target_count=len(theirs),
            missing=len(missing),
            conflicts=len(conflicts),
            conflict_sample=tuple(k.decode(errors="replace") for k in conflicts[:_SAMPLE]),
            note="redis keys",
        )
        if dry_run:
            return base, []
        copied = await self._restore(target, pattern, wanted, dumps)
        # Verify: every wanted key is there with the source's value.
        after = dict(zip(wanted, await self._dumps(target, self.target_url, wanted), strict=True))
        wrong = [k for k in wanted if after[k][0] != dumps[k][0]]
        problems = []
        if wrong:
            problems.append(
                f"verification failed for {pattern}: {len(wrong)} key(s) differ on the target "
                f"(e.g. {wrong[0].decode(errors='replace')})"
            )
        result = ItemResult(
            item=base.item,
            source_count=base.source_count,
            target_count=base.target_count,
            missing=base.missing,
            conflicts=0 if self.overwrite else base.conflicts,
            copied=copied,
            verified=not wrong,
            conflict_sample=() if self.overwrite else base.conflict_sample,
            note=base.note,
        )
        return result, problems

    async def _restore(
        self,
        target: aioredis.Redis,
        pattern: str,
        keys: list[bytes],
        dumps: dict[bytes, Any],
    ) -> int:
        """RESTORE ``keys`` in one MULTI/EXEC (all or none); returns how many took."""
        if not keys:
            self.on_progress(Progress("copy", pattern, 0, 0, "keys"))
            return 0
        pipe = target.pipeline(transaction=True)
        for key in keys:
            payload, pttl = dumps[key]
            # PTTL -1: no expiry (RESTORE takes 0); a key that expired since is skipped.
            ttl = max(int(pttl), 0)
            pipe.restore(key, ttl, payload, replace=self.overwrite)
        answers = await self._call(self.target_url, pipe.execute(raise_on_error=False))
        copied = sum(1 for a in answers if not isinstance(a, ResponseError | Exception))
        self.on_progress(Progress("copy", pattern, copied, len(keys), "keys"))
        return copied
