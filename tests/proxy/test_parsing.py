"""Hostile requests on raw sockets: refused with 400 and a close, never forwarded.

Each case once reached the upstream (or hung) through the first builtin proxy; the
upstream here records what it received, so "refused" also means "nothing arrived".
"""

from __future__ import annotations

import asyncio

import pytest
from proxy_support import ProxyFactory, Recorder, get, parse_replies, send_raw

pytestmark = pytest.mark.integration

_H = "POST / HTTP/1.1\r\nHost: app.test\r\n"
REFUSED = {
    "cl and te": _H + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "negative cl": _H + "Content-Length: -1\r\n\r\n",
    "plus cl": _H + "Content-Length: +5\r\n\r\nhello",
    "underscore cl": _H + "Content-Length: 1_0\r\n\r\n0123456789",
    "two cls": _H + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "space before colon": _H + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": "GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\r\n b\r\n\r\n",
    "chunked, identity": _H + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "xchunked": _H + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "gzip, chunked": _H + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "two te": _H + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "nul in value": "GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\x00b\r\n\r\n",
    "bare cr in value": "GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\rb\r\n\r\n",
    "huge chunk size": _H + "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
    "0x chunk size": _H + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "signed chunk size": _H + "Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    "chunk without crlf": _H + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "http/1.1 without host": "GET / HTTP/1.1\r\n\r\n",
    "two hosts": "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "te on http/1.0": "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "http/0.9": "GET /\r\n\r\n",
    "space in target": "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare lf": "GET / HTTP/1.1\nHost: a\n\n",
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_refused_with_400_and_close_and_never_forwarded(
    name: str, make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    proxy = await make_proxy(body_timeout=2.0)
    # The raw request, then a valid one on the same connection: it must not be served.
    raw = await send_raw(proxy.port, REFUSED[name].encode("latin-1") + get("/after"))
    replies = parse_replies(raw)
    assert [r.status for r in replies] in ([400], [505]), raw[:300]
    assert replies[0].header("connection") == "close"
    blue, green = upstreams
    assert blue.requests == []
    assert green.requests == []


async def test_oversized_head_is_431_and_limit_is_configurable(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    proxy = await make_proxy(max_head=4096)
    big = get("/", extra="X-Big: " + "a" * 5000 + "\r\n")
    assert [r.status for r in parse_replies(await send_raw(proxy.port, big))] == [431]
    fits = get("/", extra="X-Big: " + "a" * 3000 + "\r\n")
    assert [r.status for r in parse_replies(await send_raw(proxy.port, fits))] == [200]
    assert len(upstreams[0].requests) == 1


async def test_chunked_body_is_reframed_never_forwarded_raw(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    proxy = await make_proxy()
    raw = (
        _H + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "5;ext=evil\r\nhello\r\n000006\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    replies = parse_replies(await send_raw(proxy.port, raw.encode()))
    assert replies[0].status == 200
    assert replies[0].json()["body"] == "hello world"
    sent = bytes(upstreams[0].raw[0])
    assert b"ext=evil" not in sent
    assert b"000006" not in sent
    assert b"X-Trailer" not in sent
    assert sent.endswith(b"\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")


async def test_pipelined_requests_answered_in_order(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy()
    raw = get("/one", close=False) + get("/slow?0.2", close=False) + get("/three")
    replies = parse_replies(await send_raw(proxy.port, raw))
    assert [r.json()["target"] for r in replies] == ["/one", "/slow?0.2", "/three"]


async def test_http10_without_host_gets_one_upstream(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    proxy = await make_proxy()
    replies = parse_replies(await send_raw(proxy.port, b"GET /old HTTP/1.0\r\n\r\n"))
    assert replies[0].status == 200
    received = upstreams[0].requests[0]
    assert received.version == "1.1"
    assert received.header("host") == f"127.0.0.1:{upstreams[0].port}"


async def test_http10_client_gets_close_delimited_never_chunked(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy()
    raw = await send_raw(proxy.port, b"GET /chunked HTTP/1.0\r\nHost: a\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert body == b"hello world"  # then the proxy closed the connection


async def test_head_204_304_and_1xx_framing(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy()
    # HEAD: Content-Length kept as metadata, no body; the next response on the same
    # connection must start right after the head.
    raw = await send_raw(proxy.port, b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n" + get("/next"))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 5" in head
    assert rest.startswith(b"HTTP/1.1 200")
    assert parse_replies(rest)[0].json()["target"] == "/next"
    raw = await send_raw(proxy.port, get("/204", close=False) + get("/304", close=False)
                         + get("/103"))  # fmt: skip
    replies = parse_replies(raw)
    assert [r.status for r in replies] == [204, 304, 200]
    assert b"Content-Length: 0" not in raw.split(b"\r\n\r\n")[0]  # nothing added to a 204
    assert b"103" not in raw.split(b"\r\n", 1)[0]
    assert b"Early Hints" not in raw


async def test_hop_by_hop_and_forwarded_headers(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    proxy = await make_proxy()
    extra = (
        "Connection: X-Secret, keep-alive\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"
        "Forwarded: for=6.6.6.6\r\nX-Kept: yes\r\n"
    )
    await send_raw(proxy.port, get("/", extra=extra))
    got = upstreams[0].requests[0]
    assert not got.names() & {"x-secret", "keep-alive", "te", "connection", "forwarded"}
    assert got.header("x-forwarded-for") == "127.0.0.1"
    assert got.header("x-forwarded-proto") == "http"
    assert got.header("x-forwarded-host") == "app.test"
    assert got.header("x-kept") == "yes"
    trusting = await make_proxy(trusted_proxies=["127.0.0.1"])
    await send_raw(trusting.port, get("/", extra=extra))
    got = upstreams[0].requests[1]
    assert got.header("x-forwarded-for") == "6.6.6.6, 127.0.0.1"
    assert got.header("x-forwarded-proto") == "https"


async def test_expect_100_continue_answered_before_the_body(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    async with asyncio.timeout(2):
        interim = await reader.readuntil(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    async with asyncio.timeout(2):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    assert b'"body": "hello"' in body
    writer.close()


async def test_valid_requests_before_a_malformed_one_are_answered_first(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    proxy = await make_proxy()
    await send_raw(proxy.port, get("/warm"))  # a pooled connection: the fast lane
    for first in (get("/one", close=False), get("/slow?0.2", close=False)):
        raw = await send_raw(proxy.port, first + b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n")
        replies = parse_replies(raw)
        assert [r.status for r in replies] == [200, 400]
        assert replies[1].header("connection") == "close"


async def test_framing_on_warm_connections(make_proxy: ProxyFactory) -> None:
    """The same framing when requests take the fast lane (a pooled upstream connection)."""
    proxy = await make_proxy()
    await send_raw(proxy.port, get("/warm"))
    raw = await send_raw(proxy.port, b"GET /chunked HTTP/1.0\r\nHost: a\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body == b"hello world"
    replies = parse_replies(await send_raw(proxy.port, get("/chunked")))
    assert replies[0].body == b"hello world"
    assert replies[0].header("transfer-encoding") == "chunked"
    raw = await send_raw(proxy.port, b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n" + get("/next"))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 5" in head
    assert parse_replies(rest)[0].json()["target"] == "/next"
    raw = await send_raw(proxy.port, get("/close", close=False))
    assert raw.endswith(b"\r\n\r\nuntil close")
    assert b"Connection: close" in raw
    replies = parse_replies(await send_raw(proxy.port, get("/204", close=False) + get("/x")))
    assert [r.status for r in replies] == [204, 200]
