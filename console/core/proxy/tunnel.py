"""Upgraded connections (WebSocket): bytes copied both ways, pinned to one colour.

A tunnel stays on the colour it started on; after a switch away from that colour, the
tunnels still open there are closed after ``drain`` seconds, so clients reconnect to the
new live colour and nothing talks to the stand-by for long.
"""

from __future__ import annotations

import asyncio
import contextlib

from console.core.models import Colour
from console.core.proxy.channel import Channel

_HIGH_WATER = 256 * 1024


class Tunnels:
    """The open tunnels by colour, and their closing after a switch."""

    __slots__ = ("_drains", "_open", "drain")

    def __init__(self, drain: float) -> None:
        self.drain = drain
        self._open: dict[Colour, set[tuple[Channel, Channel]]] = {c: set() for c in Colour}
        self._drains: set[asyncio.TimerHandle] = set()

    def count(self) -> int:
        return sum(len(s) for s in self._open.values())

    def on_switch(self, old: Colour, new: Colour) -> None:
        """The live colour moved from ``old``: close its tunnels after the drain time."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def close_old() -> None:
            if handle is not None:
                self._drains.discard(handle)
            self.close(old)

        handle = loop.call_later(self.drain, close_old)
        self._drains.add(handle)

    def close(self, colour: Colour | None = None) -> None:
        for c in [colour] if colour is not None else list(Colour):
            for client, upstream in list(self._open[c]):
                client.close()
                upstream.close()

    def cancel_drains(self) -> None:
        for handle in self._drains:
            handle.cancel()
        self._drains.clear()

    async def run(self, colour: Colour, client: Channel, upstream: Channel, early: bytes) -> None:
        """Copy bytes both ways until either side closes (or the drain closes both)."""
        pair = (client, upstream)
        self._open[colour].add(pair)
        try:
            if early:
                upstream.write(early)
            up = asyncio.ensure_future(_copy(upstream, client))
            try:
                await _copy(client, upstream)
            finally:
                # One direction ended: the tunnel is over (WebSocket closes are
                # end-to-end messages, already copied by now).
                client.close()
                upstream.close()
                with contextlib.suppress(Exception):
                    await up
        finally:
            self._open[colour].discard(pair)


async def _copy(src: Channel, dst: Channel) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read():
            dst.write(data)
            if dst.write_backlog > _HIGH_WATER:
                await dst.drain()
