"""Timeouts and limits: slow or idle clients are closed, a flood of them cannot keep
whole requests out, and errors are logged once with a count."""

from __future__ import annotations

import asyncio
import resource

import pytest
from proxy_support import HOST, ProxyFactory, Recorder, closed_within, get, parse_replies, send_raw

from console.core.proxy import default_max_connections

pytestmark = pytest.mark.integration


async def test_stalled_body_gets_408_and_close(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(body_timeout=0.3)
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
    async with asyncio.timeout(2):
        raw = await reader.read(65536)
    assert raw.startswith(b"HTTP/1.1 408")
    assert await closed_within(reader, 1.0)
    writer.close()


async def test_slow_head_and_idle_keepalive_are_closed(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(head_timeout=0.4, idle_timeout=0.3)
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    writer.write(b"GET / HTTP/1.1\r\n")
    for _ in range(3):  # a byte now and then never extends the head's deadline
        await asyncio.sleep(0.1)
        writer.write(b"X")
    assert await closed_within(reader, 1.0)
    writer.close()
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    writer.write(get("/", close=False))
    async with asyncio.timeout(1):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert await closed_within(reader, 1.0)
    writer.close()


async def test_a_flood_of_slow_connections_does_not_keep_requests_out(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(max_connections=20)
    slow = [await asyncio.open_connection(HOST, proxy.port) for _ in range(60)]
    for _reader, writer in slow:
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")  # and never the end of the head
    await asyncio.sleep(0.1)
    for _ in range(5):
        replies = parse_replies(await send_raw(proxy.port, get("/legit")))
        assert [r.status for r in replies] == [200]
    stats = proxy.stats()
    assert stats.open_connections <= 20
    assert stats.evicted >= 40
    for _reader, writer in slow:
        writer.close()


async def test_every_slot_busy_is_a_clean_503(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(max_connections=3)
    busy = [asyncio.create_task(send_raw(proxy.port, get("/slow?0.5"))) for _ in range(3)]
    await asyncio.sleep(0.2)
    raw = await send_raw(proxy.port, get("/"))
    assert raw.startswith(b"HTTP/1.1 503")
    assert all(r.startswith(b"HTTP/1.1 200") for r in await asyncio.gather(*busy))
    assert proxy.stats().rejected == 1


def test_max_connections_follow_the_descriptor_limit() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = (soft - 128 - min(128, (soft - 128) // 4)) // 2
    assert default_max_connections(128) == max(16, expected)


async def test_repeated_errors_are_reported_once_with_a_count(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    reports: list[tuple[str, int, str]] = []
    proxy = await make_proxy(on_error=lambda kind, n, detail: reports.append((kind, n, detail)))
    for _ in range(20):
        await send_raw(proxy.port, b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
    assert [(k, n) for k, n, _ in reports] == [("bad_request", 1)]
    await proxy.close(grace=0.1)
    assert [(k, n) for k, n, _ in reports] == [("bad_request", 1), ("bad_request", 19)]
