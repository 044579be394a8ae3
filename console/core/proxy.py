"""The built-in reverse proxy: HTTP/1.1 over asyncio streams, routing to the live colour.

The data plane of the agent when ``router.kind = "builtin"``. Per request it asks a
:class:`RouteTable` for the live colour and a healthy upstream of it (round-robin), keeps
connections alive on both sides (a bounded idle pool per upstream), streams bodies both
ways (Content-Length, chunked, or until close), and adds ``X-Forwarded-For/Proto/Host``
upstream and ``X-BG-Env: <colour>`` downstream.

Failure handling, in the order it applies:

- a pooled connection that turns out stale (closed before a byte of the response
  arrived) is retried once on a fresh connection when the request can be replayed;
- a connect failure marks that upstream down at once (passive health), so a dead host
  costs one failed connect, not one per request; the next healthy host of the same colour
  is tried, and when the live colour has none left, idempotent requests (GET HEAD OPTIONS
  PUT DELETE) go once to the stand-by; other methods get 502, because their writes must
  land on the colour the control plane chose;
- with ``retry_on_5xx``, an idempotent request with no body (or a small buffered one)
  that got a 5xx from the live colour is retried once on the stand-by.

The hot path avoids work it can skip: headers are split once and only names are
lowercased; small bodies go out in the same write as their head.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from console.core.models import Colour, HealthSnapshot

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
# Headers that describe one connection, not the message; never forwarded (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"x-bg-env",
    }
)
_MAX_HEAD = 64 * 1024
_BUFFER_BODY = 64 * 1024
"""Request bodies up to this size are read before forwarding, so they can be replayed."""
_CHUNK = 64 * 1024
_HIGH_WATER = 256 * 1024
_CRLF2 = b"\r\n\r\n"

PassiveDownCallback = Callable[["Upstream", str], None]


class _ClientGone(Exception):
    """The client closed or broke its connection; nothing more can be sent to it."""


class _UpstreamFailed(Exception):
    """The upstream failed after the request was (partly) sent."""


@dataclass(slots=True)
class _ColourCounters:
    requests: int = 0
    errors: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Counters since the proxy started, per colour that served (or failed) requests."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    """Requests that ended in a proxy-made 5xx or a broken response, by the colour tried."""
    retries: dict[str, int] = field(default_factory=dict)
    """Requests retried on this colour (stand-by retries and fresh-connection retries)."""
    unroutable: int = 0
    """Requests answered 502 because no upstream could take them."""
    open_connections: int = 0


class Upstream:
    """One upstream host: its address, passive health and idle connection pool."""

    __slots__ = (
        "_idle",
        "active_up",
        "address",
        "colour",
        "down_at",
        "host",
        "max_idle",
        "name",
        "port",
        "server_hostname",
        "ssl",
    )

    def __init__(self, colour: Colour, name: str, url: str, max_idle: int = 128) -> None:
        parts = urlsplit(url)
        self.colour = colour
        self.name = name
        self.host = parts.hostname or "127.0.0.1"
        https = parts.scheme == "https"
        self.port = parts.port or (443 if https else 80)
        self.ssl: ssl_module.SSLContext | None = (
            ssl_module.create_default_context() if https else None
        )
        self.server_hostname = self.host if https else None
        self.address = f"{self.host}:{self.port}"
        self.max_idle = max_idle
        self.active_up = True
        """What the active health monitor says (up until it says otherwise)."""
        self.down_at: float | None = None
        """Wall-clock time a connect failed (passive health); None while it works."""
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    @property
    def available(self) -> bool:
        """Whether new requests may be sent here."""
        return self.active_up and self.down_at is None

    def take_idle(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A pooled connection that still looks open, or None."""
        idle = self._idle
        while idle:
            reader, writer = idle.pop()
            # The server may have closed it while idle; skip those without a round trip.
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    def give_back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Return a connection after a complete exchange; closed when the pool is full."""
        if len(self._idle) < self.max_idle and not writer.is_closing():
            self._idle.append((reader, writer))
        else:
            writer.close()

    def close_idle(self) -> None:
        """Close every pooled connection."""
        for _reader, writer in self._idle:
            writer.close()
        self._idle.clear()


class RouteTable:
    """Which colour is live and which upstreams of each colour may take requests.

    ``set_live`` applies to the next request; requests in flight finish where they are.
    """

    def __init__(
        self,
        upstreams: Mapping[Colour, Sequence[Upstream]],
        live: Colour = Colour.BLUE,
        *,
        passive_hold: float = 5.0,
    ) -> None:
        self._upstreams: dict[Colour, tuple[Upstream, ...]] = {
            c: tuple(upstreams.get(c, ())) for c in Colour
        }
        self._healthy: dict[Colour, tuple[Upstream, ...]] = {}
        self._next: dict[Colour, int] = {c: 0 for c in Colour}
        self.live = live
        self.passive_hold = passive_hold
        """Seconds a passively-marked-down upstream waits before it is tried again when no
        health monitor reports on it (with a monitor, a good probe clears it sooner)."""
        self._refresh()

    @classmethod
    def from_urls(
        cls, urls: Mapping[Colour, Sequence[str]], live: Colour = Colour.BLUE
    ) -> RouteTable:
        """A table from base URLs per colour (hosts named by their address)."""
        ups = {c: [Upstream(c, urlsplit(u).netloc, u) for u in us] for c, us in urls.items()}
        return cls(ups, live)

    def upstreams(self, colour: Colour | None = None) -> tuple[Upstream, ...]:
        """Every upstream (of one colour, or of both)."""
        if colour is not None:
            return self._upstreams[colour]
        return self._upstreams[Colour.BLUE] + self._upstreams[Colour.GREEN]

    def set_live(self, colour: Colour) -> None:
        """Send the next request to ``colour``."""
        self.live = colour

    def _refresh(self) -> None:
        self._healthy = {
            c: tuple(u for u in ups if u.available) for c, ups in self._upstreams.items()
        }

    def pick(self, colour: Colour) -> Upstream | None:
        """The next available upstream of ``colour`` (round-robin), or None."""
        healthy = self._healthy[colour]
        if not healthy:
            if not self._expire_passive(colour):
                return None
            healthy = self._healthy[colour]
        i = self._next[colour]
        self._next[colour] = i + 1
        return healthy[i % len(healthy)]

    def _expire_passive(self, colour: Colour) -> bool:
        """Give upstreams marked down longer than ``passive_hold`` ago another chance."""
        now = time.time()
        changed = False
        for up in self._upstreams[colour]:
            if up.down_at is not None and now - up.down_at >= self.passive_hold:
                up.down_at = None
                changed = True
        if changed:
            self._refresh()
        return bool(self._healthy[colour])

    def mark_down(self, upstream: Upstream) -> None:
        """Take an upstream out of rotation after a failure (passive health)."""
        upstream.down_at = time.time()
        upstream.close_idle()
        self._refresh()

    def mark_up(self, upstream: Upstream) -> None:
        """Put an upstream back into rotation."""
        upstream.down_at = None
        upstream.active_up = True
        self._refresh()

    def apply_health(self, snapshot: HealthSnapshot) -> None:
        """Follow the active health monitor's verdicts.

        A passive mark-down is cleared only by a good probe that started after it, so a
        probe already in flight when the host died cannot resurrect it.
        """
        by_name = {(u.colour, u.name): u for u in self.upstreams()}
        for env in snapshot.envs.values():
            for host in env.hosts:
                up = by_name.get((host.colour, host.host))
                if up is None:
                    continue
                up.active_up = host.up
                last = host.last
                if up.down_at is not None and last is not None and last.ok and last.at > up.down_at:
                    up.down_at = None
        self._refresh()

    def close(self) -> None:
        """Close every pooled connection."""
        for up in self.upstreams():
            up.close_idle()


class _Request:
    """A parsed request head, rewritten for the upstream."""

    __slots__ = ("body", "chunked", "close", "head", "http10", "length", "method")

    def __init__(self) -> None:
        self.method = b""
        self.head = b""
        self.length: int | None = 0
        self.chunked = False
        self.close = False
        self.http10 = False
        self.body: bytes | None = b""
        """The whole body when buffered (replayable); None when it must be streamed."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
            504: "Gateway Timeout", 503: "Service Unavailable"}  # fmt: skip


def _error_response(status: int, message: str, close: bool) -> bytes:
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


def _framing(msg: _Request | _Response, name: bytes, value: bytes) -> None:
    """Apply one hop-by-hop header to how a message is framed and whether it ends the
    connection.

    Raises:
        ValueError: a Content-Length that is not a number.
    """
    if name == b"content-length":
        msg.length = int(value)
    elif name == b"transfer-encoding":
        msg.chunked = value.endswith(b"chunked")
    elif name == b"connection":
        if b"close" in value:
            msg.close = True
        elif b"keep-alive" in value:
            msg.close = False


# Request headers the proxy reads on the way through (X-Forwarded-For is rewritten).
_NOTED = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                    b"expect"})  # fmt: skip


def _add_forwarded(keep: list[bytes], noted: dict[bytes, bytes], peer: bytes, proto: bytes) -> None:
    """X-Forwarded-For gets the client appended; Proto and Host are set unless present."""
    xff = noted.get(b"x-forwarded-for")
    keep.append(b"X-Forwarded-For: " + (xff + b", " + peer if xff else peer))
    if b"x-forwarded-proto" not in noted:
        keep.append(b"X-Forwarded-Proto: " + proto)
    if b"x-forwarded-host" not in noted and b"host" in noted:
        keep.append(b"X-Forwarded-Host: " + noted[b"host"])


def _parse_request(head: bytes, peer: bytes, proto: bytes) -> _Request:
    lines = head[:-4].split(b"\r\n")
    try:
        method, target, version = lines[0].split(b" ")
    except ValueError:
        raise _HttpError(400, "malformed request line") from None
    req = _Request()
    req.method = method
    req.http10 = version != b"HTTP/1.1"
    req.close = req.http10
    keep: list[bytes] = [method + b" " + target + b" HTTP/1.1"]
    noted: dict[bytes, bytes] = {}
    for line in lines[1:]:
        i = line.find(b":")
        if i <= 0:
            raise _HttpError(400, "malformed header line")
        name = line[:i].lower()
        if name in _HOP_BY_HOP:
            try:
                _framing(req, name, line[i + 1 :].strip().lower())
            except ValueError:
                raise _HttpError(400, "bad Content-Length") from None
            continue
        if name in _NOTED:
            noted[name] = line[i + 1 :].strip()
            if name == b"x-forwarded-for":
                continue
        keep.append(line)
    _add_forwarded(keep, noted, peer, proto)
    # Transfer-Encoding wins over Content-Length (RFC 9112 6.3); sending both is how
    # request smuggling starts, so only one goes upstream.
    length = req.length or 0
    req.length = length
    if req.chunked:
        keep.append(b"Transfer-Encoding: chunked")
        req.body = None
    elif length:
        keep.append(b"Content-Length: %d" % length)
        if length > _BUFFER_BODY or b"expect" in noted:
            req.body = None
    keep.append(b"\r\n")
    req.head = b"\r\n".join(keep)
    return req


class _Response:
    __slots__ = ("chunked", "close", "head", "length", "status")

    def __init__(self) -> None:
        self.status = 0
        self.head = b""
        self.length: int | None = None
        self.chunked = False
        self.close = False


def _parse_response(head: bytes, colour_header: bytes) -> _Response:
    lines = head[:-4].split(b"\r\n")
    first = lines[0]
    resp = _Response()
    try:
        resp.status = int(first[9:12])
    except ValueError:
        raise _UpstreamFailed("malformed status line") from None
    resp.close = not first.startswith(b"HTTP/1.1")
    keep = [first]
    for line in lines[1:]:
        i = line.find(b":")
        if i <= 0:
            continue
        name = line[:i].lower()
        if name in _HOP_BY_HOP:
            with contextlib.suppress(ValueError):  # a bad length reads until close
                _framing(resp, name, line[i + 1 :].strip().lower())
            continue
        keep.append(line)
    keep.append(colour_header)
    resp.head = b"\r\n".join(keep)
    return resp


async def _copy_exact(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, _CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)
        writer.write(data)
        if writer.transport.get_write_buffer_size() > _HIGH_WATER:
            await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Forward a chunked body as is, up to and including its trailers."""
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        try:
            size = int(line.split(b";", 1)[0], 16)
        except ValueError:
            raise asyncio.IncompleteReadError(line, None) from None
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    return
        await _copy_exact(reader, writer, size + 2)


async def _copy_until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(_CHUNK):
        writer.write(data)
        if writer.transport.get_write_buffer_size() > _HIGH_WATER:
            await writer.drain()


class _ClientConn:
    __slots__ = ("busy", "task", "writer")

    def __init__(self, task: asyncio.Task[None] | None, writer: asyncio.StreamWriter) -> None:
        self.task = task
        self.writer = writer
        self.busy = False


class Proxy:
    """The reverse proxy server. ``await start()``, then ``await close()``.

    Args:
        routes: where requests go.
        listen: ``host:port`` to listen on (port 0 picks a free one; see ``port``).
        retry_on_5xx: retry idempotent, replayable requests that got a 5xx on the stand-by.
        connect_timeout: seconds to connect to an upstream before it counts as down.
        response_timeout: seconds to wait for an upstream's response head.
        idle_timeout: seconds a client keep-alive connection may sit idle.
        on_passive_down: called with (upstream, reason) when a failure marks one down.
    """

    def __init__(
        self,
        routes: RouteTable,
        listen: str = "127.0.0.1:8080",
        *,
        retry_on_5xx: bool = False,
        connect_timeout: float = 2.0,
        response_timeout: float = 60.0,
        idle_timeout: float = 75.0,
        on_passive_down: PassiveDownCallback | None = None,
    ) -> None:
        self.routes = routes
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "0.0.0.0"
        self.port = int(port)
        self.retry_on_5xx = retry_on_5xx
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.on_passive_down = on_passive_down
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.StreamWriter, _ClientConn] = {}
        self._counters = {c: _ColourCounters() for c in Colour}
        self._unroutable = 0
        self._colour_headers = {c: b"X-BG-Env: " + c.value.encode() for c in Colour}

    @property
    def address(self) -> str:
        """``host:port`` actually listened on."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Start listening.

        Raises:
            OSError: the address cannot be bound (in use, not local, no permission).
        """
        self._server = await asyncio.start_server(
            self._serve_client, self.host, self.port, limit=_MAX_HEAD, backlog=1024
        )
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]

    def stats(self) -> ProxyStats:
        """The counters right now."""
        return ProxyStats(
            requests={c.value: k.requests for c, k in self._counters.items()},
            errors={c.value: k.errors for c, k in self._counters.items()},
            retries={c.value: k.retries for c, k in self._counters.items()},
            unroutable=self._unroutable,
            open_connections=len(self._clients),
        )

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace`` s, close all."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        # Idle keep-alive connections close now; busy ones get until the deadline.
        while True:
            for conn in list(self._clients.values()):
                if not conn.busy:
                    conn.writer.close()
                    if conn.task is not None:
                        conn.task.cancel()
            if not self._clients or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        tasks = [c.task for c in self._clients.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self.routes.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        peer = (peername[0] if peername else "unknown").encode()
        conn = _ClientConn(asyncio.current_task(), writer)
        self._clients[writer] = conn
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        head = await reader.readuntil(_CRLF2)
                except (asyncio.IncompleteReadError, OSError, TimeoutError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_error_response(431, "request head too large", True))
                    return
                conn.busy = True
                try:
                    req = _parse_request(head, peer, b"http")
                except _HttpError as e:
                    writer.write(_error_response(e.status, str(e), True))
                    return
                if not await self._handle(req, reader, writer):
                    return
                conn.busy = False
                if writer.transport.get_write_buffer_size() > _HIGH_WATER:
                    await writer.drain()
        except (_ClientGone, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            # Only close() cancels these tasks. asyncio's start_server callback (3.11)
            # calls task.exception() on the finished task, which raises - and logs an
            # error - for a cancelled one; ending normally keeps shutdown quiet.
            return
        finally:
            del self._clients[writer]
            writer.close()

    async def _read_body(self, req: _Request, reader: asyncio.StreamReader) -> None:
        if req.body is not None and req.length:
            try:
                req.body = await reader.readexactly(req.length)
            except (asyncio.IncompleteReadError, OSError) as e:
                raise _ClientGone from e

    async def _handle(
        self, req: _Request, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> bool:
        """Forward one request; True when the client connection may serve another."""
        await self._read_body(req, creader)
        routes = self.routes
        live = routes.live
        colour = live
        idempotent = req.method in IDEMPOTENT
        replayable = req.body is not None
        on_standby = False
        fresh_only = False
        for _attempt in range(4):
            up = routes.pick(colour)
            if up is None:
                if colour is live and idempotent and not on_standby:
                    colour = live.other
                    on_standby = True
                    self._counters[colour].retries += 1
                    continue
                break
            counters = self._counters[colour]
            pooled = None if fresh_only else up.take_idle()
            reused = pooled is not None
            if pooled is None:
                pooled = await self._connect(up)
                if pooled is None:
                    continue  # nothing was sent: safe to try elsewhere, for every method
            ureader, uwriter = pooled
            counters.requests += 1
            try:
                resp = await self._exchange(req, up, creader, ureader, uwriter)
            except _StaleConnection:
                uwriter.close()
                # A pooled connection the upstream had closed while idle: the request
                # never reached the application, so it is sent again on a new one.
                if reused and replayable:
                    counters.retries += 1
                    fresh_only = True
                    continue
                counters.errors += 1
                return self._fail(req, cwriter, 502, f"upstream {up.name} ({colour}) failed")
            except (_UpstreamFailed, OSError, asyncio.IncompleteReadError) as e:
                uwriter.close()
                counters.errors += 1
                return self._fail(req, cwriter, 502, f"upstream {up.name} ({colour}) failed: {e}")
            except TimeoutError:
                uwriter.close()
                counters.errors += 1
                return self._fail(req, cwriter, 504, f"upstream {up.name} ({colour}) timed out")
            if (
                resp.status >= 500
                and self.retry_on_5xx
                and idempotent
                and replayable
                and not on_standby
                and colour is live
            ):
                uwriter.close()
                colour = live.other
                on_standby = True
                self._counters[colour].retries += 1
                continue
            return await self._relay(req, resp, colour, ureader, uwriter, up, cwriter)
        self._unroutable += 1
        reason = "no healthy upstream" if idempotent else "live colour has no healthy upstream"
        return self._fail(req, cwriter, 502, f"{reason} ({live} live)")

    async def _connect(
        self, up: Upstream
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A new connection to ``up``; on failure it is marked down and None returned."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.open_connection(
                    up.host, up.port, ssl=up.ssl, server_hostname=up.server_hostname,
                    limit=_MAX_HEAD,
                )  # fmt: skip
        except (OSError, TimeoutError) as e:
            self.routes.mark_down(up)
            if self.on_passive_down is not None:
                self.on_passive_down(up, f"connect failed: {e or type(e).__name__}")
            return None

    def _fail(
        self, req: _Request, cwriter: asyncio.StreamWriter, status: int, message: str
    ) -> bool:
        """Answer with an error; False (close) when a streamed body may be left unread."""
        close = req.close or req.body is None
        cwriter.write(_error_response(status, message, close))
        return not close

    async def _exchange(
        self,
        req: _Request,
        up: Upstream,
        creader: asyncio.StreamReader,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> _Response:
        """Send the request upstream and read the response head (1xx answers skipped)."""
        if req.body is not None:
            uwriter.write(req.head + req.body if req.body else req.head)
        else:
            uwriter.write(req.head)
            try:
                if req.chunked:
                    await _copy_chunked(creader, uwriter)
                else:
                    await _copy_exact(creader, uwriter, req.length or 0)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                raise _ClientGone from e
        async with asyncio.timeout(self.response_timeout):
            while True:
                try:
                    head = await ureader.readuntil(_CRLF2)
                except asyncio.IncompleteReadError as e:
                    if not e.partial:
                        raise _StaleConnection from e
                    raise
                except ConnectionResetError as e:
                    raise _StaleConnection from e
                except asyncio.LimitOverrunError as e:
                    raise _UpstreamFailed("response head too large") from e
                resp = _parse_response(head, self._colour_headers[up.colour])
                if resp.status >= 200:
                    return resp
                # 1xx interim answers (100 Continue) are dropped: the body is forwarded
                # without waiting for them and the final response follows.

    async def _relay(
        self,
        req: _Request,
        resp: _Response,
        colour: Colour,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
        up: Upstream,
        cwriter: asyncio.StreamWriter,
    ) -> bool:
        """Stream the response to the client; True when both connections stay usable."""
        close = req.close
        no_body = req.method == b"HEAD" or resp.status in (204, 304)
        head = resp.head
        if not no_body and not resp.chunked and resp.length is None:
            close = True  # body runs until the upstream closes: so must we
        if resp.chunked and not no_body:
            head += b"\r\nTransfer-Encoding: chunked"
        elif resp.length is not None:
            head += b"\r\nContent-Length: %d" % resp.length
        if close:
            head += b"\r\nConnection: close"
        elif req.http10:
            head += b"\r\nConnection: keep-alive"
        head += _CRLF2
        try:
            if no_body:
                cwriter.write(head)
            elif resp.chunked:
                cwriter.write(head)
                await _copy_chunked(ureader, cwriter)
            elif resp.length is not None:
                if resp.length <= _BUFFER_BODY:
                    cwriter.write(head + await ureader.readexactly(resp.length))
                else:
                    cwriter.write(head)
                    await _copy_exact(ureader, cwriter, resp.length)
            else:
                cwriter.write(head)
                await _copy_until_close(ureader, cwriter)
                resp.close = True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            # Part of the response may be out already: the only honest signal left is
            # closing the client connection mid-body.
            uwriter.close()
            self._counters[colour].errors += 1
            return False
        if resp.close:
            uwriter.close()
        else:
            up.give_back(ureader, uwriter)
        return not close


class _StaleConnection(Exception):
    """The upstream closed the connection before a byte of the response arrived."""


def route_table_from_hosts(
    hosts: Iterable[tuple[Colour, str, str]], live: Colour = Colour.BLUE
) -> RouteTable:
    """A table from ``(colour, host name, base URL)`` triples (e.g. ``Config.all_hosts()``)."""
    ups: dict[Colour, list[Upstream]] = {c: [] for c in Colour}
    for colour, name, url in hosts:
        ups[colour].append(Upstream(colour, name, url))
    return RouteTable(ups, live)
