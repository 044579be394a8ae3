"""Upstream responses: the head read and checked, the body decoded, both re-framed.

Each response gets a fresh llhttp parser, fed its head only, so the proxy (not the
parser) decides whether a body follows: none after HEAD, 1xx, 204 or 304 whatever the
headers say. The body is handed over decoded and re-framed for the client: chunked for an
HTTP/1.1 client, close-delimited for an HTTP/1.0 one (which has no chunked encoding).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import httptools

from console.core.proxy.channel import Channel
from console.core.proxy.request import HOP_BY_HOP

_CRLF2 = b"\r\n\r\n"

# How the body reaches the client.
NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3


# Response header lines the proxy never passes on (see HOP_BY_HOP), with their values.
_HOP_LINE = re.compile(
    rb"\r\n(connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade"
    rb"|content-length|x-bg-env):([^\r\n]*)",
    re.IGNORECASE,
)


class QuickHead(NamedTuple):
    status: int
    kept: bytes
    """The head without hop-by-hop lines and without its final CRLF CRLF."""
    length: int
    keep_alive: bool


def quick_head(head: bytes) -> QuickHead | None:
    """The plainest response head - HTTP/1.1, a final status, one Content-Length, no
    Transfer-Encoding, Connection absent or keep-alive/close - read with one regular
    expression pass instead of a parser callback per header; None for anything else (the
    parser path then reads it, strictly)."""
    if not head.startswith(b"HTTP/1.1 ") or b"\n " in head or b"\n\t" in head:
        return None
    code = head[9:12]
    if not code.isdigit() or head[12:13] not in (b" ", b"\r"):
        return None
    status = int(code)
    if status < 200:
        return None
    length = -1
    keep_alive = True
    kept: list[bytes] = []
    last = 0
    for match in _HOP_LINE.finditer(head):
        name = match[1].lower()
        if name == b"content-length":
            value = match[2].strip(b" \t")
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)
        elif name == b"connection":
            token = match[2].strip(b" \t").lower()
            if token == b"close":
                keep_alive = False
            elif token != b"keep-alive":
                return None  # it names other headers: the parser path drops those
        elif name == b"transfer-encoding":
            return None
        kept.append(head[last : match.start()])
        last = match.end()
    if length < 0:
        return None
    kept.append(head[last:-4])
    return QuickHead(status, b"".join(kept), length, keep_alive)


class UpstreamClosed(Exception):
    """The upstream closed (or reset) the connection before a byte of the response."""


class UpstreamFailed(Exception):
    """The upstream sent something unusable or stopped in the middle of a response."""


def _may_have_length(status: int) -> bool:
    """1xx and 204 answers never carry Content-Length (RFC 9110 8.6)."""
    return status >= 200 and status != 204


class Response:
    """A response being read from one upstream connection (an llhttp protocol object)."""

    __slots__ = (
        "_chan",
        "_done",
        "_drop",
        "_parser",
        "_pieces",
        "chunked",
        "fields",
        "keep_alive",
        "length",
        "reason",
        "status",
        "trailing",
    )

    def __init__(self, chan: Channel) -> None:
        self._chan = chan
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.fields: list[tuple[bytes, bytes, bytes]] = []
        """(name, lower-case name, value) as received."""
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self._drop: list[bytes] = []
        self._pieces: list[bytes] = []
        self._done = False
        self.trailing = False
        """Bytes came after the message: the connection cannot be reused."""

    @classmethod
    def on(cls, chan: Channel, method: bytes) -> Response:
        """The response reader of ``chan``. Its llhttp parser is kept for the connection's
        next response (making one costs more than parsing a small head), except after
        HEAD: llhttp cannot be told that such an answer has no body."""
        resp = chan.response
        if method == b"HEAD":
            chan.response = None
            return cls(chan)
        if isinstance(resp, Response):
            resp.reset()
            return resp
        resp = chan.response = cls(chan)
        return resp

    def reset(self) -> None:
        """Ready for the next message on the same connection."""
        self.status = 0
        self.reason = b""
        self.fields = []
        self.length = None
        self.chunked = False
        self.keep_alive = True
        self._drop = []
        self._pieces = []
        self._done = False

    # -- httptools callbacks ---------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        value = value.rstrip(b" \t")
        self.fields.append((name, lname, value))
        if lname == b"content-length":
            self.length = int(value)  # llhttp let digits only through, once
        elif lname == b"transfer-encoding":
            self.chunked = value.lower().endswith(b"chunked")
        elif lname == b"connection":
            self._drop.extend(t.strip().lower() for t in value.split(b","))

    def on_headers_complete(self) -> None:
        parser = self._parser
        self.status = parser.get_status_code()
        self.keep_alive = parser.should_keep_alive()

    def on_message_begin(self) -> None:
        if self._done:
            self.trailing = True

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)

    def on_message_complete(self) -> None:
        self._done = True

    # -- reading ---------------------------------------------------------------------------

    async def read_head(self, max_head: int, first_byte: float, stall: float) -> None:
        """Read and parse the head (the caller skips 1xx by calling again on a new one).

        Raises:
            UpstreamClosed: nothing arrived before the connection ended.
            UpstreamFailed: a malformed, oversized or truncated head.
            TimeoutError: no byte within ``first_byte`` seconds, or a longer ``stall`` later.
        """
        chan = self._chan
        buf = await chan.read(first_byte)
        if not buf:
            raise UpstreamClosed
        while True:
            end = buf.find(_CRLF2)
            if end >= 0:
                break
            if len(buf) > max_head:
                raise UpstreamFailed("response head too large")
            data = await chan.read(stall)
            if not data:
                raise UpstreamFailed("connection closed in the response head")
            buf += data
        end += 4
        chan.unread(buf[end:])
        self.feed_head(buf[:end])

    def feed_head(self, head: bytes) -> None:
        """Parse a whole response head (up to and including its empty line).

        Raises:
            UpstreamFailed: it is malformed.
        """
        try:
            self._parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # 101 Switching Protocols: what follows is the tunnel
        except httptools.HttpParserError as e:
            raise UpstreamFailed(f"malformed response head: {e}") from None

    def framing(self, method: bytes, http10: bool) -> int:
        """How the body is sent on: NO_BODY, LENGTH, CHUNKED or UNTIL_CLOSE."""
        status = self.status
        if method == b"HEAD" or status in (204, 304) or status < 200:
            return NO_BODY
        if self.chunked:
            return UNTIL_CLOSE if http10 else CHUNKED
        if self.length is not None:
            return LENGTH
        return UNTIL_CLOSE

    def client_head(self, colour_header: bytes, mode: int, keep_alive: bool, http10: bool) -> bytes:
        """The head sent to the client: hop-by-hop headers gone, framing remade."""
        lines = [b"HTTP/1.1 %d %s" % (self.status, self.reason)]
        drop = self._drop
        for name, lname, value in self.fields:
            if lname in HOP_BY_HOP or (drop and lname in drop):
                continue
            lines.append(name + b": " + value)
        lines.append(colour_header)
        length = self.length
        if mode == CHUNKED:
            lines.append(b"Transfer-Encoding: chunked")
        elif length is not None and mode != UNTIL_CLOSE and _may_have_length(self.status):
            # On HEAD (and 304) the length describes the body a GET would get.
            lines.append(b"Content-Length: %d" % length)
        if not keep_alive:
            lines.append(b"Connection: close")
        elif http10:
            lines.append(b"Connection: keep-alive")
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def tunnel_head(self, colour_header: bytes) -> bytes:
        """The head of a 101 answer: passed on whole (its Connection and Upgrade too)."""
        lines = [b"HTTP/1.1 101 %s" % self.reason]
        lines.extend(n + b": " + v for n, ln, v in self.fields if ln != b"x-bg-env")
        lines.append(colour_header)
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def start_body(self) -> None:
        """Feed what came after the head to the parser (call once, before ``piece``)."""
        chan = self._chan
        if chan.buffered:
            # Bytes already here are part of the body; read() returns them at once.
            self._feed(chan.take())

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            raise UpstreamFailed(f"malformed response body: {e}") from None

    async def piece(self, stall: float, until_close: bool) -> bytes | None:
        """The next decoded piece of the body, None at its end.

        Raises:
            UpstreamFailed: the connection ended before the body did, or bad framing.
            TimeoutError: the upstream sent nothing for ``stall`` seconds.
        """
        pieces = self._pieces
        while not pieces:
            if self._done:
                return None
            data = await self._chan.read(stall)
            if not data:
                if until_close:
                    self._done = True
                    return None
                raise UpstreamFailed("connection closed in the response body")
            self._feed(data)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        return data

    @property
    def complete(self) -> bool:
        return self._done and not self._pieces

    @property
    def held(self) -> int:
        """Body pieces decoded and not handed on yet (few: a fast-lane response)."""
        return sum(len(p) for p in self._pieces)

    @property
    def until_close(self) -> bool:
        """The upstream marks the body's end by closing (no length, not chunked)."""
        return self.length is None and not self.chunked

    def whole_body_buffered(self) -> bytes | None:
        """The whole body when it is already here (the common small response), else None."""
        if self._done:
            data = b"".join(self._pieces)
            self._pieces.clear()
            return data
        return None
