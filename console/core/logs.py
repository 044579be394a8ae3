"""Live logs: the hosts' log commands streamed over SSH, multiplexed into one line stream.

Every (host, log) pair runs its configured command (``tail -F ...``, ``journalctl -f ...``)
in its own task; lines meet in one queue bounded in lines, so a slow reader pauses the
remote commands (SSH flow control) instead of growing memory. A stream that drops is
retried with backoff and jitter, with marker lines saying so.

With ``per_host_lines`` (what ``logs --follow`` uses, for a fleet of tens of hosts) each
stream gets its own buffer of that many lines instead, drained round-robin: a slow reader
drops the oldest lines of each busy host (a marker says how many, ``blue/app7: 1,234 lines
dropped``) rather than pausing the remote commands, so a live tail stays live, and one
chatty host can neither hold back the quiet ones nor grow memory.

Lines travel in batches (``LogBatch``: the lines one SSH read delivered), which is what
makes a million lines a second affordable; ``LogFollower.stream`` hands them out one
``LogLine`` at a time for readers that want that.

How ``lines`` and ``follow`` change a log command (see ``log_command``):

- ``tail ...``: the ``-n``/``--lines`` and follow options are replaced: ``tail -n N -F FILE``
  with follow (keeping ``-f`` if that was written), ``tail -n N FILE`` without.
- ``journalctl ...``: likewise ``journalctl -n N -f ...`` or ``journalctl -n N --no-pager ...``.
- anything else runs as written: with follow it streams until stopped (``lines`` has no
  effect on the backlog); without follow it runs for at most ``snapshot_timeout`` seconds
  and the last N lines of its output are kept.

After a reconnect, ``tail``/``journalctl`` resume with no backlog (``-n 0``), so lines are
never shown twice; lines written while the host was unreachable are not replayed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import re
import shlex
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Literal

from console.core.config import HostConfig
from console.core.errors import ConfigError, ConsoleError, HostKeyError, UsageError
from console.core.health import PROBE_MARK
from console.core.models import Colour
from console.core.ssh import (
    Backoff,
    CommandExit,
    CommandTimeout,
    LineBatch,
    SshAuthFailed,
    SshPool,
)

QUEUE_LINES = 1000
"""Lines buffered between the hosts and the reader; beyond it the hosts are paused."""
PER_HOST_LINES = 1000
"""Lines buffered per stream when following (``per_host_lines``); beyond it the oldest go."""
PER_HOST_CHARS = 1_000_000
"""Characters buffered per stream when following: lines may be up to ``ssh.MAX_LINE``
long, and 1,000 of those would be 64 MB a host."""
MAX_CONNECTING = 16
"""Hosts connecting at once; a fleet's streams start in waves of this size."""
SNAPSHOT_TIMEOUT = 5.0
"""Seconds a non-tail log command may run without --follow."""
_FOLLOW_FLAGS = frozenset({"-f", "-F", "--follow", "--follow=name", "--follow=descriptor"})
PROBE_BACKLOG_FACTOR = 10
"""Without --follow and with probes hidden, this many times the lines asked for are read,
so the last N lines shown are the app's, not N lines of which most were health probes."""
_FATAL = (HostKeyError, SshAuthFailed, ConfigError)
"""Errors a retry cannot fix: reported once, then that stream stops."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of one host's log, or a marker line about the stream itself."""

    colour: Colour
    host: str
    log: str
    """The log's name in the config (``app``, ``nginx``, ...)."""
    text: str
    at: float
    """Wall-clock time (epoch seconds) the line arrived."""
    marker: bool = False
    """A line written by the console (disconnected, reconnected, failed), not the host."""
    stream: Literal["stdout", "stderr"] = "stdout"

    @property
    def source(self) -> str:
        """``colour/host``, the prefix lines are shown with."""
        return f"{self.colour.value}/{self.host}"


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Consecutive lines of one host's log as one read delivered them, or a marker line.

    The fields are those of ``LogLine``, with ``lines`` (never empty) for its ``text``.
    """

    colour: Colour
    host: str
    log: str
    """The log's name in the config (``app``, ``nginx``, ...)."""
    lines: tuple[str, ...]
    """The lines' text, in order, without their line endings."""
    at: float
    """Wall-clock time (epoch seconds) the lines arrived."""
    marker: bool = False
    """Lines written by the console (disconnected, reconnected, failed), not the host."""
    stream: Literal["stdout", "stderr"] = "stdout"

    @property
    def source(self) -> str:
        """``colour/host``, the prefix lines are shown with."""
        return f"{self.colour.value}/{self.host}"

    def log_lines(self) -> list[LogLine]:
        """The batch as one ``LogLine`` per line."""
        return [
            LogLine(self.colour, self.host, self.log, text, self.at, self.marker, self.stream)
            for text in self.lines
        ]


class _LineQueue:
    """A FIFO of log batches and end-of-stream sentinels (None), bounded in lines.

    A batch (of at most ``max_lines`` lines) waits until its lines fit and every batch
    that came before it is in: first come, first served, so a busy host's large batches
    are not overtaken forever by the small ones of quiet hosts. A sentinel holds no line
    and never waits.
    """

    def __init__(self, max_lines: int) -> None:
        if max_lines < 1:
            raise ValueError(f"queue_lines must be 1 or more, got {max_lines}")
        self.max_lines = max_lines
        self.lines = 0
        """Lines queued now."""
        self._items: collections.deque[LogBatch | None] = collections.deque()
        self._turns: collections.deque[object] = collections.deque()
        """One token per waiting ``put``, in arrival order."""
        self._changed = asyncio.Condition()

    async def put(self, item: LogBatch | None) -> None:
        async with self._changed:
            if item is not None:
                size = len(item.lines)
                turn = object()
                self._turns.append(turn)
                try:
                    await self._changed.wait_for(
                        lambda: self._turns[0] is turn and self.lines + size <= self.max_lines
                    )
                finally:
                    self._turns.remove(turn)
                    self._changed.notify_all()  # the next in line (also if this one was cancelled)
                self.lines += size
            self._items.append(item)
            self._changed.notify_all()

    async def get(self) -> LogBatch | None:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
            if item is not None:
                self.lines -= len(item.lines)
            self._changed.notify_all()
            return item


_StreamKey = tuple[str, str, str]
"""(colour, host, log): one stream."""


@dataclass(slots=True)
class _Buffer:
    items: collections.deque[LogBatch | None] = dataclasses.field(default_factory=collections.deque)
    lines: int = 0
    chars: int = 0
    dropped: int = 0
    """Lines dropped since the reader last took from this stream."""


def _chars(batch: LogBatch) -> int:
    return sum(map(len, batch.lines))


class _StreamBuffers:
    """A bounded buffer per stream (host, log), drained round-robin; never blocks a writer.

    When a stream's buffer holds more than ``max_lines`` lines, its oldest lines are
    dropped and counted; the reader then gets a marker batch saying how many before that
    stream's next lines (the gap is exactly there). Round-robin: each ``get`` takes one
    batch from the next stream that has any, so a chatty host cannot starve a quiet one.
    Memory: at most ``max_lines`` lines and ``max_chars`` characters per stream (beyond
    that only the newest line, itself at most ``ssh.MAX_LINE``).
    """

    def __init__(self, max_lines: int, max_chars: int = PER_HOST_CHARS) -> None:
        if max_lines < 1:
            raise ValueError(f"per_host_lines must be 1 or more, got {max_lines}")
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._buffers: dict[_StreamKey, _Buffer] = {}
        self._ready: collections.deque[_StreamKey] = collections.deque()
        """Streams with something to read, in turn order (each at most once)."""
        self._wake = asyncio.Event()
        self.dropped = 0
        """Lines dropped so far, over every stream."""

    @property
    def lines(self) -> int:
        """Lines buffered now, over every stream."""
        return sum(b.lines for b in self._buffers.values())

    def put(self, key: _StreamKey, item: LogBatch | None) -> None:
        buffer = self._buffers.setdefault(key, _Buffer())
        if not buffer.items:
            self._ready.append(key)
            self._wake.set()
        buffer.items.append(item)
        if item is None:
            return
        buffer.lines += len(item.lines)
        buffer.chars += _chars(item)
        while buffer.lines > self.max_lines or (buffer.chars > self.max_chars and buffer.lines > 1):
            first = buffer.items[0]
            assert first is not None  # the end comes last, and lines are above it
            excess = buffer.lines - self.max_lines
            if len(first.lines) <= excess or (excess <= 0 and len(buffer.items) > 1):
                # The whole oldest batch: too many lines, or too many characters and a
                # newer batch to keep.
                buffer.items.popleft()
                kept: tuple[str, ...] = ()
            else:
                # Within the oldest (maybe only) batch: the excess lines, or one line at a
                # time while characters are over (only long lines get there).
                kept = first.lines[max(excess, 1) :]
                buffer.items[0] = dataclasses.replace(first, lines=kept)
            gone = first.lines[: len(first.lines) - len(kept)]
            buffer.lines -= len(gone)
            buffer.chars -= sum(map(len, gone))
            buffer.dropped += len(gone)
            self.dropped += len(gone)

    async def get(self) -> LogBatch | None:
        while not self._ready:
            self._wake.clear()
            await self._wake.wait()
        key = self._ready.popleft()
        buffer = self._buffers[key]
        item = buffer.items[0]
        if buffer.dropped and item is not None:
            # The dropped lines were the oldest: the gap is right before this batch.
            count, buffer.dropped = buffer.dropped, 0
            self._ready.appendleft(key)
            text = f"{item.source}: {count:,} lines dropped (the reader fell behind)"
            return LogBatch(item.colour, item.host, item.log, (text,), time.time(), marker=True)
        buffer.items.popleft()
        if item is not None:
            buffer.lines -= len(item.lines)
            buffer.chars -= _chars(item)
        if buffer.items:
            self._ready.append(key)
        return item


def _strip_options(tokens: list[str], with_value: Iterable[str]) -> tuple[list[str], str | None]:
    """Remove follow flags and ``-n X``-style options; return the rest and the follow flag."""
    valued = tuple(with_value)
    rest: list[str] = []
    follow: str | None = None
    skip = False
    for token in tokens:
        if skip:
            skip = False
            continue
        if token in _FOLLOW_FLAGS:
            follow = "-f" if token in ("-f", "--follow=descriptor") else "-F"
            continue
        if token in valued:
            skip = True
            continue
        if any(token.startswith(v + ("=" if v.startswith("--") else "")) for v in valued):
            continue
        rest.append(token)
    return rest, follow


def log_command(command: str, lines: int, follow: bool) -> tuple[str, bool]:
    """The command to run for a log, and whether it ends by itself.

    See the module docstring for the rules.
    """
    head, bar, tail_part = command.partition("|")
    try:
        tokens = shlex.split(head)
    except ValueError:
        return command, not follow
    if not tokens or tokens[0] not in ("tail", "journalctl"):
        return command, False
    rest, flag = _strip_options(tokens[1:], ("-n", "--lines"))
    if tokens[0] == "tail":
        options = ["-n", str(lines)] + ([flag or "-F"] if follow else [])
    else:
        options = ["-n", str(lines)] + (["-f"] if follow else ["--no-pager"])
    rebuilt = shlex.join([tokens[0], *options, *rest])
    if bar:
        rebuilt += f" |{tail_part}"
    return rebuilt, True


def pick_logs(
    hosts: list[tuple[Colour, HostConfig]], log_name: str | None
) -> list[tuple[Colour, HostConfig, str, str]]:
    """(colour, host, log name, command) for every stream to follow.

    Raises:
        ConfigError: no host has any log configured.
        UsageError: ``log_name`` is not a log of any of the hosts.
    """
    picked: list[tuple[Colour, HostConfig, str, str]] = []
    known: set[str] = set()
    for colour, host in hosts:
        known.update(host.logs)
        for name, command in host.logs.items():
            if log_name is None or name == log_name:
                picked.append((colour, host, name, command))
    if not known:
        colours = sorted({c.value for c, _ in hosts})
        where = ", ".join(f"env.{c}.logs" for c in colours) or "env.<colour>.logs"
        raise ConfigError(f"no log commands configured; add them under {where}")
    if not picked:
        raise UsageError(f"no log named {log_name!r}; configured: {', '.join(sorted(known))}")
    return picked


def choose_hosts(
    hosts: Iterable[tuple[Colour, HostConfig]],
    colours: Iterable[Colour],
    source: str | None = None,
) -> list[tuple[Colour, HostConfig]]:
    """The hosts of ``colours`` (in ``hosts``' order), or only the one named ``source``.

    ``source`` is ``colour/host`` (``blue/app1``, as lines are tagged); None: every host.
    """
    wanted = set(colours)
    return [
        (c, h)
        for c, h in hosts
        if c in wanted and (source is None or f"{c.value}/{h.name}" == source)
    ]


def log_names(hosts: Iterable[tuple[Colour, HostConfig]]) -> list[str]:
    """The names of the logs configured on any of ``hosts``, in config order, once each."""
    return list(dict.fromkeys(name for _, host in hosts for name in host.logs))


class LogFollower:
    """Streams the logs of many hosts as one sequence of lines; see ``follow_logs``.

    ``batches`` yields them as they arrive, a ``LogBatch`` at a time; ``stream`` (and
    iterating the follower) one ``LogLine`` at a time. At most ``queue_lines`` lines wait
    between the hosts and the reader; beyond that the remote commands are paused.
    """

    def __init__(
        self,
        pool: SshPool,
        hosts: list[tuple[Colour, HostConfig]],
        log_name: str | None = None,
        *,
        lines: int = 10,
        follow: bool = True,
        grep: re.Pattern[str] | None = None,
        hide_probes: bool = True,
        queue_lines: int = QUEUE_LINES,
        max_connecting: int = MAX_CONNECTING,
        snapshot_timeout: float = SNAPSHOT_TIMEOUT,
        retry_initial: float = 0.25,
        retry_max: float = 10.0,
        per_host_lines: int | None = None,
        per_host_chars: int = PER_HOST_CHARS,
    ) -> None:
        self.pool = pool
        self.streams = pick_logs(hosts, log_name)
        self.lines = lines
        self.follow = follow
        self.grep = grep
        self.hide_probes = hide_probes
        """Drop lines holding ``PROBE_MARK``: the agent's and console's health probes
        (their User-Agent), which otherwise make up most of a quiet access log."""
        self.snapshot_timeout = snapshot_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._queue = _LineQueue(queue_lines)
        self._buffers = (
            _StreamBuffers(per_host_lines, per_host_chars) if per_host_lines is not None else None
        )
        """Per-stream buffers that drop the oldest lines (instead of ``_queue``'s pause)."""
        self._connecting = asyncio.Semaphore(max_connecting)

    @property
    def buffered(self) -> int:
        """Lines waiting for the reader now."""
        return self._buffers.lines if self._buffers is not None else self._queue.lines

    @property
    def dropped(self) -> int:
        """Lines dropped so far because the reader fell behind (only with per_host_lines)."""
        return self._buffers.dropped if self._buffers is not None else 0

    async def _get(self) -> LogBatch | None:
        if self._buffers is not None:
            return await self._buffers.get()
        return await self._queue.get()

    async def _send(
        self, colour: Colour, host: HostConfig, log: str, item: LogBatch | None
    ) -> None:
        """Queue a batch (or a stream's end): dropping the oldest, or waiting for room."""
        if self._buffers is not None:
            self._buffers.put((colour.value, host.name, log), item)
        elif item is None:
            await self._queue.put(None)
        else:
            await self._put(item)

    async def batches(self) -> AsyncGenerator[LogBatch, None]:
        """Yield batches from every stream until all end (never, with follow) or until closed.

        A stream's batches keep their order; batches of different streams interleave.
        """
        tasks = [asyncio.create_task(self._run(*stream)) for stream in self.streams]
        try:
            running = len(tasks)
            while running:
                item = await self._get()
                if item is None:
                    running -= 1
                    continue
                yield item
            for task in tasks:
                task.result()  # surfaces a bug in a stream task instead of hiding it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stream(self) -> AsyncGenerator[LogLine, None]:
        """Yield lines from every stream until all end (never, with follow) or until closed."""
        batches = self.batches()
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for line in batch.log_lines():
                    yield line

    def __aiter__(self) -> AsyncGenerator[LogLine, None]:
        return self.stream()

    async def _put(self, batch: LogBatch) -> None:
        """Queue a batch, in pieces if it holds more lines than the whole queue."""
        limit = self._queue.max_lines
        if len(batch.lines) <= limit:
            await self._queue.put(batch)
            return
        for start in range(0, len(batch.lines), limit):
            piece = batch.lines[start : start + limit]
            await self._queue.put(dataclasses.replace(batch, lines=piece))

    def _wanted(self, lines: tuple[str, ...]) -> tuple[str, ...]:
        if self.hide_probes:
            lines = tuple(text for text in lines if PROBE_MARK not in text)
        return lines

    async def _emit(self, colour: Colour, host: HostConfig, log: str, batch: LineBatch) -> None:
        lines = self._wanted(batch.lines)
        if not lines:
            return
        if self.grep is not None:
            search = self.grep.search
            lines = tuple(text for text in lines if search(text))
            if not lines:
                return
        await self._send(
            colour,
            host,
            log,
            LogBatch(colour, host.name, log, lines, batch.at, False, batch.stream),
        )

    async def _marker(self, colour: Colour, host: HostConfig, log: str, text: str) -> None:
        await self._send(
            colour, host, log, LogBatch(colour, host.name, log, (text,), time.time(), marker=True)
        )

    async def _run(self, colour: Colour, host: HostConfig, log: str, command: str) -> None:
        bug: Exception | None = None
        try:
            if self.follow:
                await self._follow(colour, host, log, command)
            else:
                await self._snapshot(colour, host, log, command)
        except ConsoleError as e:
            # Fatal for this stream (host key, authentication, config); the others go on.
            await self._marker(colour, host, log, f"{colour.value}/{host.name} {log}: {e}")
        except Exception as e:
            bug = e  # re-raised by the consumer (task.result()) once every stream is done
        # The consumer counts these sentinels to know when every stream has ended; one
        # holds no line, so it is queued even when the queue is full.
        await self._send(colour, host, log, None)
        if bug is not None:
            raise bug

    async def _snapshot(self, colour: Colour, host: HostConfig, log: str, command: str) -> None:
        """Without follow: the last N lines, then the stream ends."""
        backlog = self.lines * PROBE_BACKLOG_FACTOR if self.hide_probes else self.lines
        cmd, ends = log_command(command, backlog, follow=False)
        kept: collections.deque[LineBatch] = collections.deque()
        held = 0  # lines in kept: the last ``self.lines`` and fewer than one batch more
        exit_status: int | None = 0
        try:
            async with self._connecting:
                timeout = None if ends else self.snapshot_timeout
                items = self.pool.stream_batches(host, cmd, timeout=timeout)
                async with contextlib.aclosing(items):
                    async for item in items:
                        if isinstance(item, CommandExit):
                            exit_status = item.exit_status
                            continue
                        # Probes dropped before counting, so the last N are the app's.
                        item = dataclasses.replace(item, lines=self._wanted(item.lines))
                        if not item.lines:
                            continue
                        kept.append(item)
                        held += len(item.lines)
                        while kept and held - len(kept[0].lines) >= self.lines:
                            held -= len(kept.popleft().lines)
        except CommandTimeout:
            pass  # expected for commands that never end by themselves
        except ConsoleError as e:
            if isinstance(e, _FATAL):
                raise
            await self._marker(colour, host, log, f"{colour.value}/{host.name} {log}: {e}")
            return
        if kept and held > self.lines:
            first = kept.popleft()
            kept.appendleft(dataclasses.replace(first, lines=first.lines[held - self.lines :]))
        for batch in kept:
            await self._emit(colour, host, log, batch)
        if exit_status not in (0, None):
            await self._marker(
                colour, host, log, f"{colour.value}/{host.name} {log}: exit status {exit_status}"
            )

    async def _follow(self, colour: Colour, host: HostConfig, log: str, command: str) -> None:
        """With follow: stream forever, reconnecting with backoff when the stream drops."""
        source = f"{colour.value}/{host.name}"
        backlog = self.lines
        backoff = Backoff(self.retry_initial, self.retry_max)
        down_since: float | None = None
        while True:
            cmd, _ = log_command(command, backlog, follow=True)
            reason: str | None = None
            try:
                async with self._connecting:
                    await self.pool.connection(host)
                if down_since is not None:
                    took = time.monotonic() - down_since
                    await self._marker(
                        colour, host, log, f"{source} reconnected after {took:.1f} s"
                    )
                    down_since = None
                # Closed here, not by the garbage collector, when this task is cancelled:
                # closing stops the remote command.
                items = self.pool.stream_batches(host, cmd)
                async with contextlib.aclosing(items):
                    async for item in items:
                        if isinstance(item, CommandExit):
                            if item.exit_status is not None:
                                reason = f"{log} command exited with status {item.exit_status}"
                            continue
                        backoff.reset()
                        await self._emit(colour, host, log, item)
            except _FATAL:
                raise
            except ConsoleError as e:
                reason = str(e)
            # Resume without backlog: the lines already shown must not repeat.
            backlog = 0
            if down_since is None:
                down_since = time.monotonic()
                await self._marker(colour, host, log, f"{source} disconnected, retrying")
                if reason:
                    await self._marker(colour, host, log, reason)
            await asyncio.sleep(backoff.next())


def follow_logs(
    pool: SshPool,
    hosts: list[tuple[Colour, HostConfig]],
    log_name: str | None,
    *,
    lines: int,
    follow: bool,
    grep: re.Pattern[str] | None,
    hide_probes: bool = True,
    per_host_lines: int | None = None,
) -> AsyncGenerator[LogLine, None]:
    """Multiplex the logs of ``hosts`` into one stream of ``LogLine`` (see ``LogFollower``).

    Raises:
        ConfigError: the hosts have no logs configured.
        UsageError: ``log_name`` names no configured log.
    """
    follower = LogFollower(
        pool,
        hosts,
        log_name,
        lines=lines,
        follow=follow,
        grep=grep,
        hide_probes=hide_probes,
        per_host_lines=per_host_lines,
    )
    return follower.stream()
