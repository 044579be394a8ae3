"""One request forwarded: which upstream, when a retry is safe, how the answer goes back.

Retry policy, in the order it applies:

- nothing was sent (connect refused or timed out): the upstream is marked down (passive
  health) and the next available host of the same colour is tried, for every method;
- the request went out and the connection ended before a byte of the response came
  back (the app crashed, a reset): only an idempotent request with a buffered body is
  sent again - on a fresh connection to the same host when the dead connection came from
  the pool (the app may simply have closed it while idle), else on another host of the
  colour or, when it has none left, on the stand-by. Anything else gets 502 and is never
  sent twice: a POST may have been received;
- the live colour has no available host: idempotent requests go once to the stand-by,
  others get 502 (their writes must land on the colour the control plane chose);
- with ``retry_on_5xx``, an idempotent request with a buffered body that got a 5xx from
  the live colour is retried once on the stand-by;
- no byte of the response within ``first_byte_timeout``: 504, not retried (the app may
  still be working on it).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from console.core.models import Colour
from console.core.proxy.channel import Channel
from console.core.proxy.pool import RouteTable, Upstream
from console.core.proxy.request import (
    IDEMPOTENT,
    LAST_CHUNK,
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
    Response,
    UpstreamClosed,
    UpstreamFailed,
)
from console.core.proxy.tally import ErrorTally
from console.core.proxy.tunnel import Tunnels

BUFFER_BODY = 64 * 1024
"""Request bodies up to this size are read before forwarding, so they can be replayed."""
_HIGH_WATER = 256 * 1024
_MAX_ATTEMPTS = 4
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

PassiveDownCallback = Callable[[Upstream, str], None]

_REASONS = {400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout",
            417: "Expectation Failed", 431: "Request Header Fields Too Large",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
            505: "HTTP Version Not Supported"}  # fmt: skip


def error_response(status: int, message: str, close: bool) -> bytes:
    """A short plain-text answer made by the proxy itself."""
    body = f"bgconsole proxy: {message}\n".encode()
    conn = b"Connection: close\r\n" if close else b""
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + conn
        + b"X-BG-Env: none\r\n\r\n"
        + body
    )


def hung_on(up: Upstream, live: Colour) -> bool:
    """Whether requests waiting on ``up`` should move: down, and not the live colour."""
    return up.colour is not live and not up.available


def release(resp: Response, mode: int, chan: Channel, up: Upstream) -> None:
    """An upstream connection after a complete exchange: pooled when it can carry another."""
    if resp.keep_alive and (mode == NO_BODY or resp.complete) and not resp.trailing:
        up.give_back(chan)
    else:
        chan.close()


class ClientTimeout(Exception):
    """The client stopped sending its body, or reading the response."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds the proxy waits, per step (each a bound on one wait, not on a whole body)."""

    head: float = 10.0
    """A request head, from its first byte (slow heads are how slowloris works)."""
    body: float = 30.0
    """Each read of a request body, and each write to a client that stopped reading."""
    idle: float = 75.0
    """A keep-alive client connection between requests."""
    connect: float = 2.0
    """Connecting to an upstream."""
    first_byte: float = 60.0
    """The first byte of a response after the request was sent, and each later stall."""


# Upper bounds (seconds) of the upstream latency histogram: Prometheus' defaults from
# 1 ms, where a local app's answers fall.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class ColourCounters:
    requests: int = 0
    errors: int = 0
    retries: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Responses per latency bucket (the last one is past every bound), not cumulative."""
    latency_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        """One upstream's time to the first byte of its answer."""
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class Forwarder:
    """Sends requests upstream with the retry policy above; shared by all connections."""

    def __init__(
        self,
        routes: RouteTable,
        timeouts: Timeouts,
        *,
        max_head: int,
        retry_on_5xx: bool,
        tunnels: Tunnels,
        tally: ErrorTally,
        on_passive_down: PassiveDownCallback | None,
    ) -> None:
        self.routes = routes
        self.timeouts = timeouts
        self.max_head = max_head
        self.retry_on_5xx = retry_on_5xx
        self.tunnels = tunnels
        self.tally = tally
        self.on_passive_down = on_passive_down
        self.counters = {c: ColourCounters() for c in Colour}
        self.awaiting: dict[Channel, Upstream] = {}
        """Upstream connections carrying a replayable request, no answer byte yet."""
        self.switched: set[Channel] = set()
        """Of those, the ones closed because the live colour moved away from theirs."""
        self.unroutable = 0
        self._colour_headers = {c: b"X-BG-Env: " + c.value.encode() for c in Colour}

    def colour_header(self, colour: Colour) -> bytes:
        return self._colour_headers[colour]

    async def _read_body(self, head: RequestHead, reader: RequestReader) -> bytes:
        parts: list[bytes] = []
        try:
            while (piece := await reader.body(self.timeouts.body)) is not None:
                parts.append(piece)
        except TimeoutError:
            raise ClientTimeout from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _take_body(self, head: RequestHead, reader: RequestReader) -> bytes | None:
        """The whole body when it is small enough to keep for a retry; None: streamed."""
        if not head.has_body:
            await reader.body(self.timeouts.body)  # the end of a body-less message
            return b""
        if head.expect_continue or head.chunked or head.length > BUFFER_BODY:
            return None  # streamed once the upstream is chosen: never replayable
        return await self._read_body(head, reader)

    async def handle(
        self, head: RequestHead, reader: RequestReader, client: Channel, peer: bytes,
        proto: bytes, trusted: bool,
    ) -> bool:  # fmt: skip
        """Forward one request and relay its answer; True when the client may send more.

        Raises:
            HttpError: the request body is malformed (nothing was answered yet).
            ClientGone: the client went away.
            ClientTimeout: the client stalled while sending its body.
        """
        body = await self._take_body(head, reader)
        route = Route(self, head.method in IDEMPOTENT, body is not None)
        return await self.forward(head, body, route, reader, client, peer, proto, trusted)

    async def forward(
        self, head: RequestHead, body: bytes | None, route: Route, reader: RequestReader,
        client: Channel, peer: bytes, proto: bytes, trusted: bool,
    ) -> bool:  # fmt: skip
        """Send a request whose body is read (or to be streamed) along ``route``."""
        for _attempt in range(_MAX_ATTEMPTS):
            up = route.next()
            if up is None:
                break
            colour = up.colour
            got = await self._channel(up, route)
            if got is None:
                route.tried.append(up)
                continue  # nothing was sent: safe to try elsewhere, for every method
            chan, reused = got
            counters = self.counters[colour]
            counters.requests += 1
            if route.replayable:
                self.awaiting[chan] = up
            sent = time.monotonic()
            try:
                resp = await self._exchange(head, body, reader, client, chan, up, peer, proto,
                                            trusted)  # fmt: skip
                counters.observe(time.monotonic() - sent)
            except UpstreamClosed:
                chan.abort()
                if chan in self.switched:
                    route.follow_switch()  # the old colour hung: the new live one answers
                    continue
                if route.replayable:
                    counters.retries += 1
                    route.closed_early(up, reused)
                    continue
                return self._failed(head, body, client, up, 502, "closed without answering")
            except TimeoutError:
                chan.abort()
                return self._failed(head, body, client, up, 504, "timed out")
            except (UpstreamFailed, OSError) as e:
                chan.abort()
                return self._failed(head, body, client, up, 502, f"failed: {e}")
            except BaseException:
                chan.abort()  # the client's side failed mid-request: the caller answers
                raise
            finally:
                self.awaiting.pop(chan, None)
                self.switched.discard(chan)
            if resp.status >= 500 and self.retry_on_5xx and route.may_retry_5xx(colour):
                chan.close()
                continue
            return await self._relay(head, resp, colour, chan, up, client, reader)
        self.unroutable += 1
        reason = (
            "no healthy upstream" if route.idempotent else "live colour has no healthy upstream"
        )
        return self._fail(head, body, client, 502, f"{reason} ({route.live} live)")

    def leave_hung(self) -> None:
        """Idempotent requests waiting for the first byte of an answer from a host that is
        down, of a colour no longer live (a hung app, failed over): sent to the live
        colour. A slow but healthy host after a planned switch keeps its requests."""
        live = self.routes.live
        for chan, up in list(self.awaiting.items()):
            if hung_on(up, live) and not chan.buffered:
                self.switched.add(chan)
                chan.abort()

    def _failed(
        self, head: RequestHead, body: bytes | None, client: Channel, up: Upstream, status: int,
        what: str,
    ) -> bool:  # fmt: skip
        self.counters[up.colour].errors += 1
        where = f"upstream {up.name} ({up.colour})"
        self.tally.note(f"upstream_{status}", f"{where} {what} ({head.method.decode()})")
        return self._fail(head, body, client, status, f"{where} {what}")

    async def _channel(self, up: Upstream, route: Route) -> tuple[Channel, bool] | None:
        """A pooled connection to ``up`` (unless a fresh one is due) or a new one, and
        whether it was pooled; None when connecting failed."""
        chan = None if route.fresh_only else up.take_idle(route.idempotent)
        route.fresh_only = False
        if chan is not None:
            return chan, True
        chan = await self._connect(up)
        return None if chan is None else (chan, False)

    async def _connect(self, up: Upstream) -> Channel | None:
        """A new connection to ``up``; on failure it is marked down and None returned."""
        try:
            return await up.connect(self.timeouts.connect)
        except TimeoutError:
            reason = "connect timed out"
        except OSError as e:
            reason = f"connect failed: {e or type(e).__name__}"
        self.routes.mark_down(up)
        if self.on_passive_down is not None:
            self.on_passive_down(up, reason)
        return None

    def _fail(
        self, head: RequestHead, body: bytes | None, client: Channel, status: int, message: str
    ) -> bool:
        """Answer with an error; False (close) when a streamed body may be left unread."""
        close = not head.keep_alive or body is None or head.upgrade is not None
        client.write(error_response(status, message, close))
        return not close

    async def _exchange(
        self, head: RequestHead, body: bytes | None, reader: RequestReader, client: Channel,
        chan: Channel, up: Upstream, peer: bytes, proto: bytes, trusted: bool,
    ) -> Response:  # fmt: skip
        """Send the request and read the response head (interim 1xx answers dropped)."""
        out = upstream_head(head, peer, proto, trusted, up.host_header)
        if body is not None:
            chan.write(out + body if body else out)
        else:
            chan.write(out)
            if head.expect_continue:
                # The upstream is chosen and connected: the client may send its body.
                client.write(_CONTINUE)
            await self._stream_body(head, reader, chan)
        resp = Response.on(chan, head.method)
        await self._final_head(resp)
        return resp

    async def _final_head(self, resp: Response) -> None:
        """Read heads until the final one: 100 Continue (the proxy sent its own) and 103
        Early Hints are dropped."""
        t = self.timeouts
        while True:
            await resp.read_head(self.max_head, t.first_byte, t.first_byte)
            if resp.status >= 200 or resp.status == 101:
                return
            resp.reset()

    async def resume(
        self, head: RequestHead, body: bytes, resp: Response, chan: Channel, up: Upstream,
        client: Channel, reader: RequestReader,
    ) -> bool:  # fmt: skip
        """Finish an exchange the fast lane started: its response head is parsed."""
        try:
            if resp.status < 200 and resp.status != 101:
                resp.reset()
                await self._final_head(resp)
        except TimeoutError:
            chan.abort()
            return self._failed(head, body, client, up, 504, "timed out")
        except (UpstreamClosed, UpstreamFailed, OSError) as e:
            chan.abort()
            return self._failed(head, body, client, up, 502, f"failed: {e or type(e).__name__}")
        return await self._relay(head, resp, up.colour, chan, up, client, reader)

    async def _stream_body(self, head: RequestHead, reader: RequestReader, chan: Channel) -> None:
        """Copy a large or chunked request body upstream, re-framed."""
        chunked = head.chunked
        timeout = self.timeouts.body
        while True:
            try:
                piece = await reader.body(timeout)
            except TimeoutError:
                raise ClientTimeout from None
            if piece is None:
                break
            chan.write(chunk(piece) if chunked else piece)
            if chan.write_backlog > _HIGH_WATER:
                await chan.drain(self.timeouts.first_byte)
        if chunked:
            chan.write(LAST_CHUNK)

    async def _relay(
        self, head: RequestHead, resp: Response, colour: Colour, chan: Channel, up: Upstream,
        client: Channel, reader: RequestReader,
    ) -> bool:  # fmt: skip
        """Send the response on; True when the client connection may serve another."""
        colour_header = self._colour_headers[colour]
        if resp.status == 101:
            if head.upgrade is None:
                chan.abort()
                self.counters[colour].errors += 1
                return self._fail(head, b"", client, 502, "upstream switched protocols unasked")
            client.write(resp.tunnel_head(colour_header))
            await self.tunnels.run(colour, client, chan, reader.tunnel_data or b"")
            return False
        http10 = head.http10
        mode = resp.framing(head.method, http10)
        keep = head.keep_alive and mode != UNTIL_CLOSE and head.upgrade is None
        out = resp.client_head(colour_header, mode, keep, http10)
        try:
            if mode == NO_BODY:
                client.write(out)
            else:
                await self._relay_body(resp, mode, out, client)
        except (UpstreamFailed, TimeoutError, OSError) as e:
            # Part of the response may be out already: the only honest signal left is
            # closing the client connection mid-body.
            chan.abort()
            self.counters[colour].errors += 1
            self.tally.note("response_broken", f"{up.name} ({colour}): {e or type(e).__name__}")
            return False
        release(resp, mode, chan, up)
        return keep

    async def _relay_body(self, resp: Response, mode: int, out: bytes, client: Channel) -> None:
        resp.start_body()
        whole = resp.whole_body_buffered()
        if whole is not None:  # the common case: a small response, one write
            if mode == CHUNKED:
                client.write(out + (chunk(whole) if whole else b"") + LAST_CHUNK)
            else:
                client.write(out + whole)
            return
        client.write(out)
        until_close = resp.length is None and not resp.chunked
        t = self.timeouts
        while (piece := await resp.piece(t.first_byte, until_close)) is not None:
            client.write(chunk(piece) if mode == CHUNKED else piece)
            if client.write_backlog > _HIGH_WATER:
                await client.drain(t.body)
        if mode == CHUNKED:
            client.write(LAST_CHUNK)
        elif mode == LENGTH and not resp.complete:
            raise UpstreamFailed("response body shorter than its Content-Length")


class Route:
    """Where one request may still go: hosts tried, stand-by used, a fresh connection due."""

    __slots__ = (
        "_fwd",
        "colour",
        "fresh_only",
        "idempotent",
        "live",
        "on_standby",
        "replayable",
        "tried",
    )  # fmt: skip

    def __init__(self, fwd: Forwarder, idempotent: bool, buffered: bool) -> None:
        self._fwd = fwd
        self.idempotent = idempotent
        self.replayable = idempotent and buffered
        """Whether the request may be sent again after it reached an upstream."""
        self.live = fwd.routes.live
        self.colour = self.live
        self.tried: list[Upstream] = []
        self.fresh_only = False
        self.on_standby = False

    def next(self) -> Upstream | None:
        """The next upstream to try; the stand-by once the live colour has none left, for
        idempotent requests (other writes must land on the colour the control plane chose)."""
        up = self._fwd.routes.pick(self.colour, self.tried)
        if up is None and self.idempotent and not self.on_standby:
            self._to_standby()
            up = self._fwd.routes.pick(self.colour, self.tried)
        return up

    def _to_standby(self) -> None:
        self.colour = self.live.other
        self.on_standby = True
        self._fwd.counters[self.colour].retries += 1

    def closed_early(self, up: Upstream, reused: bool) -> None:
        """The connection ended before any answer: a pooled one may just have been closed
        while idle, so the same host gets a fresh connection; a fresh one means the host
        failed, so it is avoided."""
        if reused:
            self.fresh_only = True
        else:
            self.tried.append(up)

    def follow_switch(self) -> None:
        """Start again on the colour that is live now."""
        self.live = self.colour = self._fwd.routes.live
        self._fwd.counters[self.live].retries += 1
        self.tried.clear()
        self.on_standby = False
        self.fresh_only = False

    def may_retry_5xx(self, colour: Colour) -> bool:
        if not self.replayable or self.on_standby or colour is not self.live:
            return False
        self._to_standby()
        return True
