"""The fast lane: the common exchange handled in callbacks, without a task.

Most requests are plain: a whole head, no body or a small one already here, an idle
pooled connection to the live colour, and a small response that arrives whole. For
those, the proxy parses, forwards and answers from the connections' own ``data_received``
callbacks; a task per connection costs several times what the HTTP work does. Anything
else - a body still arriving, Expect, Upgrade, no idle connection, a 1xx, a large or
close-delimited response, an upstream that closed, a retry - is handed to the full path
(:mod:`console.core.proxy.forward`) in a task, at the point reached, and the connection
comes back to the fast lane once it is idle again. Timeouts here are checked by the
listener's reaper (one pass over all connections, a few times a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from console.core.proxy.channel import Channel
from console.core.proxy.forward import (
    BUFFER_BODY,
    Forwarder,
    Route,
    error_response,
    hung_on,
    release,
)
from console.core.proxy.pool import Upstream
from console.core.proxy.request import (
    IDEMPOTENT,
    LAST_CHUNK,
    HttpError,
    RequestHead,
    RequestReader,
    chunk,
    upstream_head,
)
from console.core.proxy.response import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    UNTIL_CLOSE,
    QuickHead,
    Response,
    UpstreamFailed,
    quick_head,
)

_CRLF2 = b"\r\n\r\n"
_now = time.monotonic  # the clock of every deadline here and in the reaper
_PIPELINE_PAUSE = 16
"""Requests queued behind one in flight before the client's socket stops being read."""
_HIGH_WATER = 256 * 1024
# The Connection header a response gets, by (keep-alive, HTTP/1.0 client).
_CONNECTION = {
    (False, False): b"\r\nConnection: close",
    (False, True): b"\r\nConnection: close",
    (True, False): b"",
    (True, True): b"\r\nConnection: keep-alive",
}

Continuation = Callable[[], Awaitable[bool]]
GoSlow = Callable[["ClientConn", Continuation | None], None]


class ClientConn(Channel):
    """A client connection: its parser and where its current request stands."""

    __slots__ = ("active_at", "flight", "lane", "paused", "peer_b", "reader", "task", "trusted")

    def __init__(self, lane: FastLane) -> None:
        super().__init__()
        self.lane = lane
        self.reader: RequestReader | None = None
        self.peer_b = b""
        self.trusted = False
        self.task: asyncio.Task[None] | None = None
        """The full path's task while it has the connection; None in the fast lane."""
        self.flight: Flight | None = None
        self.active_at = 0.0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.lane.accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.task is not None:
            super().data_received(data)
        else:
            self.lane.client_data(self, data)

    def eof_received(self) -> bool:
        keep_open = super().eof_received()
        if self.task is None and self.flight is None:
            self.close()  # nothing in flight: nothing more to answer
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lane.lost(self)


class Flight:
    """One request in the fast lane, sent and waiting for its response."""

    __slots__ = ("body", "chan", "conn", "deadline", "head", "head_end", "lane", "mode", "quick",
                 "resp", "sent", "up")  # fmt: skip

    def __init__(
        self, lane: FastLane, conn: ClientConn, head: RequestHead, body: bytes, up: Upstream,
        chan: Channel, deadline: float,
    ) -> None:  # fmt: skip
        self.lane = lane
        self.conn = conn
        self.head = head
        self.body = body
        self.up = up
        self.chan = chan
        self.deadline = deadline
        self.resp: Response | None = None
        self.mode = NO_BODY
        self.quick: QuickHead | None = None
        self.head_end = 0
        self.sent = _now()
        """When the request went upstream; 0 once the first answer byte was timed."""

    def __call__(self) -> None:
        self.lane.upstream_event(self)


class FastLane:
    """Dispatches plain requests and relays whole responses from callbacks."""

    def __init__(
        self, fwd: Forwarder, proto: bytes, *, max_head: int,
        accepted: Callable[[ClientConn], None], go_slow: GoSlow,
        forget: Callable[[ClientConn], None], waiting: dict[ClientConn, None],
    ) -> None:  # fmt: skip
        self.fwd = fwd
        self.proto = proto
        self.max_head = max_head
        self.accepted = accepted
        self.go_slow = go_slow
        self.forget = forget
        self.waiting = waiting
        self.closing = False
        self._loop = asyncio.get_running_loop()

    # -- client side ----------------------------------------------------------------------

    def client_data(self, conn: ClientConn, data: bytes) -> None:
        reader = conn.reader
        if reader is None:
            return
        conn.active_at = _now()
        reader.feed(data)
        if reader.failed is not None and conn.transport is not None:
            conn.transport.pause_reading()  # nothing after a malformed request is read
        if conn.flight is None:
            self.dispatch(conn)
        elif reader.queued > _PIPELINE_PAUSE and not conn.paused and conn.transport:
            conn.paused = True
            conn.transport.pause_reading()

    def refuse(self, conn: ClientConn, e: HttpError) -> None:
        self.fwd.tally.note("bad_request", str(e))
        conn.write(error_response(e.status, str(e), True))
        conn.close()

    def dispatch(self, conn: ClientConn) -> None:
        """Start the next queued request: here when it is plain, else on the full path."""
        reader = conn.reader
        if reader is None or conn.lost:
            return
        if self.closing:
            conn.close()
            return
        try:
            taken = reader.take_simple(BUFFER_BODY)
        except HttpError as e:
            self.refuse(conn, e)
            return
        if taken == "wait":
            if reader.failed is not None:
                self.refuse(conn, reader.failed)
            elif conn.at_eof:
                conn.close()
            return
        if isinstance(taken, str):
            self.go_slow(conn, None)
            return
        head, body = taken
        fwd = self.fwd
        routes = fwd.routes
        up = routes.pick(routes.live)
        chan = up.take_idle(head.method in IDEMPOTENT) if up is not None else None
        if up is None or chan is None:
            route = Route(fwd, head.method in IDEMPOTENT, True)
            self.go_slow(conn, lambda: fwd.forward(head, body, route, reader, conn, conn.peer_b,
                                                   self.proto, conn.trusted))  # fmt: skip
            return
        self.waiting.pop(conn, None)
        fwd.counters[up.colour].requests += 1
        out = upstream_head(head, conn.peer_b, self.proto, conn.trusted, up.host_header)
        chan.write(out + body if body else out)
        flight = Flight(self, conn, head, body, up, chan,
                        _now() + fwd.timeouts.first_byte)  # fmt: skip
        conn.flight = flight
        chan.on_event = flight

    def lost(self, conn: ClientConn) -> None:
        flight = conn.flight
        if flight is not None:
            conn.flight = None
            flight.chan.on_event = None
            flight.chan.abort()  # the answer has nobody to go to
        if conn.task is None:
            self.forget(conn)

    # -- upstream side --------------------------------------------------------------------

    def upstream_event(self, flight: Flight) -> None:
        conn = flight.conn
        chan = flight.chan
        if conn.flight is not flight:
            chan.on_event = None
            return
        resp = flight.resp
        if flight.sent and chan.buffered:
            self.fwd.counters[flight.up.colour].observe(_now() - flight.sent)
            flight.sent = 0.0
        if resp is None:
            if self._quick(flight):
                return
            resp = self._head(flight)
            if resp is None:
                return
        if flight.mode == NO_BODY:
            self._finish(flight, b"")
            return
        try:
            resp.start_body()
        except UpstreamFailed:
            self._handover(flight)
            return
        whole = resp.whole_body_buffered()
        if whole is not None:
            self._finish(flight, whole)
        elif resp.held > BUFFER_BODY or chan.at_eof or chan.lost:
            self._handover(flight)  # large, or ended early: the full path streams or fails
        else:
            flight.deadline = _now() + self.fwd.timeouts.first_byte

    def _quick(self, flight: Flight) -> bool:
        """The plainest response (see ``quick_head``) relayed from bytes; False when it is
        not one (the parser path takes over)."""
        chan = flight.chan
        quick = flight.quick
        if quick is None and not chan.buffered:
            return False
        buf = chan.peek() if chan.buffered else b""
        if quick is None:
            quick = self._quick_head(flight, buf)
            if quick is None:
                return False
        status = quick.status
        no_body = flight.head.method == b"HEAD" or status in (204, 304)
        need = flight.head_end + (0 if no_body else quick.length)
        if len(buf) < need:
            if chan.at_eof or chan.lost:
                self._fail(flight, 502, "closed in the response body")
            else:
                flight.deadline = _now() + self.fwd.timeouts.first_byte
            return True
        chan.take()
        head = flight.head
        keep = head.keep_alive
        flight.conn.write(
            b"".join((
                quick.kept,
                b"\r\n",
                self.fwd.colour_header(flight.up.colour),
                b"" if status == 204 else b"\r\nContent-Length: %d" % quick.length,
                _CONNECTION[keep, head.version == "1.0"],
                _CRLF2,
                buf[flight.head_end : need],
            ))
        )  # fmt: skip
        chan.on_event = None
        if quick.keep_alive and len(buf) == need:
            flight.up.give_back(chan)
        else:
            chan.close()  # bytes after the response, or the upstream closes: not reusable
        self._done(flight.conn, keep)
        return True

    def _quick_head(self, flight: Flight, buf: bytes) -> QuickHead | None:
        """The response head in ``buf`` when it is whole and quick (noted in ``flight``)."""
        end = buf.find(_CRLF2)
        if end < 0:
            return None
        quick = quick_head(buf[: end + 4])
        if quick is None:
            return None
        if quick.status >= 500 and self.fwd.retry_on_5xx:
            return None  # maybe retried on the stand-by: the parser path decides
        if quick.length > BUFFER_BODY and flight.head.method != b"HEAD":
            return None
        flight.quick = quick
        flight.head_end = end + 4
        return quick

    def _head(self, flight: Flight) -> Response | None:
        """The response head once it is whole; None while waiting or after a hand-over."""
        chan = flight.chan
        if not chan.buffered:
            if chan.at_eof or chan.lost:
                self._closed_early(flight)
            return None
        buf = chan.peek()
        end = buf.find(_CRLF2)
        if end < 0:
            if len(buf) > self.max_head or chan.at_eof or chan.lost:
                self._fail(flight, 502, "sent a broken response head")
            return None
        end += 4
        head = flight.head
        resp = Response.on(chan, head.method)
        chan.take()
        chan.unread(buf[end:])
        try:
            resp.feed_head(buf[:end])
        except UpstreamFailed:
            self._fail(flight, 502, "sent a malformed response head")
            return None
        flight.resp = resp
        fwd = self.fwd
        if resp.status >= 500 and fwd.retry_on_5xx and head.method in IDEMPOTENT:
            route = Route(fwd, True, True)
            if route.may_retry_5xx(flight.up.colour):
                chan.close()
                self._retry(flight, route)
                return None
        mode = resp.framing(head.method, head.http10)
        if (
            resp.status < 200
            or resp.status == 101
            or mode == UNTIL_CLOSE
            or (mode != NO_BODY and resp.until_close)
        ):
            self._handover(flight)
            return None
        flight.mode = mode
        return resp

    def _closed_early(self, flight: Flight) -> None:
        """The pooled connection ended before a byte of an answer (closed while idle, or
        the app died): an idempotent request goes again, anything else gets 502."""
        flight.chan.abort()
        head = flight.head
        fwd = self.fwd
        if head.method not in IDEMPOTENT:
            self._fail(flight, 502, "closed without answering")
            return
        fwd.counters[flight.up.colour].retries += 1
        route = Route(fwd, True, True)
        route.closed_early(flight.up, reused=True)
        self._retry(flight, route)

    def _retry(self, flight: Flight, route: Route) -> None:
        """Send the request again on the full path, along ``route``."""
        conn = flight.conn
        reader = conn.reader
        assert reader is not None
        fwd = self.fwd
        self._slow(flight, lambda: fwd.forward(flight.head, flight.body, route, reader, conn,
                                               conn.peer_b, self.proto, conn.trusted))  # fmt: skip

    def leave_hung(self, flight: Flight) -> None:
        """Like ``Forwarder.leave_hung``, for a request in the fast lane."""
        if (
            hung_on(flight.up, self.fwd.routes.live)
            and flight.resp is None
            and flight.quick is None
            and not flight.chan.buffered
            and flight.head.method in IDEMPOTENT
        ):
            flight.chan.on_event = None
            flight.chan.abort()
            route = Route(self.fwd, True, True)
            self.fwd.counters[route.live].retries += 1
            self._retry(flight, route)

    def timed_out(self, flight: Flight) -> None:
        self._fail(flight, 504, "timed out")

    def _fail(self, flight: Flight, status: int, what: str) -> None:
        flight.chan.on_event = None
        flight.chan.abort()
        conn = flight.conn
        keep = self.fwd._failed(flight.head, flight.body, conn, flight.up, status, what)
        self._done(conn, keep)

    def _handover(self, flight: Flight) -> None:
        """Let the full path finish an exchange whose response head is parsed."""
        resp = flight.resp
        assert resp is not None
        conn = flight.conn
        reader = conn.reader
        assert reader is not None
        fwd = self.fwd
        self._slow(flight, lambda: fwd.resume(flight.head, flight.body, resp, flight.chan,
                                              flight.up, conn, reader))  # fmt: skip

    def _slow(self, flight: Flight, then: Continuation) -> None:
        flight.chan.on_event = None
        flight.conn.flight = None
        self.go_slow(flight.conn, then)

    def _finish(self, flight: Flight, body: bytes) -> None:
        resp = flight.resp
        assert resp is not None
        conn = flight.conn
        head = flight.head
        mode = flight.mode
        keep = head.keep_alive
        out = resp.client_head(self.fwd.colour_header(flight.up.colour), mode, keep, head.http10)
        if mode == CHUNKED:
            out += (chunk(body) if body else b"") + LAST_CHUNK
        elif mode == LENGTH:
            out += body
        conn.write(out)
        flight.chan.on_event = None
        release(resp, mode, flight.chan, flight.up)
        self._done(conn, keep)

    def _done(self, conn: ClientConn, keep: bool) -> None:
        conn.flight = None
        if not keep or self.closing or conn.lost:
            conn.close()
            return
        conn.active_at = _now()
        self.waiting[conn] = None
        if conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        if conn.write_backlog > _HIGH_WATER:
            self.go_slow(conn, None)  # a client not reading its answers: the full path drains
            return
        reader = conn.reader
        if (reader is not None and (reader.queued or reader.failed)) or conn.at_eof:
            self.dispatch(conn)  # pipelined requests, or a half-closed client to close
