"""Helpers for the hostile-HTTP proxy tests: a recording upstream and a raw-socket client.

The upstream is a real asyncio HTTP/1.1 server on 127.0.0.1 that records exactly what it
received (raw bytes and each parsed request) and misbehaves on purpose by path:

- ``/die``: reads the request, closes without a byte of answer (a crash after receipt);
- ``/slow?<seconds>``: answers after a delay;
- ``/chunked``: answers chunked; ``/close``: no length, body until close;
- ``/stale``: answers, then closes the connection without saying so (pooled and dead);
- ``/garbage``: answers, then sends bytes after the response (must not be reused);
- ``/103``: an Early Hints interim answer before the 200;
- ``/204``, ``/304``: those statuses (304 with the Content-Length of the resource);
- ``/ws``: accepts a WebSocket-style upgrade (101) and echoes bytes afterwards;
- anything else: 200 with a JSON body describing the request it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

HOST = "127.0.0.1"

ProxyFactory = Callable[..., Any]
"""The ``make_proxy`` fixture: ``await make_proxy(**Proxy options)``."""


@dataclass
class Received:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if values else None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


class _Parse:
    """httptools protocol collecting complete requests."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done: list[Received] = []
        self.cur: Received | None = None
        self.upgrade_data: bytes | None = None

    def on_message_begin(self) -> None:
        self.cur = Received("", "", "", [])

    def on_url(self, url: bytes) -> None:
        assert self.cur is not None
        self.cur.target += url.decode()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.cur is not None
        self.cur.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.cur is not None
        self.cur.method = self.parser.get_method().decode()
        self.cur.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        assert self.cur is not None
        self.cur.body += body

    def on_message_complete(self) -> None:
        assert self.cur is not None
        self.done.append(self.cur)

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.upgrade_data = data[e.args[0] :]


_FIXED = {
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "/204": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    "/304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
}


@dataclass
class Recorder:
    """The recording upstream (see the module docstring)."""

    colour: str = "blue"
    requests: list[Received] = field(default_factory=list)
    raw: list[bytearray] = field(default_factory=list)
    connections: int = 0
    die: bool = False
    """Crash on every request: read it, close without answering."""
    delay: float = 0.0
    """Seconds before every answer (a hung app, when long)."""
    status: int = 200
    """The status of the default answer."""
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> Recorder:
        self.server = await asyncio.start_server(self._serve, HOST, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def count(self, target: str) -> int:
        return sum(1 for r in self.requests if r.target == target)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        raw = bytearray()
        self.raw.append(raw)
        parse = _Parse()
        try:
            while data := await reader.read(65536):
                raw += data
                parse.feed(data)
                while parse.done:
                    req = parse.done.pop(0)
                    self.requests.append(req)
                    if not await self._answer(req, parse, reader, writer):
                        return
        except (ConnectionError, httptools.HttpParserError):
            pass
        except asyncio.CancelledError:
            pass  # the test's loop is ending; asyncio logs a cancelled handler otherwise
        finally:
            writer.close()

    def _reply(self, req: Received, status: int = 200, extra: bytes = b"") -> bytes:
        body = json.dumps(
            {
                "colour": self.colour,
                "method": req.method,
                "target": req.target,
                "version": req.version,
                "headers": req.headers,
                "body": req.body.decode("latin-1"),
            }
        ).encode()
        return (
            b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"X-BG-Env: %s\r\n%s\r\n" % (status, len(body), self.colour.encode(), extra) + body
        )

    async def _answer(
        self, req: Received, parse: _Parse, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:  # fmt: skip
        """Answer one request; False when the connection is over."""
        path, _, query = req.target.partition("?")
        if path == "/die" or self.die:
            writer.transport.abort()
            return False
        await asyncio.sleep(self.delay + (float(query or 1) if path == "/slow" else 0.0))
        if path == "/ws" and parse.upgrade_data is not None:
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n" + parse.upgrade_data
            )
            while data := await reader.read(65536):
                writer.write(data)
            return False
        if path in _FIXED:
            writer.write(_FIXED[path])
        elif path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
            await writer.drain()
            return False
        elif path == "/103":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(self._reply(req))
        elif req.method == "HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        elif path == "/split":  # head and body in two writes: a response arriving late
            reply = self._reply(req)
            cut = reply.index(b"\r\n\r\n") + 4
            writer.write(reply[:cut])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(reply[cut:])
        elif path == "/garbage":
            writer.write(self._reply(req) + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nBAD")
        else:
            writer.write(self._reply(req, self.status))
        await writer.drain()
        if path == "/stale":
            await asyncio.sleep(0.01)
            writer.transport.abort()
            return False
        return True


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class _ResponseParse:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Reply] = []
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done.append(Reply(self.parser.get_status_code(), self.headers, self.body))


def parse_replies(raw: bytes) -> list[Reply]:
    """Every complete response in ``raw`` (not for answers to HEAD)."""
    parse = _ResponseParse()
    with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
        parse.parser.feed_data(raw)
    return parse.done


async def send_raw(
    port: int, data: bytes, *, wait: float = 3.0, tls: ssl.SSLContext | None = None
) -> bytes:
    """Send ``data`` on a new connection and return everything received until the proxy
    closes it (or ``wait`` seconds pass)."""
    reader, writer = await asyncio.open_connection(HOST, port, ssl=tls)
    writer.write(data)
    received = bytearray()
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                received += chunk
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
    return bytes(received)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the peer closes the connection (after any bytes) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def get(path: str = "/", *, close: bool = True, extra: str = "") -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: app.test\r\n{conn}{extra}\r\n".encode()
