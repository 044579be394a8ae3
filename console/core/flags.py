"""Feature flags per environment: each colour's flags live in that colour's own Redis.

Storage is what the application reads locally: one string key per flag (``flag:<name>``
by default) holding the flag's ``on`` value (``ON``) or ``off`` value (``OFF``); a missing
key or any other value reads as off. Keys under the prefix that no ``[flags.*]`` declares
are reported as undeclared, never hidden, and never changed.

Every change is written first and recorded second: the flag write is the operator's
intent and the application's Redis is separate from the control plane, so a control plane
that is down does not block it. A change that could not be recorded carries a
``warning`` that callers must show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from console.core.config import Config, FlagConfig, redact_url
from console.core.control import ControlPlane
from console.core.errors import BackendError, ConfigError, ConsoleError, UsageError
from console.core.models import Colour

FlagState = Literal["on", "off", "unknown"]

COLOURS: tuple[Colour, ...] = (Colour.BLUE, Colour.GREEN)

# Keys fetched per SCAN step: large enough that a typical app Redis answers in one step,
# small enough that one step never blocks the application's Redis noticeably.
_SCAN_COUNT = 1000
# A runaway keyspace must not turn a flag listing into a full scan of millions of keys.
_SCAN_MAX_STEPS = 200

# Toggle atomically in Redis: read and flip in one script, so two operators toggling at
# once both take effect in turn (on -> off -> on) and each sees the true "before".
_TOGGLE_LUA = """
local current = redis.call('GET', KEYS[1])
local new = ARGV[1]
if current == ARGV[1] then
  new = ARGV[2]
end
redis.call('SET', KEYS[1], new)
return {current, new}
"""


@dataclass(frozen=True, slots=True)
class FlagValue:
    """One flag in one colour: what the application reads, and the raw value behind it."""

    state: FlagState
    raw: str | None = None
    """The stored string; None when the key is missing or the colour could not be read."""
    note: str = ""
    """Why the state is what it is when that is not obvious (wrong key type, no Redis)."""


UNKNOWN = FlagValue("unknown")


@dataclass(frozen=True, slots=True)
class FlagRow:
    """One flag across both colours."""

    name: str
    key: str
    declared: bool
    description: str = ""
    kill_switch: bool = False
    values: dict[Colour, FlagValue] = field(default_factory=dict)

    def value(self, colour: Colour) -> FlagValue:
        """The flag's value in ``colour`` (unknown if not read)."""
        return self.values.get(colour, UNKNOWN)

    @property
    def differs(self) -> bool:
        """True when both colours were read and the application would see different states."""
        blue, green = self.value(Colour.BLUE), self.value(Colour.GREEN)
        if "unknown" in (blue.state, green.state):
            return False
        return blue.state != green.state


@dataclass(frozen=True, slots=True)
class FlagTable:
    """Every flag (declared, then undeclared) by colour, plus why a colour is unknown."""

    rows: tuple[FlagRow, ...]
    errors: dict[Colour, str] = field(default_factory=dict)
    """Colour -> one-line reason its flags are unknown (Redis down, no flags_redis)."""

    def row(self, name: str) -> FlagRow | None:
        """The row of a flag by name, or None."""
        for row in self.rows:
            if row.name == name:
                return row
        return None

    @property
    def complete(self) -> bool:
        """Both colours were read."""
        return not self.errors

    def differing(self) -> FlagTable:
        """The same table restricted to the flags whose state differs between colours."""
        return FlagTable(tuple(r for r in self.rows if r.differs), dict(self.errors))


@dataclass(frozen=True, slots=True)
class FlagChange:
    """The result of setting one flag in one colour."""

    name: str
    colour: Colour
    key: str
    before: FlagState
    after: FlagState
    raw_before: str | None
    raw_after: str
    event_id: str | None = None
    """The control-plane event recording the change, None if it could not be recorded."""
    warning: str | None = None
    """Set when the change happened but was not recorded or published; always show it."""

    @property
    def changed(self) -> bool:
        """Whether what the application reads changed."""
        return self.before != self.after


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What ``copy`` did: the flags it changed and those already equal."""

    src: Colour
    dst: Colour
    changes: tuple[FlagChange, ...]
    unchanged: tuple[str, ...]


def state_of(flag: FlagConfig, raw: str | None) -> FlagState:
    """What the application reads for a stored value: only the exact ``on`` value is on."""
    return "on" if raw == flag.on else "off"


@dataclass(frozen=True, slots=True)
class _ColourRead:
    declared: dict[str, FlagValue]
    undeclared: dict[str, FlagValue]


class FlagStore:
    """Reads and changes the declared flags of both colours.

    Args:
        config: the configuration (flags, prefix, each colour's ``flags_redis``).
        control: where changes are recorded and published; None records nothing (each
            change then carries a warning saying so).
        timeout: seconds one Redis round trip may take (default: ``[control] timeout``).
    """

    def __init__(
        self, config: Config, control: ControlPlane | None, *, timeout: float | None = None
    ) -> None:
        self.config = config
        self.control = control
        self.timeout = timeout if timeout is not None else config.control.timeout
        self.prefix = config.console.flag_prefix
        self._clients: dict[Colour, aioredis.Redis] = {}

    async def aclose(self) -> None:
        """Close every connection pool opened so far."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def url(self, colour: Colour) -> str:
        """The flags Redis URL of a colour.

        Raises:
            ConfigError: the colour has no ``flags_redis``.
        """
        url = self.config.env(colour).flags_redis
        if url is None:
            raise ConfigError(
                f"{colour} has no flag store: set env.{colour}.flags_redis in the config"
            )
        return url

    def flag(self, name: str) -> FlagConfig:
        """A declared flag by name.

        Raises:
            UsageError: no ``[flags.NAME]`` declares it.
        """
        flag = self.config.flags.get(name)
        if flag is None:
            known = ", ".join(self.config.flags) or "none"
            raise UsageError(
                f"flag {name!r} is not declared in the config; add [flags.{name}] "
                f"(declared: {known})"
            )
        return flag

    def _client(self, colour: Colour) -> aioredis.Redis:
        client = self._clients.get(colour)
        if client is None:
            client = aioredis.Redis.from_url(
                self.url(colour),
                decode_responses=True,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
            )
            self._clients[colour] = client
        return client

    async def _call(self, colour: Colour, awaitable: Awaitable[Any]) -> Any:
        """One round trip to a colour's flags Redis, bounded and translated."""
        where = f"{colour} flags Redis {redact_url(self.url(colour))}"
        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except TimeoutError:
            raise BackendError(f"{where} did not answer within {self.timeout:g} s") from None
        except (RedisError, OSError) as e:
            raise BackendError(f"{where} unavailable: {_one_line(e)}") from e

    # Reading

    async def read_all(self) -> FlagTable:
        """Every declared flag and every undeclared key under the prefix, in both colours.

        A colour whose Redis is down (or unconfigured) shows all its flags as unknown and
        its reason in ``errors``; the other colour is still read.
        """
        results = await asyncio.gather(
            *(self._read_colour(c) for c in COLOURS), return_exceptions=True
        )
        reads: dict[Colour, _ColourRead] = {}
        errors: dict[Colour, str] = {}
        for colour, result in zip(COLOURS, results, strict=True):
            if isinstance(result, ConsoleError):
                errors[colour] = str(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                reads[colour] = result
        rows = [
            FlagRow(
                name=flag.name,
                key=flag.key,
                declared=True,
                description=flag.description,
                kill_switch=flag.kill_switch,
                values={
                    c: reads[c].declared[flag.name] if c in reads else UNKNOWN for c in COLOURS
                },
            )
            for flag in self.config.flags.values()
        ]
        undeclared = sorted({key for read in reads.values() for key in read.undeclared})
        declared_names = set(self.config.flags)
        for key in undeclared:
            name = key.removeprefix(self.prefix)
            # A declared flag with a custom key may share the bare name: keep rows distinct.
            if name in declared_names or not name:
                name = key
            values = {
                c: reads[c].undeclared.get(key, FlagValue("off")) if c in reads else UNKNOWN
                for c in COLOURS
            }
            rows.append(FlagRow(name=name, key=key, declared=False, values=values))
        return FlagTable(tuple(rows), errors)

    async def diff(self) -> FlagTable:
        """The flags whose state differs between the colours (``errors`` says if unknown)."""
        return (await self.read_all()).differing()

    async def _read_colour(self, colour: Colour, *, scan: bool = True) -> _ColourRead:
        client = self._client(colour)
        flags = list(self.config.flags.values())
        declared_keys = {flag.key for flag in flags}
        # One round trip in the common case: every declared key plus the first SCAN step.
        pipe = client.pipeline(transaction=False)
        for flag in flags:
            pipe.get(flag.key)
        if scan:
            pipe.scan(0, match=_glob_escape(self.prefix) + "*", count=_SCAN_COUNT)
        replies = await self._call(colour, pipe.execute(raise_on_error=False))
        declared = {
            flag.name: _value(flag.on, reply) for flag, reply in zip(flags, replies, strict=False)
        }
        if not scan:
            return _ColourRead(declared, {})
        scan_reply = replies[-1]
        if isinstance(scan_reply, Exception):
            raise BackendError(f"{colour} flags Redis refused SCAN: {_one_line(scan_reply)}")
        cursor, found = scan_reply
        keys = {k for k in found if k not in declared_keys}
        steps = 1
        while int(cursor) != 0 and steps < _SCAN_MAX_STEPS:
            cursor, found = await self._call(
                colour,
                client.scan(cursor, match=_glob_escape(self.prefix) + "*", count=_SCAN_COUNT),
            )
            keys.update(k for k in found if k not in declared_keys)
            steps += 1
        undeclared: dict[str, FlagValue] = {}
        if keys:
            ordered = sorted(keys)
            pipe = client.pipeline(transaction=False)
            for key in ordered:
                pipe.get(key)
            values = await self._call(colour, pipe.execute(raise_on_error=False))
            # Undeclared keys have no configured values: read them the default way.
            undeclared = {k: _value("ON", v) for k, v in zip(ordered, values, strict=True)}
        return _ColourRead(declared, undeclared)

    # Changing

    async def set(self, name: str, colour: Colour, on: bool, reason: str = "") -> FlagChange:
        """Set a declared flag on or off in one colour, then record and publish the change.

        Raises:
            UsageError: the flag is not declared.
            ConfigError: the colour has no flags Redis.
            BackendError: the colour's Redis is down or refused the write.
        """
        flag = self.flag(name)
        raw = flag.on if on else flag.off
        # SET ... GET returns the old value in the same command, so "before" is exact.
        before = await self._call(colour, self._client(colour).set(flag.key, raw, get=True))
        return await self._record(flag, colour, before, raw, reason, "set")

    async def toggle(self, name: str, colour: Colour, reason: str = "") -> FlagChange:
        """Flip a declared flag in one colour atomically (off or anything else -> on).

        Raises:
            UsageError, ConfigError, BackendError: as for :meth:`set`.
        """
        flag = self.flag(name)
        script = self._client(colour).register_script(_TOGGLE_LUA)
        before, after = await self._call(colour, script(keys=[flag.key], args=[flag.on, flag.off]))
        return await self._record(flag, colour, before, str(after), reason, "toggle")

    async def copy(
        self,
        src: Colour,
        dst: Colour,
        names: Sequence[str] | None = None,
        reason: str = "",
    ) -> CopyResult:
        """Make ``dst`` read every chosen declared flag (default: all) the way ``src`` does.

        Only flags whose state differs are written (each one recorded); a flag whose key is
        missing in ``src`` reads as off and is written as off.

        Raises:
            UsageError: a name is not declared, or ``src`` equals ``dst``.
            ConfigError, BackendError: either colour cannot be read, or a write failed
                (flags before it in config order were already copied).
        """
        if src == dst:
            raise UsageError(f"copy needs two different colours (got {src} -> {dst})")
        chosen = (
            [self.flag(n) for n in _unique(names)] if names else list(self.config.flags.values())
        )
        # Both colours are read before anything is written, so a colour that is down
        # fails the copy up front instead of half-way.
        src_read, dst_read = await asyncio.gather(
            self._read_colour(src, scan=False), self._read_colour(dst, scan=False)
        )
        changes: list[FlagChange] = []
        unchanged: list[str] = []
        for flag in chosen:
            want = src_read.declared[flag.name].state
            if dst_read.declared[flag.name].state == want:
                unchanged.append(flag.name)
                continue
            try:
                change = await self.set(flag.name, dst, want == "on", reason or f"copy from {src}")
            except ConsoleError as e:
                done = ", ".join(c.name for c in changes) or "none"
                raise BackendError(f"{e} (copied before the failure: {done})") from e
            changes.append(change)
        return CopyResult(src, dst, tuple(changes), tuple(unchanged))

    async def _record(
        self,
        flag: FlagConfig,
        colour: Colour,
        raw_before: str | None,
        raw_after: str,
        reason: str,
        verb: str,
    ) -> FlagChange:
        before, after = state_of(flag, raw_before), state_of(flag, raw_after)
        change = FlagChange(flag.name, colour, flag.key, before, after, raw_before, raw_after)
        if self.control is None:
            return _with(change, warning="change not recorded: no control plane client")
        summary = f"flag {flag.name} on {colour}: {before} -> {after}"
        if before == after:
            summary += " (unchanged)"
        details = {
            "flag": flag.name,
            "colour": colour.value,
            "key": flag.key,
            "verb": verb,
            "raw_before": raw_before if raw_before is not None else "",
            "raw_after": raw_after,
        }
        try:
            event_id = await self.control.record(
                "flag", summary, before=before, after=after, reason=reason, details=details
            )
        except ConsoleError as e:
            return _with(change, warning=f"flag changed but NOT recorded: {e}")
        change = _with(change, event_id=event_id)
        try:
            await self.control.publish(
                "flag",
                {**details, "before": before, "after": after, "actor": self.control.actor},
            )
        except ConsoleError as e:
            return _with(change, warning=f"flag changed and recorded but not published: {e}")
        return change


def _value(on: str, reply: Any) -> FlagValue:
    if isinstance(reply, ResponseError):
        # Not a string key (e.g. a hash): the application's GET fails, so it reads off.
        return FlagValue("off", None, f"unreadable: {_one_line(reply)}")
    if isinstance(reply, Exception):
        return FlagValue("unknown", None, _one_line(reply))
    raw = None if reply is None else str(reply)
    return FlagValue("on" if raw == on else "off", raw)


def _with(change: FlagChange, **updates: Any) -> FlagChange:
    return replace(change, **updates)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _glob_escape(text: str) -> str:
    """Escape SCAN MATCH glob characters so the prefix matches literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
