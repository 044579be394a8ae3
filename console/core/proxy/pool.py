"""Upstreams: where each host is, whether it may take requests, its idle connections.

:class:`RouteTable` says which colour is live and picks an available upstream of a colour
(round-robin). Passive health: a failed connect takes an upstream out of rotation at
once, until a later good probe (or ``passive_hold`` seconds without a monitor).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from console.core.models import Colour, HealthSnapshot
from console.core.proxy.channel import Channel

UNSAFE_IDLE_MAX = 2.0
"""Seconds a pooled connection may have been idle and still carry a non-idempotent
request. Servers close idle keep-alive connections after a timeout of their own
(usually 5 s or more); a request written as that close crosses the wire cannot be told
apart from one the application received and died on, so a POST is never resent and
only gets a connection that is unlikely to be in that race."""


class Upstream:
    """One upstream host: its address, passive health and idle connection pool."""

    __slots__ = (
        "_idle",
        "active_up",
        "address",
        "colour",
        "down_at",
        "host",
        "host_header",
        "max_idle",
        "name",
        "port",
        "server_hostname",
        "ssl",
    )

    def __init__(self, colour: Colour, name: str, url: str, max_idle: int = 64) -> None:
        parts = urlsplit(url)
        self.colour = colour
        self.name = name
        self.host = parts.hostname or "127.0.0.1"
        https = parts.scheme == "https"
        self.port = parts.port or (443 if https else 80)
        self.ssl: ssl_module.SSLContext | None = (
            ssl_module.create_default_context() if https else None
        )
        self.server_hostname = self.host if https else None
        self.address = f"{self.host}:{self.port}"
        self.host_header = (parts.netloc or self.address).encode()
        """What an HTTP/1.0 request without Host is sent upstream with."""
        self.max_idle = max_idle
        self.active_up = True
        """What the active health monitor says (up until it says otherwise)."""
        self.down_at: float | None = None
        """Wall-clock time a connect failed (passive health); None while it works."""
        self._idle: list[Channel] = []

    @property
    def available(self) -> bool:
        """Whether new requests may be sent here."""
        return self.active_up and self.down_at is None

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def connect(self, within: float) -> Channel:
        """A new connection.

        Raises:
            OSError: refused, unreachable, TLS failure.
            TimeoutError: not connected within ``within`` seconds.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            _transport, chan = await loop.create_connection(
                Channel, self.host, self.port, ssl=self.ssl, server_hostname=self.server_hostname
            )
        return chan

    def take_idle(self, idempotent: bool) -> Channel | None:
        """A pooled connection fit for another request, or None.

        A connection with unread bytes (a response that overran its framing) or an end of
        stream waiting is closed, not reused: the check costs no round trip.
        """
        idle = self._idle
        now = time.monotonic()
        while idle:
            chan = idle.pop()
            if chan.reusable and (idempotent or now - chan.idle_since < UNSAFE_IDLE_MAX):
                return chan
            chan.close()
        return None

    def give_back(self, chan: Channel) -> None:
        """Return a connection after a complete exchange; closed when the pool is full."""
        if len(self._idle) < self.max_idle and chan.reusable:
            chan.idle_since = time.monotonic()
            self._idle.append(chan)
        else:
            chan.close()

    def close_idle(self) -> None:
        """Close every pooled connection."""
        for chan in self._idle:
            chan.close()
        self._idle.clear()


SwitchListener = Callable[[Colour, Colour], None]


class RouteTable:
    """Which colour is live and which upstreams of each colour may take requests.

    ``set_live`` applies to the next request; requests in flight finish where they are.
    """

    def __init__(
        self,
        upstreams: Mapping[Colour, Sequence[Upstream]],
        live: Colour = Colour.BLUE,
        *,
        passive_hold: float = 5.0,
    ) -> None:
        self._upstreams: dict[Colour, tuple[Upstream, ...]] = {
            c: tuple(upstreams.get(c, ())) for c in Colour
        }
        self._healthy: dict[Colour, tuple[Upstream, ...]] = {}
        self._next: dict[Colour, int] = {c: 0 for c in Colour}
        self.live = live
        self.passive_hold = passive_hold
        """Seconds a passively-marked-down upstream waits before it is tried again when no
        health monitor reports on it (with a monitor, a good probe clears it sooner)."""
        self.listeners: list[SwitchListener] = []
        """Called with (old, new) when the live colour changes (tunnels drain on it)."""
        self._refresh()

    @classmethod
    def from_urls(
        cls, urls: Mapping[Colour, Sequence[str]], live: Colour = Colour.BLUE
    ) -> RouteTable:
        """A table from base URLs per colour (hosts named by their address)."""
        ups = {c: [Upstream(c, urlsplit(u).netloc, u) for u in us] for c, us in urls.items()}
        return cls(ups, live)

    def upstreams(self, colour: Colour | None = None) -> tuple[Upstream, ...]:
        """Every upstream (of one colour, or of both)."""
        if colour is not None:
            return self._upstreams[colour]
        return self._upstreams[Colour.BLUE] + self._upstreams[Colour.GREEN]

    def set_live(self, colour: Colour) -> None:
        """Send the next request to ``colour``."""
        old = self.live
        self.live = colour
        if old is not colour:
            for listener in list(self.listeners):
                listener(old, colour)

    def _refresh(self) -> None:
        self._healthy = {
            c: tuple(u for u in ups if u.available) for c, ups in self._upstreams.items()
        }

    def pick(self, colour: Colour, avoid: Iterable[Upstream] = ()) -> Upstream | None:
        """The next available upstream of ``colour`` (round-robin) not in ``avoid``."""
        healthy = self._healthy[colour]
        if not healthy:
            if not self._expire_passive(colour):
                return None
            healthy = self._healthy[colour]
        if avoid:
            skip = set(avoid)
            healthy = tuple(u for u in healthy if u not in skip)
            if not healthy:
                return None
        i = self._next[colour]
        self._next[colour] = i + 1
        return healthy[i % len(healthy)]

    def _expire_passive(self, colour: Colour) -> bool:
        """Give upstreams marked down longer than ``passive_hold`` ago another chance."""
        now = time.time()
        changed = False
        for up in self._upstreams[colour]:
            if up.down_at is not None and now - up.down_at >= self.passive_hold:
                up.down_at = None
                changed = True
        if changed:
            self._refresh()
        return bool(self._healthy[colour])

    def mark_down(self, upstream: Upstream) -> None:
        """Take an upstream out of rotation after a failure (passive health)."""
        upstream.down_at = time.time()
        upstream.close_idle()
        self._refresh()

    def mark_up(self, upstream: Upstream) -> None:
        """Put an upstream back into rotation."""
        upstream.down_at = None
        upstream.active_up = True
        self._refresh()

    def apply_health(self, snapshot: HealthSnapshot) -> None:
        """Follow the active health monitor's verdicts.

        A passive mark-down is cleared only by a good probe that started after it, so a
        probe already in flight when the host died cannot resurrect it.
        """
        by_name = {(u.colour, u.name): u for u in self.upstreams()}
        for env in snapshot.envs.values():
            for host in env.hosts:
                up = by_name.get((host.colour, host.host))
                if up is None:
                    continue
                up.active_up = host.up
                last = host.last
                if up.down_at is not None and last is not None and last.ok and last.at > up.down_at:
                    up.down_at = None
        self._refresh()

    def close(self) -> None:
        """Close every pooled connection."""
        for up in self.upstreams():
            up.close_idle()


def route_table_from_hosts(
    hosts: Iterable[tuple[Colour, str, str]], live: Colour = Colour.BLUE
) -> RouteTable:
    """A table from ``(colour, host name, base URL)`` triples (e.g. ``Config.all_hosts()``)."""
    ups: dict[Colour, list[Upstream]] = {c: [] for c in Colour}
    for colour, name, url in hosts:
        ups[colour].append(Upstream(colour, name, url))
    return RouteTable(ups, live)
