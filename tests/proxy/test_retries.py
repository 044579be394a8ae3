"""Retries that are safe: a request that may have reached an app is never sent twice
unless it is idempotent; pooled connections are checked before they are reused."""

from __future__ import annotations

import asyncio
import time

import pytest
from proxy_support import ProxyFactory, Recorder, get, parse_replies, send_raw

pytestmark = pytest.mark.integration


def post(path: str, body: bytes = b"{}", close: bool = True) -> bytes:
    conn = "Connection: close\r\n" if close else ""
    head = f"POST {path} HTTP/1.1\r\nHost: a\r\n{conn}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_post_that_reached_a_dying_pooled_connection_is_not_resent(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    blue, green = upstreams
    proxy = await make_proxy()
    # Warm the pool, then the app crashes on the POST after receiving it.
    raw = await send_raw(proxy.port, get("/warm", close=False) + post("/die"))
    assert [r.status for r in parse_replies(raw)] == [200, 502]
    assert blue.count("/die") == 1
    assert green.count("/die") == 0


async def test_idempotent_request_whose_upstream_died_is_retried_elsewhere(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    blue, green = upstreams
    proxy = await make_proxy()
    await send_raw(proxy.port, get("/warm"))
    blue.die = True
    replies = parse_replies(await send_raw(proxy.port, get("/read")))
    assert replies[0].status == 200
    assert replies[0].header("x-bg-env") == "green"
    # The pooled connection first (maybe closed while idle), then a fresh one: the host
    # is dead, so the stand-by answered.
    assert blue.count("/read") == 2
    replies = parse_replies(await send_raw(proxy.port, post("/write")))
    assert replies[0].status == 502
    assert blue.count("/write") == 1
    assert green.count("/write") == 0
    assert proxy.stats().retries["green"] >= 1


async def test_stale_pooled_connection_costs_nothing(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    blue, _green = upstreams
    proxy = await make_proxy()
    await send_raw(proxy.port, get("/stale"))  # answered, then closed while pooled
    await asyncio.sleep(0.1)
    replies = parse_replies(await send_raw(proxy.port, post("/order")))
    assert replies[0].status == 200
    assert blue.count("/order") == 1
    assert proxy.stats().errors["blue"] == 0


async def test_leftover_bytes_on_an_idle_connection_are_never_read_as_a_response(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    blue, _green = upstreams
    proxy = await make_proxy()
    await send_raw(proxy.port, get("/warm"))  # so /garbage takes the fast lane
    raw = await send_raw(proxy.port, get("/garbage", close=False), wait=0.3)
    await asyncio.sleep(0.05)
    raw = await send_raw(proxy.port, get("/next"))
    replies = parse_replies(raw)
    assert replies[0].json()["target"] == "/next"
    assert b"BAD" not in raw
    assert blue.connections == 2


async def test_no_first_byte_in_time_is_a_504_not_a_502(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    proxy = await make_proxy(response_timeout=0.3)
    started = time.monotonic()
    replies = parse_replies(await send_raw(proxy.port, get("/slow?3")))
    assert replies[0].status == 504
    assert time.monotonic() - started < 2.0
    assert upstreams[1].requests == []  # it may still be running on blue: not retried


async def test_warm_connections_split_answers_and_first_byte_timeout(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    """Requests on warm (pooled) connections take the fast lane; the same rules hold."""
    proxy = await make_proxy(response_timeout=0.3)
    raw = get("/warm", close=False) + get("/split", close=False) + get("/slow?3")
    started = time.monotonic()
    replies = parse_replies(await send_raw(proxy.port, raw))
    assert [r.status for r in replies] == [200, 200, 504]
    assert replies[1].json()["target"] == "/split"
    assert time.monotonic() - started < 2.5
    assert upstreams[0].connections == 1


@pytest.mark.parametrize("warm", [False, True])
async def test_hung_live_colour_idempotent_requests_follow_a_switch(
    warm: bool, make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    """A hung app (SIGSTOP-like: it read the request, never answers) that the health
    monitor marks down and the agent fails over from: GETs waiting there go to the new
    live colour; a POST keeps waiting (it may run). A planned switch away from a healthy
    colour lets its requests finish (tests/core/test_proxy.py)."""
    from console.core.models import Colour

    blue, green = upstreams
    proxy = await make_proxy(response_timeout=10.0)
    if warm:  # pooled connections: the fast lane carries the requests
        await asyncio.gather(*(send_raw(proxy.port, get("/warm")) for _ in range(2)))
    blue.delay = 1.5
    hung_get = asyncio.create_task(send_raw(proxy.port, get("/read")))
    hung_post = asyncio.create_task(send_raw(proxy.port, post("/write")))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    proxy.routes.mark_down(proxy.routes.upstreams(Colour.BLUE)[0])
    proxy.routes.set_live(Colour.GREEN)
    replies = parse_replies(await hung_get)
    assert replies[0].status == 200
    assert replies[0].header("x-bg-env") == "green"
    assert time.monotonic() - started < 2.0  # the next reaper pass (<= 1 s)
    posted = parse_replies(await hung_post)
    assert posted[0].header("x-bg-env") == "blue"  # answered where it ran, never resent
    assert green.count("/write") == 0
    assert blue.count("/write") == 1


async def test_retry_on_5xx_on_warm_connections(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder]
) -> None:
    blue, _green = upstreams
    proxy = await make_proxy(retry_on_5xx=True)
    await send_raw(proxy.port, get("/warm"))
    blue.status = 500
    replies = parse_replies(await send_raw(proxy.port, get("/again")))
    assert replies[0].status == 200
    assert replies[0].header("x-bg-env") == "green"
    replies = parse_replies(await send_raw(proxy.port, post("/write")))
    assert replies[0].status == 500  # not idempotent: the live colour's answer stands
