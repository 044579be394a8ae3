"""The builtin reverse proxy against real HTTP backends on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from servers import HttpBackend, HttpBackendFactory

from console.core.models import Colour
from console.core.proxy import Proxy, RouteTable

pytestmark = pytest.mark.integration


class EchoServer:
    """A real asyncio HTTP/1.1 server that answers with what it received, chunked.

    The shared test backend reads Content-Length bodies only; this one also reads chunked
    bodies and answers chunked, and reports the request head so forwarded headers can be
    checked. It counts connections, to see upstream keep-alive.
    """

    def __init__(self, colour: str) -> None:
        self.colour = colour
        self.connections = 0
        self.close_after_response = False
        """Close each connection after one response, without saying so (stale pool)."""
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)
                }
                size = 0
                if headers.get("transfer-encoding") == "chunked":
                    while True:
                        n = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(n + 2)
                        size += n
                        if n == 0:
                            break
                elif "content-length" in headers:
                    size = len(await reader.readexactly(int(headers["content-length"])))
                body = json.dumps({"headers": headers, "received": size}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                    b"Content-Type: application/json\r\n\r\n"
                )
                half = len(body) // 2
                for part in (body[:half], body[half:]):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                if self.close_after_response:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def echo_pair() -> AsyncIterator[tuple[EchoServer, EchoServer]]:
    blue, green = EchoServer("blue"), EchoServer("green")
    await blue.start()
    await green.start()
    yield blue, green
    await blue.close()
    await green.close()


@pytest.fixture
async def make_proxy() -> AsyncIterator[Callable[..., Any]]:
    started: list[Proxy] = []

    async def factory(blue: str, green: str, **kwargs: Any) -> Proxy:
        routes = RouteTable.from_urls({Colour.BLUE: [blue], Colour.GREEN: [green]})
        proxy = Proxy(routes, "127.0.0.1:0", **kwargs)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        await proxy.close(grace=1.0)


def client(proxy: Proxy) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://{proxy.address}", timeout=10.0)


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


async def test_get_and_post_reach_the_live_colour(
    backends: tuple[HttpBackend, HttpBackend], make_proxy: Callable[..., Any]
) -> None:
    blue, green = backends
    proxy = await make_proxy(blue.url, green.url)
    async with client(proxy) as http:
        response = await http.get("/hello")
        assert response.status_code == 200
        assert response.headers["x-bg-env"] == "blue"
        assert response.text == "blue 1.0\n"
        big = b"x" * (3 * 1024 * 1024)  # larger than any buffer: streamed
        response = await http.post("/upload", content=big)
        assert response.text == f"blue 1.0 received {len(big)} bytes\n"
        small = await http.post("/form", content=b"a=1")
        assert small.text == "blue 1.0 received 3 bytes\n"
    assert proxy.stats().requests["blue"] == 3


async def test_forwarded_headers_chunked_bodies_and_keepalive(
    echo_pair: tuple[EchoServer, EchoServer], make_proxy: Callable[..., Any]
) -> None:
    blue, green = echo_pair
    # The test client is a trusted proxy: its X-Forwarded-For is extended, not replaced.
    proxy = await make_proxy(blue.url, green.url, trusted_proxies=["127.0.0.0/8"])

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"y" * 10_000

    async with client(proxy) as http:
        response = await http.post("/c", content=chunks(), headers={"X-Forwarded-For": "10.1.1.1"})
        assert response.headers["x-bg-env"] == "blue"
        data = response.json()
        assert data["received"] == 500_000
        headers = data["headers"]
        assert headers["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-host"] == proxy.address
        assert "connection" not in headers
        for _ in range(5):
            assert (await http.get("/again")).json()["received"] == 0
        assert proxy.stats().open_connections == 1
    # Six requests over one client connection, and one upstream connection reused.
    assert blue.connections == 1
    assert green.connections == 0


async def test_switch_applies_to_next_request_while_in_flight_finishes(
    backends: tuple[HttpBackend, HttpBackend], make_proxy: Callable[..., Any]
) -> None:
    blue, green = backends
    proxy = await make_proxy(blue.url, green.url)
    blue.set_mode("slow", delay=1.0)
    async with client(proxy) as http:
        slow = asyncio.create_task(http.get("/slow"))
        await asyncio.sleep(0.3)
        proxy.routes.set_live(Colour.GREEN)
        fast = await http.get("/next")
        assert fast.headers["x-bg-env"] == "green"
        assert not slow.done()
        finished = await slow
        assert finished.status_code == 200
        assert finished.headers["x-bg-env"] == "blue"


async def test_killed_live_backend_get_retried_on_standby_post_refused(
    backends: tuple[HttpBackend, HttpBackend], make_proxy: Callable[..., Any]
) -> None:
    blue, green = backends
    downs: list[str] = []
    proxy = await make_proxy(
        blue.url, green.url, on_passive_down=lambda up, why: downs.append(up.name)
    )
    async with client(proxy) as http:
        assert (await http.get("/")).headers["x-bg-env"] == "blue"  # warm the pool
        blue.kill()
        for _ in range(3):
            response = await http.get("/")
            assert response.status_code == 200
            assert response.headers["x-bg-env"] == "green"
        posted = await http.post("/order", content=b"{}")
        assert posted.status_code == 502
        assert "no healthy upstream" in posted.text
    # The dead host cost one failed connect, then was skipped.
    assert downs == [blue.address]
    assert proxy.stats().retries["green"] >= 3


async def test_retry_on_5xx_is_opt_in(
    backends: tuple[HttpBackend, HttpBackend], make_proxy: Callable[..., Any]
) -> None:
    blue, green = backends
    blue.set_mode("500")
    plain = await make_proxy(blue.url, green.url)
    retrying = await make_proxy(blue.url, green.url, retry_on_5xx=True)
    async with client(plain) as http:
        assert (await http.get("/")).status_code == 500
    async with client(retrying) as http:
        response = await http.get("/")
        assert response.status_code == 200
        assert response.headers["x-bg-env"] == "green"
        assert (await http.post("/", content=b"x")).status_code == 500  # not idempotent


async def test_nothing_to_serve_is_a_502_with_a_reason(make_proxy: Callable[..., Any]) -> None:
    from servers import free_port

    proxy = await make_proxy(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
    async with client(proxy) as http:
        response = await http.get("/")
    assert response.status_code == 502
    assert response.text.startswith("bgconsole proxy:")
    assert proxy.stats().unroutable == 1


async def test_close_lets_in_flight_requests_finish(
    backends: tuple[HttpBackend, HttpBackend], make_proxy: Callable[..., Any]
) -> None:
    blue, green = backends
    proxy = await make_proxy(blue.url, green.url)
    blue.set_mode("slow", delay=0.5)
    async with client(proxy) as http:
        slow = asyncio.create_task(http.get("/slow"))
        await asyncio.sleep(0.2)
        await proxy.close(grace=3.0)
        assert (await slow).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await http.get("/after")


async def test_upstream_closing_idle_connections_costs_no_errors(
    echo_pair: tuple[EchoServer, EchoServer], make_proxy: Callable[..., Any]
) -> None:
    blue, green = echo_pair
    blue.close_after_response = True
    proxy = await make_proxy(blue.url, green.url)
    async with client(proxy) as http:
        for _ in range(5):
            response = await http.get("/")
            assert response.status_code == 200
            await asyncio.sleep(0.05)  # let the close arrive while the connection is pooled
    assert blue.connections == 5
    assert proxy.stats().errors["blue"] == 0
