"""The proxy on uvloop (``bgconsole[fast]``): the same behaviour on the faster loop."""

from __future__ import annotations

import asyncio

import pytest
from proxy_support import Recorder, get, parse_replies, send_raw

from console.core.models import Colour
from console.core.proxy import Proxy, RouteTable, fastloop

uvloop = pytest.importorskip("uvloop")
pytestmark = pytest.mark.integration


async def _round_trip() -> tuple[str, list[int]]:
    blue, green = await Recorder("blue").start(), await Recorder("green").start()
    routes = RouteTable.from_urls({Colour.BLUE: [blue.url], Colour.GREEN: [green.url]})
    proxy = Proxy(routes, "127.0.0.1:0")
    await proxy.start()
    try:
        raw = await send_raw(proxy.port, get("/a", close=False) + b"POST /b HTTP/1.1\r\n"
                             b"Host: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             b"3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
        return fastloop.active(), [r.status for r in parse_replies(raw)]
    finally:
        await proxy.close(grace=0.2)
        await blue.close()
        await green.close()


def test_install_makes_asyncio_run_use_uvloop() -> None:
    try:
        assert fastloop.install()
        assert asyncio.run(_round_trip()) == ("uvloop", [200, 200])
    finally:
        asyncio.set_event_loop_policy(None)
