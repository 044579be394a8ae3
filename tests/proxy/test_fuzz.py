"""A small, bounded fuzz loop: mutated requests never take the proxy down.

Seeded, so a failure reproduces; a few hundred cases keep it under a few seconds. After
the loop the proxy must answer a normal GET, and no error may have been an internal one
(an exception the proxy did not expect).
"""

from __future__ import annotations

import asyncio
import random

import pytest
from proxy_support import ProxyFactory, get, parse_replies, send_raw

pytestmark = pytest.mark.integration

SEEDS = [
    get("/", close=False),
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HEAD / HTTP/1.0\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
]
SPICE = [b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b",", b"-1", b"0x", b"chunked",
         b"Content-Length: 9\r\n", b"Transfer-Encoding: chunked\r\n", b"\xff", b"HTTP/1.1",
         b"FFFFFFFFFFFFFFFFFFFF"]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(out) + 1)
        if op == 0 and out:
            del out[min(i, len(out) - 1)]
        elif op == 1:
            out[i:i] = rng.choice(SPICE)
        elif op == 2 and out:
            out[min(i, len(out) - 1)] = rng.randrange(256)
        else:
            out = out[:i]  # truncated
    return bytes(out)


async def test_mutated_requests_never_take_the_proxy_down(make_proxy: ProxyFactory) -> None:
    reports: list[tuple[str, int, str]] = []
    proxy = await make_proxy(
        head_timeout=0.3, body_timeout=0.3, response_timeout=1.0,
        on_error=lambda kind, n, detail: reports.append((kind, n, detail)),
    )  # fmt: skip
    rng = random.Random(1010)
    cases = [mutate(rng, rng.choice(SEEDS)) for _ in range(240)]
    for start in range(0, len(cases), 40):  # 40 connections at a time
        await asyncio.gather(
            *(send_raw(proxy.port, c, wait=0.4) for c in cases[start : start + 40])
        )
    replies = parse_replies(await send_raw(proxy.port, get("/after")))
    assert [r.status for r in replies] == [200]
    assert [r for r in reports if r[0] == "internal"] == []
    await proxy.close(grace=0.5)
    assert proxy.stats().open_connections == 0
