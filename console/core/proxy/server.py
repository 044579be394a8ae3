"""The listener: accepts clients (TCP or TLS), caps connections, serves each in order.

Connection cap: every client connection costs a file descriptor, and so does its
upstream connection; the agent needs more for health probes, the control plane and SSH.
``max_connections`` defaults to what the process's descriptor limit leaves after that
reserve. At the cap, the client that has waited longest for a request head (an idle
keep-alive or a slowloris) is closed to make room; only when every connection is busy
is the newcomer answered 503. So a flood of slow or idle connections cannot keep
requests that arrive whole from being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl as ssl_module
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from console.core.proxy.fast import ClientConn, Continuation, FastLane
from console.core.proxy.forward import (
    ClientTimeout,
    Forwarder,
    PassiveDownCallback,
    Timeouts,
    error_response,
)
from console.core.proxy.pool import RouteTable
from console.core.proxy.request import ClientGone, HttpError, RequestReader, Trusted
from console.core.proxy.tally import ErrorReport, ErrorTally
from console.core.proxy.tunnel import Tunnels

MAX_HEAD = 64 * 1024
FD_RESERVE = 128
"""Descriptors kept for everything but proxied connections (probes, Redis, SSH, logs)."""
_HIGH_WATER = 256 * 1024


def default_max_connections(pool_size: int = 0) -> int:
    """Client connections the descriptor limit allows: two descriptors each (client and
    upstream), after the reserve and the idle upstream pool (at most a quarter)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    usable = soft - FD_RESERVE
    return max(16, (usable - min(pool_size, usable // 4)) // 2)


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Counters since the proxy started, per colour that served (or failed) requests."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    """Requests that ended in a proxy-made 5xx or a broken response, by the colour tried."""
    retries: dict[str, int] = field(default_factory=dict)
    """Requests retried on this colour (stand-by retries and fresh-connection retries)."""
    latency: dict[str, tuple[tuple[int, ...], float]] = field(default_factory=dict)
    """Per colour: responses per bucket of ``LATENCY_BUCKETS`` (plus one past them) and the
    sum of seconds, time to the first byte of each upstream answer."""
    unroutable: int = 0
    """Requests answered 502 because no upstream could take them."""
    open_connections: int = 0
    upgraded: int = 0
    """Upgraded (WebSocket) connections open right now."""
    rejected: int = 0
    """Connections answered 503 because every connection slot was busy."""
    evicted: int = 0
    """Idle or slow connections closed to make room for new ones at the cap."""
    max_connections: int = 0


class Proxy:
    """The reverse proxy server. ``await start()``, then ``await close()``.

    Args:
        routes: where requests go.
        listen: ``host:port`` to listen on (port 0 picks a free one; see ``port``).
        retry_on_5xx: retry idempotent, replayable requests that got a 5xx on the stand-by.
        connect_timeout: seconds to connect to an upstream before it counts as down.
        response_timeout: seconds to wait for the first byte of a response (then 504).
        idle_timeout: seconds a client keep-alive connection may sit idle.
        head_timeout: seconds a request head may take from its first byte.
        body_timeout: seconds one read of a request body may wait.
        max_connections: client connections at once (default: from the fd limit).
        max_head: bytes a request head may have (431 beyond).
        trusted_proxies: addresses or networks whose X-Forwarded-* headers are kept.
        tls_cert, tls_key: PEM files; when given the listener speaks TLS.
        ws_drain: seconds upgraded connections stay open on a colour after a switch away.
        on_passive_down: called with (upstream, reason) when a failure marks one down.
        on_error: called with (kind, count, detail) for errors, at most once a minute
            per kind after the first.
    """

    def __init__(
        self,
        routes: RouteTable,
        listen: str = "127.0.0.1:8080",
        *,
        retry_on_5xx: bool = False,
        connect_timeout: float = 2.0,
        response_timeout: float = 60.0,
        idle_timeout: float = 75.0,
        head_timeout: float = 10.0,
        body_timeout: float = 30.0,
        max_connections: int | None = None,
        max_head: int = MAX_HEAD,
        trusted_proxies: Sequence[str] = (),
        tls_cert: str | None = None,
        tls_key: str | None = None,
        ws_drain: float = 10.0,
        on_passive_down: PassiveDownCallback | None = None,
        on_error: ErrorReport | None = None,
    ) -> None:
        self.routes = routes
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "0.0.0.0"
        self.port = int(port)
        self.timeouts = Timeouts(
            head=head_timeout,
            body=body_timeout,
            idle=idle_timeout,
            connect=connect_timeout,
            first_byte=response_timeout,
        )
        pool = sum(u.max_idle for u in routes.upstreams())
        self.max_connections = max_connections or default_max_connections(pool)
        self.max_head = max_head
        self._trusted = Trusted(trusted_proxies)
        self._ssl: ssl_module.SSLContext | None = None
        if tls_cert:
            ctx = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls_cert, tls_key)
            self._ssl = ctx
        self._proto = b"https" if self._ssl else b"http"
        self.tally = ErrorTally(on_error)
        self.tunnels = Tunnels(ws_drain)
        self._fwd = Forwarder(
            routes, self.timeouts, max_head=max_head, retry_on_5xx=retry_on_5xx,
            tunnels=self.tunnels, tally=self.tally, on_passive_down=on_passive_down,
        )  # fmt: skip
        self._server: asyncio.Server | None = None
        self._clients: dict[ClientConn, None] = {}
        self._waiting: dict[ClientConn, None] = {}
        """Connections waiting for a request head, the longest-waiting first."""
        self._lane: FastLane | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._rejected = 0
        self._evicted = 0
        self._closing = False

    @property
    def address(self) -> str:
        """``host:port`` actually listened on."""
        return f"{self.host}:{self.port}"

    @property
    def retry_on_5xx(self) -> bool:
        return self._fwd.retry_on_5xx

    async def start(self) -> None:
        """Start listening.

        Raises:
            OSError: the address cannot be bound (in use, not local, no permission).
        """
        loop = asyncio.get_running_loop()
        lane = self._lane = FastLane(
            self._fwd, self._proto, max_head=self.max_head, accepted=self._accepted,
            go_slow=self._go_slow, forget=self._forget, waiting=self._waiting,
        )  # fmt: skip
        self._server = await loop.create_server(
            lambda: ClientConn(lane), self.host, self.port, backlog=1024, ssl=self._ssl,
            ssl_handshake_timeout=self.timeouts.head if self._ssl else None,
        )  # fmt: skip
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.routes.listeners.append(self.tunnels.on_switch)
        self._reaper = asyncio.ensure_future(self._reap())

    def stats(self) -> ProxyStats:
        """The counters right now."""
        counters = self._fwd.counters
        return ProxyStats(
            requests={c.value: k.requests for c, k in counters.items()},
            errors={c.value: k.errors for c, k in counters.items()},
            retries={c.value: k.retries for c, k in counters.items()},
            latency={
                c.value: (tuple(k.latency_counts), k.latency_sum) for c, k in counters.items()
            },
            unroutable=self._fwd.unroutable,
            open_connections=len(self._clients),
            upgraded=self.tunnels.count(),
            rejected=self._rejected,
            evicted=self._evicted,
            max_connections=self.max_connections,
        )

    def _accepted(self, conn: ClientConn) -> None:
        if self._closing:
            conn.close()
            return
        if len(self._clients) >= self.max_connections and not self._make_room():
            self._rejected += 1
            self.tally.note("over_capacity", f"{self.max_connections} connections busy")
            conn.write(error_response(503, "too many connections", True))
            conn.close()
            return
        conn.reader = RequestReader(conn, self.max_head, time.monotonic)
        peer = conn.peer()
        conn.peer_b = peer.encode()
        conn.trusted = peer in self._trusted
        conn.active_at = time.monotonic()
        self._clients[conn] = None
        self._waiting[conn] = None

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head, if any."""
        for victim in self._waiting:
            self._evicted += 1
            self.tally.note("evicted", "idle or slow client closed at the connection cap")
            self._forget(victim)
            victim.abort()
            if victim.task is not None:
                victim.task.cancel()
            return True
        return False

    def _forget(self, conn: ClientConn) -> None:
        self._waiting.pop(conn, None)
        self._clients.pop(conn, None)

    def _go_slow(self, conn: ClientConn, first: Continuation | None) -> None:
        """Hand the connection to a task on the full path (``first`` continues a request
        the fast lane started)."""
        conn.task = asyncio.ensure_future(self._serve(conn, first))

    async def _reap(self) -> None:
        """Timeouts of connections in the fast lane, which have no task to time out."""
        t = self.timeouts
        every = min(max(min(t.head, t.idle, t.first_byte) / 4, 0.05), 1.0)
        lane = self._lane
        assert lane is not None
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            self._fwd.leave_hung()
            for conn in list(self._clients):
                if conn.task is not None:
                    continue
                flight = conn.flight
                reader = conn.reader
                if flight is not None:
                    if now > flight.deadline:
                        lane.timed_out(flight)
                    else:
                        lane.leave_hung(flight)
                elif reader is not None and reader.in_head:
                    if now - reader.head_started > t.head:
                        conn.abort()
                elif now - conn.active_at > t.idle:
                    conn.close()

    async def _serve(self, conn: ClientConn, first: Continuation | None) -> None:
        """The full path for one connection, until it is idle again (then back to the fast
        lane) or closed."""
        back_to_fast = False
        try:
            back_to_fast = await self._serve_requests(conn, first)
        except HttpError as e:  # a malformed head or body: nothing was answered yet
            self.tally.note("bad_request", str(e))
            conn.write(error_response(e.status, str(e), True))
        except ClientTimeout:
            self.tally.note("client_timeout", "request body stalled")
            conn.write(error_response(408, "request body timed out", True))
        except TimeoutError:
            pass  # idle or slow head: closing is the answer
        except (ClientGone, OSError):
            pass
        except asyncio.CancelledError:
            # Only close() and eviction cancel these tasks; ending normally keeps the
            # loop from logging a cancelled task's "exception".
            pass
        except Exception as e:  # never a traceback per connection: counted, logged once
            self.tally.note("internal", f"{type(e).__name__}: {e}")
        finally:
            conn.task = None
            if back_to_fast:
                conn.active_at = time.monotonic()
            else:
                self._forget(conn)
                conn.close()

    async def _serve_requests(self, conn: ClientConn, first: Continuation | None) -> bool:
        """Serve requests in order; True when the connection is idle and fit for the fast
        lane again, False when it must close."""
        t = self.timeouts
        reader = conn.reader
        assert reader is not None
        waiting = self._waiting
        if first is not None:
            waiting.pop(conn, None)
            if not await first() or self._closing:
                return False
            waiting[conn] = None
        while True:
            if conn.write_backlog > _HIGH_WATER:
                await conn.drain(t.body)
            if not reader.queued and not conn.buffered and not reader.in_head:
                return not conn.at_eof and not conn.lost
            head = await reader.head(t.idle, t.head)
            if head is None:
                return False
            waiting.pop(conn, None)
            keep = await self._fwd.handle(head, reader, conn, conn.peer_b, self._proto,
                                          conn.trusted)  # fmt: skip
            if not keep or self._closing:
                return False
            waiting[conn] = None

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace`` s, close all."""
        self._closing = True
        if self._lane is not None:
            self._lane.closing = True
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(ValueError):
            self.routes.listeners.remove(self.tunnels.on_switch)

        self.tunnels.cancel_drains()
        self.tunnels.close()
        deadline = time.monotonic() + grace
        # Idle keep-alive connections close now; busy ones get until the deadline.
        while True:
            for conn in list(self._waiting):
                self._forget(conn)
                conn.close()
            if not self._clients or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        tasks = [c.task for c in self._clients if c.task is not None]
        for conn in list(self._clients):
            if conn.task is None:
                self._forget(conn)
                conn.abort()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        self.routes.close()
        self.tally.flush()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None
