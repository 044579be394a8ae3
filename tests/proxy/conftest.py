"""Fixtures: a recording upstream per colour and a proxy in front of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from proxy_support import ProxyFactory, Recorder

from console.core.models import Colour
from console.core.proxy import Proxy, RouteTable


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Recorder, Recorder]]:
    blue = await Recorder("blue").start()
    green = await Recorder("green").start()
    yield blue, green
    await blue.close()
    await green.close()


@pytest.fixture
async def make_proxy(upstreams: tuple[Recorder, Recorder]) -> AsyncIterator[ProxyFactory]:
    """``await make_proxy(**options)``: a started proxy in front of the two recorders."""
    started: list[Proxy] = []

    async def factory(**kwargs: Any) -> Proxy:
        blue, green = upstreams
        routes = RouteTable.from_urls({Colour.BLUE: [blue.url], Colour.GREEN: [green.url]})
        proxy = Proxy(routes, "127.0.0.1:0", **kwargs)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        await proxy.close(grace=0.5)
