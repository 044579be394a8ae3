"""One TCP (or TLS) connection as buffered reads and writes with back-pressure.

The proxy's own small replacement for ``asyncio.StreamReader``/``StreamWriter``: it can
say whether bytes are waiting unread (an idle pooled connection with leftover bytes must
not be reused), put bytes back after a parser read too far, and time out a single read
with one timer instead of a cancel scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

_READ_HIGH_WATER = 256 * 1024
"""Unread bytes at which the socket stops being read (the peer is then slowed by TCP)."""


class Channel(asyncio.Protocol):
    """A connection's protocol object, awaited by exactly one reader task."""

    __slots__ = (
        "_chunks",
        "_drain",
        "_eof",
        "_loop",
        "_read_paused",
        "_size",
        "_waiter",
        "_write_paused",
        "idle_since",
        "lost",
        "on_event",
        "response",
        "transport",
    )

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._read_paused = False
        self._write_paused = False
        self.idle_since = 0.0
        """When this connection was last returned to an idle pool (monotonic)."""
        self.on_event: Callable[[], None] | None = None
        """Called after data, an end or a loss, for code that waits without a task."""
        self.response: object | None = None
        """An upstream connection's response reader, kept between responses."""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _READ_HIGH_WATER and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep the write side open: a client that half-closed after its request still
        # gets its answer. TLS has no half-close (asyncio warns when asked for one).
        transport = self.transport
        return transport is None or transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.lost = True
        self._wake()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        on_event = self.on_event
        if on_event is not None:
            on_event()

    # -- reading ---------------------------------------------------------------------------

    @property
    def at_eof(self) -> bool:
        """Whether the peer has finished sending and nothing is left unread."""
        return self._eof and not self._size

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return self._size

    async def read(self, within: float | None = None) -> bytes:
        """Everything received so far, waiting for some; ``b""`` at end of stream.

        Raises:
            TimeoutError: nothing arrived within ``within`` seconds.
        """
        if not self._size:
            if self._eof:
                return b""
            await self._wait(within)
            if not self._size:
                return b""
        return self.take()

    def take(self) -> bytes:
        """What is buffered right now, without waiting (``b""`` when nothing is)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    def peek(self) -> bytes:
        """What is buffered, left in place."""
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        data = b"".join(chunks)
        self._chunks = [data] if data else []
        return data

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of what is buffered (a parser read past its message)."""
        if data:
            self._chunks.insert(0, data)
            self._size += len(data)

    async def _wait(self, within: float | None) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = None
        if within is not None:
            timer = self._loop.call_later(within, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes; a closed connection drops them (its reader sees the end)."""
        transport = self.transport
        if transport is not None and not self.lost:
            transport.write(data)

    async def drain(self, within: float | None = None) -> None:
        """Wait while the peer is not reading fast enough.

        Raises:
            ConnectionResetError: the connection is gone.
            TimeoutError: the peer read nothing for ``within`` seconds.
        """
        if self.lost:
            raise ConnectionResetError("connection lost")
        if not self._write_paused:
            return
        drain = self._loop.create_future()
        self._drain = drain
        timer = None
        if within is not None:
            timer = self._loop.call_later(within, _expire, drain)
        try:
            await drain
        finally:
            self._drain = None
            if timer is not None:
                timer.cancel()
        if self.lost:
            raise ConnectionResetError("connection lost")

    @property
    def write_backlog(self) -> int:
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    # -- lifetime --------------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Open, nothing unread, nothing announced as the end: fit for another exchange."""
        transport = self.transport
        return (
            not self._eof
            and not self._size
            and transport is not None
            and not transport.is_closing()
        )

    def peer(self) -> str:
        transport = self.transport
        name = transport.get_extra_info("peername") if transport is not None else None
        return str(name[0]) if name else "unknown"

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping unsent bytes (a reset tells the peer it went wrong)."""
        if self.transport is not None:
            self.transport.abort()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
