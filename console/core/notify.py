"""Notifications: the control plane's events, sent to webhooks (``[[notify]]``).

Every switch, failover, deploy, migration and flag change is already an event in the
control plane's stream, whoever made it (the agent, the CLI, a console). So the leader
agent follows that stream and delivers what each receiver asked for; the CLI and the
console need no notification code of their own, and a CLI that exits right after a
switch cannot lose the message.

Per receiver, one task and one cursor in the control plane (``notify:cursor:<id>``, the
last event handled): a dead or slow receiver only delays its own messages, a new leader
goes on where the old one stopped, and a delivery is claimed (``SET NX``) before it is
sent, so two agents that briefly both believe they lead never send one event twice.
Nothing here runs in the failover path: the agent's decision is recorded first, and the
delivery happens later in its own task.

A delivery is retried with backoff (1, 2, 4, 8 s by default) on connection errors,
timeouts, 408, 429 and 5xx; any other answer, or the last attempt, gives up on that event
and records the failure in the ``notify:failures`` hash, which ``bgconsole status`` shows.

The one event that cannot go through the stream is the control plane itself becoming
unreachable: the agent hands it to :meth:`Notifier.direct`, and every agent that sees the
loss sends it (there is no leader while the control plane is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from redis.exceptions import RedisError

from console.core.config import Config, NotifyConfig
from console.core.control import ControlPlane
from console.core.control import _event as _event_from_fields
from console.core.errors import ConsoleError, ControlPlaneUnavailable
from console.core.models import Event

FAILURES_KEY = "notify:failures"
_CURSOR_KEY = "notify:cursor:"
_CLAIM_KEY = "notify:sent:"
_CLAIM_TTL_MS = 24 * 3600 * 1000
_BACKOFF = (1.0, 2.0, 4.0, 8.0)
_DIRECT_QUEUE = 100
_IDLE_WAIT = 0.25
_BLOCK_MS = 250
_RETRY_STATUS = frozenset({408, 425, 429})
_LATE = 120.0

Log = Callable[[str, dict[str, Any]], None]


def notify_kind(event: Event) -> str | None:
    """The ``[[notify]] kinds`` name of an event, or None for events never sent.

    An operator switch writes two events: the compare-and-set (details carry ``forced``)
    and then its outcome (verified or not confirmed). Only the outcome is sent, so a
    switch is one message that says whether traffic really moved.
    """
    kind, outcome = event.kind, event.outcome
    if kind == "switch":
        if "drift" in event.summary:
            return "drift"
        if "forced" in event.details and outcome == "ok" and "verified" not in event.summary:
            return None
        return "switch"
    if kind in ("failover", "failback"):
        return "failover_held" if outcome == "held" else "failover"
    if kind == "deploy":
        return "deploy"
    if kind == "migrate":
        return "migration"
    if kind == "flag":
        return "flag"
    if kind == "control" and outcome == "lost":
        return "control_plane_lost"
    return None


_ICONS = {
    "switch": ":twisted_rightwards_arrows:",
    "failover": ":rotating_light:",
    "failover_held": ":warning:",
    "deploy": ":rocket:",
    "migration": ":card_file_box:",
    "flag": ":triangular_flag_on_post:",
    "drift": ":warning:",
    "control_plane_lost": ":rotating_light:",
}


def payload(app: str, kind: str, event: Event, now: float | None = None) -> dict[str, Any]:
    """The JSON body: the event itself plus a Slack/Mattermost-compatible ``text``.

    A message delivered late (the receiver was down, or no agent led for a while) says
    when it happened: a failover read as "now" an hour later would mislead.
    """
    change = f"{event.before or '?'} → {event.after}" if event.before or event.after else ""
    lines = [f"{_ICONS.get(kind, '')} *{app}*: {event.summary}".strip()]
    facts = [f"by {event.actor}"] if event.actor else []
    if change:
        facts.append(change)
    if event.outcome and event.outcome != "ok":
        facts.append(f"outcome: *{event.outcome}*")
    if facts:
        lines.append(" · ".join(facts))
    if event.reason:
        lines.append(f"reason: {event.reason}")
    late = (now if now is not None else time.time()) - event.at
    if event.at and late > _LATE:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event.at))
        lines.append(f"_delivered late: this happened at {when} ({late / 60:.0f} min ago)_")
    for name, value in list(event.details.items())[:8]:
        lines.append(f"• {name}: {value}")
    return {
        "text": "\n".join(lines),
        "app": app,
        "kind": kind,
        "event": {
            "id": event.id,
            "at": event.at,
            "kind": event.kind,
            "actor": event.actor,
            "summary": event.summary,
            "before": event.before,
            "after": event.after,
            "reason": event.reason,
            "outcome": event.outcome,
            "details": dict(event.details),
        },
    }


def receiver_id(entry: NotifyConfig) -> str:
    """A stable short id for a receiver: its URL (a secret for Slack) is never a key."""
    return hashlib.sha256(entry.url.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A receiver's delivery trouble as recorded in the control plane."""

    receiver: str
    failures: int
    last_error: str
    last_failed_at: float
    event: str
    """The summary of the event that could not be delivered last."""
    last_ok_at: float = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last delivery attempt failed (no success since)."""
        return self.last_failed_at > self.last_ok_at

    def describe(self, now: float) -> str:
        """One line for ``status``."""
        state = "FAILING" if self.failing else "recovered"
        return (
            f"{self.receiver} {state}: {self.failures} failed "
            f"deliver{'y' if self.failures == 1 else 'ies'}, last {now - self.last_failed_at:.0f}s "
            f"ago ({self.last_error}; event: {self.event})"
        )


async def delivery_failures(
    control: ControlPlane, receivers: Sequence[NotifyConfig] | None = None
) -> list[DeliveryFailure]:
    """Receivers with failed deliveries, newest failure first.

    Args:
        receivers: only these (the configured ones: a receiver removed from the config
            must not show as failing forever); None: every record.
    """
    # The control plane has no generic hash read; this module owns the key.
    raw: dict[str, str] = await control._call(control._redis.hgetall(control.key(FAILURES_KEY)))
    wanted = None if receivers is None else {receiver_id(entry) for entry in receivers}
    found = []
    for rid, fields in raw.items():
        if wanted is not None and rid not in wanted:
            continue
        try:
            data = json.loads(fields)
            found.append(
                DeliveryFailure(
                    receiver=str(data["receiver"]),
                    failures=int(data["failures"]),
                    last_error=str(data["last_error"]),
                    last_failed_at=float(data["last_failed_at"]),
                    event=str(data.get("event", "")),
                    last_ok_at=float(data.get("last_ok_at", 0.0)),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda f: -f.last_failed_at)


class Notifier:
    """Delivers events to every ``[[notify]]`` receiver; run it as a task of the agent.

    Args:
        config: the configuration (``[[notify]]``, ``[console] name``).
        control: the control-plane client (shared with the agent).
        is_leader: whether this agent leads right now (only the leader reads the stream).
        log: ``log(event, fields)`` for delivery failures (the agent's log).
        backoff: seconds between attempts (tests shorten it).
    """

    def __init__(
        self,
        config: Config,
        control: ControlPlane,
        *,
        is_leader: Callable[[], bool],
        log: Log | None = None,
        backoff: tuple[float, ...] = _BACKOFF,
    ) -> None:
        self.config = config
        self.control = control
        self.is_leader = is_leader
        self.log = log or (lambda _event, _fields: None)
        self.backoff = backoff
        self._direct: dict[str, asyncio.Queue[Event]] = {
            receiver_id(entry): asyncio.Queue(_DIRECT_QUEUE) for entry in config.notify
        }
        self._wake = {receiver_id(entry): asyncio.Event() for entry in config.notify}
        self.delivered = 0
        """Deliveries that succeeded (for tests and the stop line)."""
        self.following: set[str] = set()
        """Receivers (by id) whose cursor is set: events recorded from now on reach them."""

    def direct(
        self,
        summary: str,
        *,
        actor: str,
        outcome: str,
        details: Mapping[str, str] | None = None,
    ) -> None:
        """Send a ``control_plane_lost`` message that cannot go through the stream (the
        control plane is unreachable, or back) to every receiver that wants it.

        Never blocks: a receiver whose queue is full misses it (it is already failing).
        """
        event = Event(
            id="",
            at=time.time(),
            kind="control",
            actor=actor,
            summary=summary,
            outcome=outcome,
            details=dict(details or {}),
        )
        for entry in self.config.notify:
            if "control_plane_lost" in entry.kinds:
                with contextlib.suppress(asyncio.QueueFull):
                    self._direct[receiver_id(entry)].put_nowait(event)
                self._wake[receiver_id(entry)].set()

    async def run(self) -> None:
        """Deliver forever: one task per receiver. Cancel to stop."""
        if not self.config.notify:
            return
        async with httpx.AsyncClient(follow_redirects=False) as client, asyncio.TaskGroup() as g:
            for entry in self.config.notify:
                g.create_task(self._receiver(client, entry))

    async def _receiver(self, client: httpx.AsyncClient, entry: NotifyConfig) -> None:
        rid = receiver_id(entry)
        direct, wake = self._direct[rid], self._wake[rid]
        while True:
            _reraise_cancel()
            wake.clear()
            while not direct.empty():
                event = direct.get_nowait()
                await self._deliver(client, entry, rid, "control_plane_lost", event)
            if not self.is_leader():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_WAIT):
                        await wake.wait()
                continue
            try:
                await self._follow_once(client, entry, rid)
            except ControlPlaneUnavailable:
                # The agent notices and goes fail static; wait for it (or a direct event).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await wake.wait()

    async def _follow_once(self, client: httpx.AsyncClient, entry: NotifyConfig, rid: str) -> None:
        """Read the events after this receiver's cursor and handle them, in order."""
        redis = self.control._redis
        cursor_key = self.control.key(_CURSOR_KEY + rid)
        cursor: str | None = await self.control._call(redis.get(cursor_key))
        if cursor is None:
            # A receiver that was just added starts from now, not with the whole history.
            newest = await self.control._call(redis.xrevrange(self.control.key("events"), count=1))
            cursor = newest[0][0] if newest else "0-0"
            await self.control._call(redis.set(cursor_key, cursor, nx=True))
            self.following.add(rid)
            return
        self.following.add(rid)
        try:
            async with asyncio.timeout(self.control.timeout + _BLOCK_MS / 1000):
                batch: Any = await redis.xread(
                    {self.control.key("events"): cursor}, block=_BLOCK_MS, count=20
                )
        except (RedisError, OSError, TimeoutError) as e:
            raise ControlPlaneUnavailable(f"notify: reading events failed: {e!r}") from None
        for _stream, entries in batch or []:
            for event_id, fields in entries:
                if not self.is_leader():
                    return  # leadership lost: the new leader goes on from the cursor
                event = _event_from_fields(event_id, fields)
                kind = notify_kind(event)
                if kind is not None and kind in entry.kinds:
                    claim = self.control.key(f"{_CLAIM_KEY}{rid}:{event_id}")
                    if await self.control._call(redis.set(claim, "1", nx=True, px=_CLAIM_TTL_MS)):
                        await self._deliver(client, entry, rid, kind, event)
                await self.control._call(redis.set(cursor_key, event_id))

    async def _deliver(
        self, client: httpx.AsyncClient, entry: NotifyConfig, rid: str, kind: str, event: Event
    ) -> bool:
        """POST one event, retrying with backoff; record the outcome. True if delivered."""
        body = payload(self.config.console.name, kind, event)
        error = ""
        for attempt in range(len(self.backoff) + 1):
            if attempt:
                await asyncio.sleep(self.backoff[attempt - 1])
            try:
                async with asyncio.timeout(entry.timeout):
                    response = await client.post(entry.url, json=body, timeout=entry.timeout)
            except TimeoutError:
                error = f"no answer within {entry.timeout:g} s"
                continue
            except httpx.HTTPError as e:
                # The message of a connection error names no URL (Slack's holds a secret).
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
                continue
            if 200 <= response.status_code < 300:
                self.delivered += 1
                await self._record(rid, entry, event, ok=True)
                return True
            error = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code not in _RETRY_STATUS:
                break  # the receiver refuses this message; retrying changes nothing
        attempts = attempt + 1
        self.log(
            "notify_failed",
            {"receiver": entry.name, "kind": kind, "error": error, "attempts": attempts},
        )
        await self._record(rid, entry, event, ok=False, error=f"{error} after {attempts} tries")
        return False

    async def _record(
        self, rid: str, entry: NotifyConfig, event: Event, *, ok: bool, error: str = ""
    ) -> None:
        """Keep the receiver's failure record in the control plane (best effort)."""
        key = self.control.key(FAILURES_KEY)
        redis = self.control._redis
        with contextlib.suppress(ConsoleError):
            raw = await self.control._call(redis.hget(key, rid))
            if raw is None and ok:
                return  # never failed: nothing to keep
            data: dict[str, Any] = json.loads(raw) if raw else {"failures": 0}
            now = self.control.clock_now()
            data["receiver"] = entry.name
            if ok:
                data["last_ok_at"] = now
            else:
                data["failures"] = int(data.get("failures", 0)) + 1
                data["last_error"] = error
                data["last_failed_at"] = now
                data["event"] = event.summary[:200]
            await self.control._call(redis.hset(key, rid, json.dumps(data)))


def _reraise_cancel() -> None:
    """Re-raise a cancel that redis-py swallowed (it may turn one into a connection error,
    which this loop survives by design); the task still counts the cancel request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
