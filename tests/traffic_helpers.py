"""Test helpers for switch and failover tests: a real front door and a file-backed router.

``FrontDoor`` is a tiny asyncio HTTP/1.1 proxy on 127.0.0.1 that forwards each request
to whichever backend a callable names (e.g. the colour written in a file), the way a
load balancer behind the ``command`` router kind would.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from console.core.config import Config
from console.core.control import ControlPlane
from console.core.models import Colour
from console.core.router.base import Router
from console.core.router.factory import build_router

HOST = "127.0.0.1"


class FrontDoor:
    """Forward every request to ``pick()`` (a ``host:port``), one connection per request."""

    def __init__(self, pick: Callable[[], str]) -> None:
        self.pick = pick
        self.port = 0
        self._server: asyncio.Server | None = None
        self._client = httpx.AsyncClient(timeout=5.0)
        self.served: list[str] = []
        """The backend address each request went to, in order."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> FrontDoor:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._client.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
                length = int(headers.get("Content-Length", "0").strip() or 0)
                body = await reader.readexactly(length) if length else b""
                target = self.pick()
                self.served.append(target)
                try:
                    response = await self._client.request(
                        method, f"http://{target}{path}", content=body
                    )
                    status, reason = response.status_code, response.reason_phrase
                    payload = response.content
                    env = response.headers.get("X-BG-Env")
                except httpx.HTTPError:
                    status, reason, payload, env = 502, "Bad Gateway", b"bad gateway\n", None
                out = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(payload)}\r\n"
                if env is not None:
                    out += f"X-BG-Env: {env}\r\n"
                out += "Connection: close\r\n\r\n"
                writer.write(out.encode("latin-1") + payload)
                await writer.drain()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class ColourFile:
    """The router state of the ``command`` kind in tests: a file holding the live colour."""

    def __init__(self, path: Path, initial: Colour = Colour.BLUE) -> None:
        self.path = path
        self.write(initial)

    def write(self, colour: Colour | str) -> None:
        self.path.write_text(str(colour))

    def read(self) -> str:
        return self.path.read_text().strip()

    @property
    def switch_command(self) -> str:
        return f"printf %s {{colour}} > {shlex.quote(str(self.path))}"

    @property
    def state_command(self) -> str:
        return f"cat {shlex.quote(str(self.path))}"


def make_router(config: Config, control: ControlPlane) -> Router:
    """The configured router adapter, built the way the CLI builds it."""
    return build_router(config, control)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait until ``await check()`` is true, polling every 50 ms; fail after ``within`` s."""
    for _ in range(int(within / 0.05) + 1):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {within:g} s")
