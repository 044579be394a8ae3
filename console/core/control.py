"""The control plane in Redis: active colour with epochs, events, notifications, locks, agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from console.core.actor import current_actor
from console.core.config import ControlConfig, redact_url
from console.core.errors import (
    ConflictError,
    ConsoleError,
    ControlPlaneUnavailable,
    LockHeld,
    SwitchOutcomeUnknown,
)
from console.core.locks import HeldLock
from console.core.models import ActiveState, AgentHeartbeat, Colour, Event, LockInfo

T = TypeVar("T")

# Compare-and-set of the active colour on its epoch, atomically in Redis, so two
# operators flipping at once cannot both win: the loser sees the epoch has moved on.
_SWITCH_LUA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local colour = redis.call('HGET', KEYS[1], 'colour') or ''
local deadline = tonumber(ARGV[7])
if deadline > 0 and now_ms > deadline then
  return {-1, current, colour, now_ms}
end
if current ~= tonumber(ARGV[1]) then
  return {0, current, colour, now_ms}
end
local epoch = current + 1
redis.call('HSET', KEYS[1], 'colour', ARGV[2], 'epoch', epoch,
           'updated_at', string.format('%.3f', now_ms / 1000),
           'actor', ARGV[3], 'reason', ARGV[4], 'kind', ARGV[5], 'switch_id', ARGV[6])
if current == 0 then
  -- A first colour ever set arms failover unless someone chose otherwise already.
  redis.call('SET', KEYS[2], '1', 'NX')
end
return {1, epoch, colour, now_ms}
"""

# Re-seed after the control plane lost its data: only when the active state is missing
# or its epoch is not above what an agent has already seen (``floor``). The colour that is
# there is kept (whoever set it read the router too); only the epoch is lifted, so epochs
# never go backwards for anyone who watched them.
_SEED_LUA = """
local t = redis.call('TIME')
local now = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local floor = tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local colour = redis.call('HGET', KEYS[1], 'colour')
if colour and current > floor then
  return {0, current, colour}
end
local created = 0
if not colour then
  colour = ARGV[1]
  created = 1
end
redis.call('HSET', KEYS[1], 'colour', colour, 'epoch', floor + 1, 'updated_at', now,
           'actor', ARGV[3], 'reason', ARGV[4], 'kind', 'reseed', 'switch_id', '')
return {1, floor + 1, colour, created}
"""

# Release or renew a lock only if we still hold it (the token matches).
_RELEASE_LUA = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RENEW_LUA = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[3])
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# A lock is a hash (holder, purpose, since, token) so the holder can be shown; created
# only when absent, which is SET NX for a hash.
_ACQUIRE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'holder', ARGV[2], 'purpose', ARGV[3],
           'since', ARGV[4], 'expires_at', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""


# Leadership: extend our own lease, or take a free one; never touch someone else's.
_CLAIM_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE_LEADER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Notification:
    """A message on the control plane's pub/sub channel."""

    kind: str
    """switch, failover, flag, deploy, migrate, lock, armed, event."""
    data: dict[str, Any]


class ControlPlane:
    """Client of the shared control-plane Redis for one application.

    Every call is bounded by ``timeout``; a Redis that is down, refusing or slow raises
    :class:`ControlPlaneUnavailable`, never hangs.
    """

    def __init__(
        self,
        url: str,
        app: str,
        *,
        timeout: float = 2.0,
        events_max: int = 10_000,
        actor: str | None = None,
        sentinels: tuple[tuple[str, int], ...] = (),
        master_name: str = "",
        sentinel_password: str | None = None,
    ) -> None:
        self.url = url if not sentinels else _sentinel_label(sentinels, master_name)
        self.app = app
        self.timeout = timeout
        self.events_max = events_max
        self.actor = actor or current_actor()
        self.prefix = f"bg:{app}:"
        self.sentinels = tuple(sentinels)
        self.master_name = master_name
        self._sentinel = (
            _sentinel(self.sentinels, timeout, sentinel_password) if self.sentinels else None
        )
        self._redis: aioredis.Redis = _client(url, timeout, self._sentinel, master_name)
        self._clock_offset: float | None = None
        self._clock_read_at = 0.0

    @classmethod
    def from_config(
        cls, control: ControlConfig, app: str, actor: str | None = None
    ) -> ControlPlane:
        """Build the client from the ``[control]`` section."""
        return cls(
            control.redis,
            app,
            timeout=control.timeout,
            events_max=control.events_max,
            actor=actor,
            sentinels=control.sentinels,
            master_name=control.master_name,
            sentinel_password=control.sentinel_password,
        )

    def key(self, name: str) -> str:
        """A key of this application's control plane."""
        return self.prefix + name

    @property
    def channel(self) -> str:
        """The pub/sub channel consoles and agents listen on."""
        return self.key("notify")

    async def aclose(self) -> None:
        """Close the connection pool (and the connections to the sentinels)."""
        await self._redis.aclose()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        """Run one Redis call with the timeout, translating failures."""
        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except TimeoutError:
            raise ControlPlaneUnavailable(
                f"control plane {redact_url(self.url)} did not answer within {self.timeout:g} s"
            ) from None
        except (RedisError, OSError) as e:
            raise ControlPlaneUnavailable(
                f"control plane {redact_url(self.url)} unavailable: {_one_line(e)}"
            ) from None

    async def _scan(self, pattern: str) -> list[str]:
        """Every key matching ``pattern``, bounded by the timeout like any other call."""

        async def collect() -> list[str]:
            return [key async for key in self._redis.scan_iter(match=pattern, count=100)]

        keys: list[str] = await self._call(collect())
        return keys

    async def ping(self) -> float:
        """Round-trip time to the control plane in milliseconds.

        The first PING may open the connection; time a second one, so the figure is the
        round trip an operator cares about, not a TCP (or TLS) handshake.
        """
        await self._call(self._redis.ping())
        started = time.perf_counter()
        await self._call(self._redis.ping())
        return (time.perf_counter() - started) * 1000

    async def active(self) -> ActiveState | None:
        """The intended live colour, or None when no colour was ever set."""
        raw: dict[str, str] = await self._call(self._redis.hgetall(self.key("active")))
        if not raw or "colour" not in raw:
            return None
        return ActiveState(
            colour=Colour(raw["colour"]),
            epoch=int(raw.get("epoch", "0")),
            updated_at=float(raw.get("updated_at", "0")),
            actor=raw.get("actor", ""),
            reason=raw.get("reason", ""),
            kind=raw.get("kind", "switch"),
        )

    async def server_time(self) -> float:
        """The control plane's clock (Redis ``TIME``), in epoch seconds.

        Every console, CLI and agent measures ages and dwell on this one clock, so a
        machine whose clock is off cannot shift ``min_dwell`` or make a heartbeat look
        fresh or stale.
        """
        started = time.time()
        seconds, micros = await self._call(self._redis.time())
        now = float(seconds) + float(micros) / 1_000_000
        # Half the round trip is the best guess of when Redis read its clock.
        self._clock_offset = now - (started + time.time()) / 2
        self._clock_read_at = time.monotonic()
        return now

    async def clock(self) -> float:
        """The control plane's time, from a cached offset refreshed every 10 s.

        Falls back to this machine's clock when the control plane cannot be read (ages
        are then shown from the local clock rather than not at all).
        """
        if self._clock_offset is None or time.monotonic() - self._clock_read_at > 10.0:
            with contextlib.suppress(ControlPlaneUnavailable):
                return await self.server_time()
        return time.time() + (self._clock_offset or 0.0)

    def clock_now(self) -> float:
        """The control plane's time from the last known offset, without asking it."""
        return time.time() + (self._clock_offset or 0.0)

    async def ensure_active(self, default: Colour) -> ActiveState:
        """The active state, initialising it to ``default`` (epoch 1) if never set."""
        state = await self.active()
        if state is not None:
            return state
        try:
            return await self.switch(
                default, expected_epoch=0, reason="initial colour", kind="init"
            )
        except ConflictError:
            state = await self.active()
            assert state is not None
            return state

    async def seed(self, colour: Colour, floor: int, reason: str) -> tuple[ActiveState, bool]:
        """Re-create a lost active state with an epoch above ``floor``.

        Returns the state and whether this call changed it (False: someone else had
        already re-seeded above ``floor``; their state is returned).
        """
        script = self._redis.register_script(_SEED_LUA)
        result = await self._call(
            script(keys=[self.key("active")], args=[colour.value, floor, self.actor, reason])
        )
        state = await self.active()
        if state is None:  # lost again at once: report what we wrote
            state = ActiveState(Colour(str(result[2])), int(result[1]), 0.0, self.actor, reason)
        return state, bool(int(result[0]))

    async def switch(
        self,
        to: Colour,
        *,
        expected_epoch: int,
        reason: str = "",
        kind: str = "switch",
        actor: str | None = None,
        details: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> ActiveState:
        """Make ``to`` the active colour if the epoch is still ``expected_epoch``.

        Both outcomes are recorded as events and a success is published. Recording and
        publishing are best effort once the compare-and-set has committed: a switch that
        happened is returned even if the audit trail could not be written (the caller
        must still tell the router).

        Args:
            deadline: control-plane time (see :meth:`clock`) after which Redis must
                refuse the change. A command stuck in a frozen Redis would otherwise land
                whenever Redis wakes up, long after the caller reported failure.

        Raises:
            ConflictError: someone switched first; the message says who won.
            SwitchOutcomeUnknown: the control plane stopped answering after the request
                was sent; it may or may not have committed (re-read before acting).
            ControlPlaneUnavailable: the request could not be sent at all.
        """
        actor = actor or self.actor
        switch_id = secrets.token_hex(8)
        script = self._redis.register_script(_SWITCH_LUA)
        deadline_ms = int(deadline * 1000) if deadline is not None else 0
        try:
            result = await self._call(
                script(
                    keys=[self.key("active"), self.key("failover:armed")],
                    args=[expected_epoch, to.value, actor, reason, kind, switch_id, deadline_ms],
                )
            )
        except ControlPlaneUnavailable as e:
            landed = await self._find_switch(switch_id, deadline_ms)
            if landed is None:
                raise SwitchOutcomeUnknown(str(e)) from None
            if not isinstance(landed, ActiveState):
                raise
            result = [1, landed.epoch, "", 0]
        won, epoch, colour = int(result[0]), int(result[1]), str(result[2])
        if won == -1:
            raise ControlPlaneUnavailable(
                f"control plane {redact_url(self.url)} answered too late: the switch to {to} "
                "was refused by its deadline and nothing changed"
            )
        if not won:
            current = await self.active()
            who = f" by {current.actor}" if current else ""
            with contextlib.suppress(ConsoleError):
                await self.record(
                    kind,
                    f"{kind} to {to} refused: epoch moved {expected_epoch} -> {epoch}",
                    before=colour,
                    after=to.value,
                    reason=reason,
                    outcome="conflict",
                    actor=actor,
                    details=details,
                )
            raise ConflictError(
                f"switch to {to} refused: the control plane changed first "
                f"(now {colour or 'unset'} at epoch {epoch}{who}); look, then retry"
            )
        state = await self._committed(to, epoch, actor, reason, kind)
        with contextlib.suppress(ConsoleError):
            await self.record(
                kind,
                f"{kind} {colour or 'unset'} -> {to} (epoch {epoch})",
                before=colour,
                after=to.value,
                reason=reason,
                actor=actor,
                details=details,
            )
        with contextlib.suppress(ConsoleError):
            await self.publish(kind, {"colour": to.value, "epoch": epoch, "actor": actor})
        return state

    async def _committed(
        self, to: Colour, epoch: int, actor: str, reason: str, kind: str
    ) -> ActiveState:
        """The state a won compare-and-set wrote (read back for Redis's timestamp)."""
        with contextlib.suppress(ConsoleError):
            state = await self.active()
            if state is not None and state.epoch == epoch:
                return state
        return ActiveState(to, epoch, self.clock_now(), actor, reason, kind)

    async def _find_switch(self, switch_id: str, deadline_ms: int) -> ActiveState | bool | None:
        """After a lost answer: did our switch commit? (its state, False, or None: unknown).

        "No" is only certain once the control plane's clock is past the deadline: until
        then the request may still be on its way or queued in a frozen Redis.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 2 * self.timeout + 1.0
        while loop.time() < give_up:
            try:
                raw: dict[str, str] = await self._call(self._redis.hgetall(self.key("active")))
                now = await self.server_time()
            except ControlPlaneUnavailable:
                await asyncio.sleep(0.1)
                continue
            if raw.get("switch_id") == switch_id:
                return await self.active() or None
            if deadline_ms and now * 1000 > deadline_ms:
                return False
            await asyncio.sleep(0.05)
        return None

    async def armed_state(self) -> bool | None:
        """Whether automatic failover is armed; None when the control plane has no record.

        A missing record on a control plane that has an active colour means its data was
        lost (or predates the explicit record); the agent restores the operator's last
        choice when it knows it.
        """
        value = await self._call(self._redis.get(self.key("failover:armed")))
        if value is None:
            return None
        return bool(value != "0")

    async def restore_armed(self, armed: bool) -> bool:
        """Write the armed flag only if it is missing; True if this call wrote it."""
        written = await self._call(
            self._redis.set(self.key("failover:armed"), "1" if armed else "0", nx=True)
        )
        if written:
            with contextlib.suppress(ConsoleError):
                await self.publish("armed", {"armed": armed})
        return bool(written)

    async def set_mirror(self, source: Colour | None, target: Colour | None) -> None:
        """Record that change capture mirrors ``source`` into ``target`` (None: torn down).

        ``status``, the console and the switch's go/no-go look here to know whether there
        is a mirror lag to measure at all (measuring it costs SSH calls).
        """
        key = self.key("mirror")
        if source is None or target is None:
            await self._call(self._redis.delete(key))
            return
        since = f"{self.clock_now():.3f}"
        mapping: dict[Any, Any] = {"source": source.value, "target": target.value, "since": since}
        await self._call(self._redis.hset(key, mapping=mapping))

    async def mirror(self) -> tuple[Colour, Colour] | None:
        """The (source, target) change capture mirrors, or None when none is set up."""
        raw: dict[str, str] = await self._call(self._redis.hgetall(self.key("mirror")))
        try:
            return Colour(raw["source"]), Colour(raw["target"])
        except (KeyError, ValueError):
            return None

    async def persistence(self) -> str | None:
        """A warning when the control-plane Redis keeps nothing across a restart, else None."""
        info: dict[str, Any] = await self._call(self._redis.info("persistence"))
        if int(info.get("aof_enabled", 0)):
            return None
        try:
            save = await self._call(self._redis.config_get("save"))
        except ControlPlaneUnavailable:
            save = {}
        if save.get("save"):
            return (
                "control plane Redis persists only by RDB snapshots: a crash loses the last "
                "switches (run it with appendonly yes)"
            )
        if not save:  # CONFIG not allowed (managed Redis): say what we know
            return None
        return (
            "control plane Redis has no persistence: a restart loses the live colour, "
            "epochs, locks and the audit trail (run it with appendonly yes)"
        )

    async def record(
        self,
        kind: str,
        summary: str,
        *,
        before: str = "",
        after: str = "",
        reason: str = "",
        outcome: str = "ok",
        actor: str | None = None,
        details: Mapping[str, str] | None = None,
    ) -> str:
        """Append an event to the audit stream and notify listeners; returns its id."""
        fields: dict[Any, Any] = {
            "at": f"{self.clock_now():.6f}",
            "kind": kind,
            "actor": actor or self.actor,
            "summary": summary,
            "before": before,
            "after": after,
            "reason": reason,
            "outcome": outcome,
            "details": json.dumps(dict(details or {}), sort_keys=True),
        }
        event_id: str = await self._call(
            self._redis.xadd(self.key("events"), fields, maxlen=self.events_max, approximate=True)
        )
        await self.publish("event", {"id": event_id, "kind": kind})
        return event_id

    async def events(self, limit: int = 50) -> list[Event]:
        """The newest ``limit`` events, oldest first."""
        raw = await self._call(self._redis.xrevrange(self.key("events"), count=limit))
        return [_event(event_id, fields) for event_id, fields in reversed(raw)]

    async def follow_events(self, after: str = "$", block_ms: int = 1000) -> AsyncIterator[Event]:
        """Yield events as they are appended after ``after`` (an id, or ``$`` for new ones)."""
        # The connection's socket timeout is [control] timeout; a server-side block longer
        # than that would look like a dead Redis. Block for at most half of it.
        block_ms = min(block_ms, max(10, int(self.timeout * 500)))
        last = after
        if last == "$":
            newest = await self._call(self._redis.xrevrange(self.key("events"), count=1))
            last = newest[0][0] if newest else "0-0"
        while True:
            # XREAD BLOCK waits server-side; the client-side timeout must exceed the block.
            try:
                async with asyncio.timeout(self.timeout + block_ms / 1000):
                    batch: Any = await self._redis.xread(
                        {self.key("events"): last}, block=block_ms, count=100
                    )
            except TimeoutError:
                raise ControlPlaneUnavailable(
                    f"control plane {redact_url(self.url)} stopped answering"
                ) from None
            except (RedisError, OSError) as e:
                raise ControlPlaneUnavailable(
                    f"control plane {redact_url(self.url)} unavailable: {_one_line(e)}"
                ) from None
            for _stream, entries in batch or []:
                for event_id, fields in entries:
                    last = event_id
                    yield _event(event_id, fields)

    async def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """Tell every console and agent something changed (best effort, bounded)."""
        message = json.dumps({"kind": kind, "data": dict(data)})
        await self._call(self._redis.publish(self.channel, message))

    async def notifications(self) -> AsyncIterator[Notification]:
        """Yield notifications published on the channel until cancelled.

        Raises:
            ControlPlaneUnavailable: the subscription could not be made or broke.
        """
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.subscribe(self.channel))
            while True:
                try:
                    # Bounded below the socket timeout, for the same reason as above.
                    message = await pubsub.get_message(timeout=min(1.0, self.timeout / 2))
                except (RedisError, OSError) as e:
                    raise ControlPlaneUnavailable(
                        f"control plane subscription lost: {_one_line(e)}"
                    ) from None
                if message is None or message.get("type") != "message":
                    continue
                try:
                    payload = json.loads(message["data"])
                    yield Notification(str(payload["kind"]), dict(payload.get("data", {})))
                except (ValueError, KeyError, TypeError):
                    continue
        finally:
            try:
                async with asyncio.timeout(self.timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (TimeoutError, RedisError, OSError):
                pass

    async def acquire_lock(
        self, name: str, purpose: str, ttl: float, *, wait: float = 0.0
    ) -> LockInfo:
        """Take a named lock (deploy:blue, migrate, ...) for ``ttl`` seconds.

        Args:
            wait: seconds to keep trying while someone else holds it.

        Raises:
            LockHeld: someone holds it; the message says who, for what, since when.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait
        while True:
            try:
                return await self._acquire_once(name, purpose, ttl)
            except LockHeld:
                if loop.time() >= give_up:
                    raise
            await asyncio.sleep(0.05)

    async def _acquire_once(self, name: str, purpose: str, ttl: float) -> LockInfo:
        now = self.clock_now()
        token = secrets.token_hex(16)
        script = self._redis.register_script(_ACQUIRE_LUA)
        got = await self._call(
            script(
                keys=[self.key(f"lock:{name}")],
                args=[token, self.actor, purpose, now, now + ttl, int(ttl * 1000)],
            )
        )
        if not int(got):
            held = await self.lock_info(name)
            if held is None:  # expired between our attempt and the read: try once more
                return await self._acquire_once(name, purpose, ttl)
            age = now - held.since
            raise LockHeld(
                f"lock {name!r} is held by {held.holder} for {held.purpose!r} "
                f"(since {age:.0f} s ago, expires in {max(0.0, held.expires_at - now):.0f} s)"
            )
        lock = LockInfo(name, self.actor, purpose, now, now + ttl, token)
        await self.publish("lock", {"name": name, "holder": self.actor, "state": "acquired"})
        return lock

    async def renew_lock(self, lock: LockInfo, ttl: float) -> bool:
        """Extend a lock we hold; False if it was lost (expired or taken)."""
        script = self._redis.register_script(_RENEW_LUA)
        now = self.clock_now()
        renewed = await self._call(
            script(
                keys=[self.key(f"lock:{lock.name}")], args=[lock.token, int(ttl * 1000), now + ttl]
            )
        )
        return bool(int(renewed))

    async def release_lock(self, lock: LockInfo) -> bool:
        """Release a lock we hold; False if it was no longer ours."""
        script = self._redis.register_script(_RELEASE_LUA)
        released = await self._call(script(keys=[self.key(f"lock:{lock.name}")], args=[lock.token]))
        if int(released):
            await self.publish(
                "lock", {"name": lock.name, "holder": lock.holder, "state": "released"}
            )
        return bool(int(released))

    async def lock_is_ours(self, lock: LockInfo) -> bool:
        """Whether ``lock`` (by its token) is still held by us."""
        token = await self._call(self._redis.hget(self.key(f"lock:{lock.name}"), "token"))
        return bool(token == lock.token)

    @contextlib.asynccontextmanager
    async def holding(
        self, name: str, purpose: str, *, ttl: float, renew_every: float, wait: float = 0.0
    ) -> AsyncIterator[HeldLock]:
        """Hold a lock for the duration of a block, renewing it in the background.

        The TTL stays short (a crashed holder frees it soon) while a long deploy or
        migration keeps it; a Redis blip during a renewal is retried next round. When a
        renewal finds the lock gone, or no renewal succeeded for a whole TTL, the lock is
        marked lost, the loss is recorded, and the block's next :meth:`HeldLock.check`
        raises; a block that finishes anyway raises :class:`LockLost` on exit, so work
        done without the lock never reports success. The lock is released however the
        block ends.

        Args:
            wait: seconds to keep trying while someone else holds the lock.

        Raises:
            LockHeld: someone else holds it (for longer than ``wait``).
            LockLost: the lock was lost while the block ran.
        """
        info = await self.acquire_lock(name, purpose, ttl, wait=wait)
        fence = int(await self._call(self._redis.incr(self.key("fence"))))
        held = HeldLock(info, fence, self.lock_is_ours)

        async def renew() -> None:
            loop = asyncio.get_running_loop()
            renewed_at = loop.time()
            while held.lost is None:
                await asyncio.sleep(renew_every)
                try:
                    if not await self.renew_lock(info, ttl):
                        held.mark_lost(f"{name!r} expired or was taken by someone else")
                    else:
                        renewed_at = loop.time()
                except ControlPlaneUnavailable as e:
                    if loop.time() - renewed_at >= ttl:
                        held.mark_lost(f"{name!r} could not be renewed for {ttl:g} s ({e})")
            with contextlib.suppress(ConsoleError):
                await self.record(
                    "lock",
                    f"lock {name!r} lost while {purpose}: {held.lost}",
                    reason=purpose,
                    outcome="lost",
                    details={"lock": name},
                )

        renewer = asyncio.create_task(renew())
        try:
            yield held
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if held.lost is None:
                with contextlib.suppress(ControlPlaneUnavailable):
                    await self.release_lock(info)
        # Only reached when the block itself finished without raising.
        held.check()

    async def lock_info(self, name: str) -> LockInfo | None:
        """Who holds a lock, or None."""
        raw: dict[str, str] = await self._call(self._redis.hgetall(self.key(f"lock:{name}")))
        if not raw:
            return None
        return LockInfo(
            name=name,
            holder=raw.get("holder", "?"),
            purpose=raw.get("purpose", ""),
            since=float(raw.get("since", "0")),
            expires_at=float(raw.get("expires_at", "0")),
        )

    async def locks(self) -> list[LockInfo]:
        """Every lock currently held."""
        keys = await self._scan(self.key("lock:*"))
        names = [key.removeprefix(self.key("lock:")) for key in keys]
        infos = [await self.lock_info(name) for name in sorted(names)]
        return [info for info in infos if info is not None]

    async def set_armed(self, armed: bool, reason: str = "") -> None:
        """Arm or disarm automatic failover (recorded as an event)."""
        before = await self.armed_state()
        await self._call(self._redis.set(self.key("failover:armed"), "1" if armed else "0"))
        state = "armed" if armed else "disarmed"
        await self.record(
            "armed",
            f"automatic failover {state}",
            before={True: "armed", False: "disarmed", None: "unknown"}[before],
            after=state,
            reason=reason,
        )
        await self.publish("armed", {"armed": armed})

    async def armed(self) -> bool:
        """Whether automatic failover is armed (armed unless explicitly disarmed).

        Installations from before the explicit record have none; see :meth:`armed_state`
        to tell "never set" apart.
        """
        value = await self._call(self._redis.get(self.key("failover:armed")))
        return bool(value != "0")

    async def heartbeat(self, beat: AgentHeartbeat, ttl: float) -> None:
        """Publish the agent's heartbeat; it vanishes after ``ttl`` seconds unrenewed."""
        payload = json.dumps(asdict(beat))
        await self._call(
            self._redis.set(self.key(f"agent:{beat.actor}"), payload, px=int(ttl * 1000))
        )

    async def agents(self) -> list[AgentHeartbeat]:
        """Heartbeats of every live agent, leader first."""
        beats: list[AgentHeartbeat] = []
        keys = await self._scan(self.key("agent:*"))
        for key in keys:
            raw = await self._call(self._redis.get(key))
            if not raw:
                continue
            try:
                fields = json.loads(raw)
                known = {
                    k: v for k, v in fields.items() if k in AgentHeartbeat.__dataclass_fields__
                }
                beats.append(AgentHeartbeat(**known))
            except (ValueError, TypeError, AttributeError):
                continue
        return sorted(beats, key=lambda b: (not b.leader, -b.at))

    async def claim_leadership(self, agent: str, lease: float) -> bool:
        """Become (or stay) the leader agent for ``lease`` seconds; True if we lead.

        One script, so a lease that expires between "is it mine?" and "extend it" can
        never extend another agent's lease (two agents both believing they lead).
        """
        script = self._redis.register_script(_CLAIM_LUA)
        claimed = await self._call(
            script(keys=[self.key("leader")], args=[agent, int(lease * 1000)])
        )
        return bool(int(claimed))

    async def resign(self, agent: str) -> None:
        """Give up leadership (if ours) and withdraw our heartbeat, on a clean shutdown.

        A stand-by agent then takes over at its next beat instead of after the lease.
        """
        script = self._redis.register_script(_RELEASE_LEADER_LUA)
        await self._call(script(keys=[self.key("leader")], args=[agent]))
        await self._call(self._redis.delete(self.key(f"agent:{agent}")))

    async def leader(self) -> str | None:
        """The agent currently holding leadership."""
        value: str | None = await self._call(self._redis.get(self.key("leader")))
        return value


# A Redis that restarted (or a primary that was replaced) leaves every pooled connection
# dead; without a retry each of them fails one call ("Connection closed by server")
# before it is replaced. One immediate retry on a fresh connection hides that, and never
# repeats a command that reached Redis: a dropped connection is found on write. Behind
# Sentinel the fresh connection asks the sentinels for the primary, so a promoted replica
# is followed by itself.
def _options(timeout: float) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
    }


def _sentinel(
    sentinels: tuple[tuple[str, int], ...], timeout: float, password: str | None
) -> Sentinel:
    return Sentinel(  # type: ignore[no-untyped-call]
        list(sentinels),
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "password": password,
        },
        **_options(timeout),
    )


def _client(
    url: str, timeout: float, sentinel: Sentinel | None, master_name: str
) -> aioredis.Redis:
    """The Redis client: straight to ``url``, or to the primary the sentinels name."""
    if sentinel is None:
        return aioredis.Redis.from_url(url, health_check_interval=30, **_options(timeout))
    parts = urlsplit(url)
    db = parts.path.strip("/")
    client: aioredis.Redis = sentinel.master_for(
        master_name,
        password=unquote(parts.password) if parts.password else None,
        username=unquote(parts.username) if parts.username else None,
        db=int(db) if db.isdigit() else 0,
    )
    return client


def _sentinel_label(sentinels: tuple[tuple[str, int], ...], master_name: str) -> str:
    """How messages name a Sentinel-backed control plane."""
    hosts = ",".join(f"{host}:{port}" for host, port in sentinels)
    return f"redis+sentinel://{hosts}/{master_name}"


def _event(event_id: str, fields: Mapping[str, str]) -> Event:
    try:
        details = json.loads(fields.get("details", "{}"))
    except ValueError:
        details = {}
    return Event(
        id=event_id,
        at=float(fields.get("at", "0")),
        kind=fields.get("kind", ""),
        actor=fields.get("actor", ""),
        summary=fields.get("summary", ""),
        before=fields.get("before", ""),
        after=fields.get("after", ""),
        reason=fields.get("reason", ""),
        outcome=fields.get("outcome", ""),
        details={str(k): str(v) for k, v in details.items()},
    )


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0] if text else type(error).__name__
