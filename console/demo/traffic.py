"""Background traffic through the router: page views and uploads, a few per second."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import httpx

_NAMES = ("cat", "invoice", "holiday", "report", "avatar", "receipt", "diagram", "song")
_EXTENSIONS = ("jpg", "pdf", "png", "csv", "mp3")


@dataclass(slots=True)
class TrafficStats:
    """What the generator saw, by answering colour (``X-BG-Env``) and outcome."""

    requests: int = 0
    errors: int = 0
    """Requests that got no response or a 5xx."""
    by_colour: Counter[str] = field(default_factory=Counter)
    uploads: int = 0


class TrafficGenerator:
    """GET / mostly, POST /uploads every ``write_every`` requests, at ``rate`` per second.

    Errors are counted, never raised or printed: during a failover some requests fail, and
    the demo terminal must stay quiet.
    """

    def __init__(self, base_url: str, *, rate: float = 4.0, write_every: int = 4) -> None:
        self.base_url = base_url
        self.rate = rate
        self.write_every = write_every
        self.stats = TrafficStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sending in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="demo-traffic")

    async def stop(self) -> None:
        """Stop sending and close the client."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) and current.cancelling():
                    raise
            self._task = None

    async def _run(self) -> None:
        timeout = httpx.Timeout(2.0)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as client:
            while True:
                await self._one(client)
                await asyncio.sleep(1.0 / self.rate)

    async def _one(self, client: httpx.AsyncClient) -> None:
        self.stats.requests += 1
        try:
            if self.stats.requests % self.write_every == 0:
                name = f"{random.choice(_NAMES)}-{random.randrange(1000):03d}"
                name += f".{random.choice(_EXTENSIONS)}"
                response = await client.post("/uploads", json={"name": name})
                if response.status_code == 201:
                    self.stats.uploads += 1
            else:
                response = await client.get("/")
        except httpx.HTTPError:
            self.stats.errors += 1
            return
        if response.status_code >= 500:
            self.stats.errors += 1
        self.stats.by_colour[response.headers.get("X-BG-Env", "?")] += 1
