"""Client requests: strict parsing (llhttp through httptools) and the head sent upstream.

llhttp rejects what RFC 9112 forbids and smugglers rely on: Content-Length together with
Transfer-Encoding, several or non-digit Content-Lengths, whitespace before a colon,
obs-fold, NUL or bare CR in values, malformed or overflowing chunk sizes, missing CRLF
after chunk data. On top of it this module rejects what llhttp lets through: a
Transfer-Encoding other than exactly ``chunked`` (or any on HTTP/1.0), an HTTP/1.1
request without exactly one Host, HTTP/0.9, CONNECT, an Expect other than 100-continue.

Bodies are handed over decoded, so the proxy re-frames them: a client's chunk-size line
never reaches an upstream.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Sequence

import httptools

from console.core.proxy.channel import Channel

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
"""Methods RFC 9110 9.2.2 allows to repeat: only these are ever sent twice."""

# Headers that describe one connection, not the message; never forwarded (RFC 9110 7.6.1).
# Content-Length and Transfer-Encoding are re-made from the parsed framing; X-BG-Env is
# the proxy's own answer header; client Forwarded headers are replaced (see below).
HOP_BY_HOP = frozenset(
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
        b"expect",
    }
)
_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)


class HttpError(Exception):
    """A request the proxy refuses; answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client closed or broke its connection in the middle of a message."""


class RequestHead:
    """One parsed request head and what the proxy needs to know to forward it."""

    __slots__ = (
        "checked",
        "chunked",
        "drop",
        "expect_continue",
        "fields",
        "forwarded",
        "host",
        "keep_alive",
        "length",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.fields: list[tuple[bytes, bytes, bytes]] = []
        """(name, lower-case name, value) as received."""
        self.keep_alive = True
        self.upgrade: bytes | None = None
        """The Upgrade header of an upgrade request (WebSocket), else None."""
        self.chunked = False
        self.length = 0
        self.host: bytes | None = None
        self.expect_continue = False
        self.drop: frozenset[bytes] = frozenset()
        """Lower-case names listed in Connection: hop-by-hop for this message only."""
        self.forwarded: dict[bytes, bytes] = {}
        """The client's own X-Forwarded-* values (used only from trusted proxies)."""
        self.checked = False

    @property
    def http10(self) -> bool:
        return self.version == "1.0"

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def _analyse(head: RequestHead) -> None:
    """Check a parsed head against what llhttp does not enforce; note its framing.

    Raises:
        HttpError: the request must be refused.
    """
    head.checked = True
    if head.version not in ("1.1", "1.0"):
        raise HttpError(505, "HTTP version not supported")
    if head.method == b"CONNECT":
        raise HttpError(405, "CONNECT is not supported by a reverse proxy")
    hosts, te, upgrade = _scan(head)
    if hosts > 1 or (hosts == 0 and not head.http10):
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")
    if te:
        # llhttp accepts codings that end in chunked ("gzip, chunked"); the proxy does
        # not decode any, and HTTP/1.0 has no Transfer-Encoding at all (RFC 9112 6.1).
        if head.http10 or te != [b"chunked"]:
            raise HttpError(400, "unsupported Transfer-Encoding")
        head.chunked = True
    if head.upgrade is not None:  # llhttp saw Connection: upgrade with an Upgrade header
        if upgrade is None or head.has_body:
            raise HttpError(400, "malformed upgrade request")
        head.upgrade = upgrade


def _scan(head: RequestHead) -> tuple[int, list[bytes], bytes | None]:
    """Note the framing headers of ``head``; (Host count, Transfer-Encodings, Upgrade)."""
    hosts = 0
    te: list[bytes] = []
    drop: list[bytes] = []
    upgrade = None
    for _name, lname, value in head.fields:
        if lname == b"host":
            hosts += 1
            head.host = value
        elif lname == b"content-length":
            head.length = int(value)  # llhttp let digits only through, once
        elif lname == b"transfer-encoding":
            te.append(value.lower())
        elif lname == b"connection":
            drop.extend(_tokens(value))
        elif lname == b"upgrade":
            upgrade = value
        elif lname == b"expect":
            if value.lower() != b"100-continue":
                raise HttpError(417, "only Expect: 100-continue is supported")
            head.expect_continue = True
        elif lname in _FORWARDED:
            head.forwarded[lname] = value
    head.drop = frozenset(drop)
    return hosts, te, upgrade


class RequestReader:
    """Parses the requests of one client connection, pipelined ones included, in order.

    ``head()`` returns the next request head; ``body()`` its decoded body pieces. Reading
    happens only when the caller asks, so a client that sends faster than the upstream
    answers is slowed by TCP, not buffered here.
    """

    __slots__ = (
        "_began",
        "_chan",
        "_cur",
        "_events",
        "_head_bytes",
        "_in_head",
        "_loop_time",
        "_max_head",
        "_parser",
        "_raw_head",
        "failed",
        "tunnel_data",
    )

    def __init__(self, chan: Channel, max_head: int, loop_time: Callable[[], float]) -> None:
        self._chan = chan
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[RequestHead | bytes | None] = deque()
        self._cur = RequestHead()
        self._in_head = False
        self._head_bytes = 0
        self._raw_head = 0
        self._max_head = max_head
        self._began = 0.0
        self._loop_time = loop_time
        self.tunnel_data: bytes | None = None
        """After an upgrade request: the bytes that followed its head (tunnel payload)."""
        self.failed: HttpError | None = None
        """What made the parser stop (raised once the requests before it are taken)."""

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._cur = RequestHead()
        self._in_head = True
        self._head_bytes = 0
        self._raw_head = 0
        self._began = self._loop_time()

    def on_url(self, url: bytes) -> None:
        self._cur.target += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer after a chunked body: dropped, never forwarded
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head:
            raise HttpError(431, "request head too large")
        # llhttp strips leading whitespace of a value but keeps trailing tabs/spaces.
        self._cur.fields.append((name, name.lower(), value.rstrip(b" \t")))

    def _grow(self, size: int) -> None:
        """Count a head's bytes as llhttp hands them over (it has no limit of its own)."""
        self._head_bytes += size
        if self._head_bytes > self._max_head:
            raise HttpError(431, "request head too large")

    def on_headers_complete(self) -> None:
        cur = self._cur
        parser = self._parser
        cur.method = parser.get_method()
        cur.version = parser.get_http_version()
        cur.keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            cur.upgrade = b""
        self._in_head = False
        self._events.append(cur)

    def on_body(self, body: bytes) -> None:
        self._events.append(body)

    def on_message_complete(self) -> None:
        self._events.append(None)

    # -- reading -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse bytes read by someone else (the fast lane reads without a task). A
        malformed request is kept in ``failed``: the requests parsed before it are
        answered first, in order, then ``head``/``body`` raise it."""
        if self.failed is not None:
            return
        try:
            self._feed(data)
        except HttpError as e:
            self.failed = e

    def take_simple(self, max_body: int) -> tuple[RequestHead, bytes] | str:
        """The next request when it is whole and plain - no upgrade, no Expect, a body of
        at most ``max_body`` bytes all here - taken off the queue. Otherwise ``"wait"``
        (no whole head yet) or ``"slow"`` (left queued for the full path).

        Raises:
            HttpError: the head is refused.
        """
        events = self._events
        if not events:
            return "wait"
        head = events[0]
        if not isinstance(head, RequestHead):
            raise RuntimeError("request body left unread")
        if not head.checked:
            _analyse(head)
        if head.upgrade is not None or head.expect_continue or head.chunked:
            return "slow"
        if head.length > max_body:
            return "slow"
        n = len(events)
        if n >= 2 and events[1] is None:
            events.popleft()
            events.popleft()
            return head, b""
        for i in range(2, n):
            if events[i] is None:
                events.popleft()
                parts = [events.popleft() for _ in range(i - 1)]
                events.popleft()
                return head, b"".join(p for p in parts if isinstance(p, bytes))
        return "slow"  # the body is still arriving: the full path reads it, with timeouts

    @property
    def queued(self) -> int:
        """Parsed events not taken yet (heads, body pieces, ends)."""
        return len(self._events)

    @property
    def in_head(self) -> bool:
        """Whether a request head has begun and is not complete."""
        return self._in_head

    @property
    def head_started(self) -> float:
        """When the current head began (loop time)."""
        return self._began

    def _feed(self, data: bytes) -> None:
        began = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.tunnel_data = data[e.args[0] :]
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, HttpError):
                raise e.__context__ from None
            raise HttpError(400, f"malformed request: {e}") from None
        except httptools.HttpParserError as e:
            raise HttpError(400, f"malformed request: {e}") from None
        if self._in_head and began:
            # A head still incomplete after a whole read: llhttp keeps a partial header
            # to itself, so count what was read while it lasted.
            self._raw_head += len(data)
            if self._raw_head > self._max_head:
                raise HttpError(431, "request head too large")

    async def head(self, idle_timeout: float, head_timeout: float) -> RequestHead | None:
        """The next request head, checked; None when the client closed between requests.

        Raises:
            HttpError: a malformed or refused request (answer it, then close).
            ClientGone: the client closed in the middle of a head.
            TimeoutError: idle longer than ``idle_timeout`` between requests, or a head
                that took longer than ``head_timeout`` (slowloris).
        """
        events = self._events
        while not events:
            if self.failed is not None:
                raise self.failed
            if self.tunnel_data is not None:
                return None
            if self._in_head:
                timeout = self._began + head_timeout - self._loop_time()
                if timeout <= 0:
                    raise TimeoutError
            else:
                timeout = idle_timeout
            data = await self._chan.read(timeout)
            if not data:
                if self._in_head:
                    raise ClientGone
                return None
            self.feed(data)
        event = events.popleft()
        if not isinstance(event, RequestHead):
            raise RuntimeError("request body left unread")  # callers close instead
        if not event.checked:
            _analyse(event)
        return event

    async def body(self, within: float) -> bytes | None:
        """The next piece of the current body (decoded), or None at its end.

        Raises:
            HttpError: malformed body framing (a bad chunk).
            ClientGone: the client closed before the body ended.
            TimeoutError: no byte of the body arrived for ``within`` seconds.
        """
        events = self._events
        while not events:
            if self.failed is not None:
                raise self.failed
            data = await self._chan.read(within)
            if not data:
                raise ClientGone
            self.feed(data)
        event = events[0]
        if isinstance(event, RequestHead):
            raise RuntimeError("body read past its message")
        events.popleft()
        return event

    @property
    def pending(self) -> bool:
        """Whether more requests are already parsed (a pipelining client)."""
        return bool(self._events)


class Trusted:
    """The ``trusted_proxies`` list: peers whose X-Forwarded-* headers are kept."""

    __slots__ = ("_networks",)

    def __init__(self, entries: Sequence[str] = ()) -> None:
        self._networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def __contains__(self, peer: str) -> bool:
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._networks)


def upstream_head(
    head: RequestHead, peer: bytes, proto: bytes, trusted: bool, default_host: bytes
) -> bytes:
    """The head sent upstream: hop-by-hop headers gone, framing and X-Forwarded-* remade.

    ``default_host`` (the upstream's address) stands in for the Host an HTTP/1.0 client
    may leave out: an HTTP/1.1 request without Host is invalid.
    """
    lines = [head.method + b" " + head.target + b" HTTP/1.1"]
    drop = head.drop
    for name, lname, value in head.fields:
        if lname in HOP_BY_HOP or lname in _FORWARDED or (drop and lname in drop):
            continue
        lines.append(name + b": " + value)
    if head.host is None:
        lines.append(b"Host: " + default_host)
    fwd = head.forwarded if trusted else {}
    xff = fwd.get(b"x-forwarded-for")
    lines.append(b"X-Forwarded-For: " + (xff + b", " + peer if xff else peer))
    lines.append(b"X-Forwarded-Proto: " + fwd.get(b"x-forwarded-proto", proto))
    host = fwd.get(b"x-forwarded-host", head.host)
    if host:
        lines.append(b"X-Forwarded-Host: " + host)
    if trusted and b"forwarded" in fwd:
        lines.append(b"Forwarded: " + fwd[b"forwarded"])
    if head.chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif head.length or head.method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"Content-Length: %d" % head.length)
    if head.upgrade is not None:
        lines.append(b"Connection: upgrade")
        lines.append(b"Upgrade: " + head.upgrade)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def chunk(data: bytes) -> bytes:
    """One chunk of a re-framed chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
