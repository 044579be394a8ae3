"""Prometheus metrics of the agent (``[agent] metrics_listen``), with prometheus-client.

Two kinds of numbers, kept apart on purpose:

- **what happens** (probes, failovers, held decisions, control-plane losses, drift
  episodes) is counted by :class:`AgentMetrics` when the agent calls its ``on_*`` hooks;
- **what is** (the proxy's counters, open connections, the colour served, the epoch,
  leadership) is read from the agent when Prometheus scrapes, by a custom collector.
  The builtin proxy already counts requests, errors and retries for its heartbeat; reading
  those at scrape time keeps the proxy's hot path free of a second set of counters.

Every agent has its own :class:`~prometheus_client.CollectorRegistry` (not the process's
global one), so several agents in one process (tests, the demo) never share a series.

``/metrics`` is served by :class:`MetricsServer`, a small asyncio HTTP/1.1 responder in
the agent's own event loop: prometheus-client's ``start_http_server`` would add a thread
that reads the agent's state while the loop mutates it; in the loop, a scrape sees one
consistent instant and costs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from console.core.config import parse_listen
from console.core.models import ActiveState, Colour, HealthSnapshot, Verdict
from console.core.proxy import Proxy, ProxyStats
from console.core.proxy.forward import LATENCY_BUCKETS

# Probe latency buckets: a health page answers in milliseconds; the probe timeout
# ([failover] timeout, 0.4 s by default) caps what a probe can take.
_PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_HEAD_LIMIT = 16 * 1024
_READ_TIMEOUT = 5.0


class AgentView(Protocol):
    """What the scrape-time collector reads from the agent (:class:`~console.core.agent.Agent`)."""

    serving: Colour
    active: ActiveState | None
    leader: bool
    armed: bool
    control_error: str | None
    proxy: Proxy | None


class AgentMetrics:
    """The agent's metrics: counters fed by hooks, gauges read at scrape time."""

    def __init__(self, agent: AgentView | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.probes = Counter(
            "bgconsole_probes",
            "Health probes by host and result (ok: the expected status arrived).",
            ["colour", "host", "result"],
            registry=r,
        )
        self.probe_seconds = Histogram(
            "bgconsole_probe_duration_seconds",
            "Health probe latency by host (probes that got an answer).",
            ["colour", "host"],
            buckets=_PROBE_BUCKETS,
            registry=r,
        )
        self.host_up = Gauge(
            "bgconsole_host_up",
            "1 while a host is up after fall/rise hysteresis, else 0.",
            ["colour", "host"],
            registry=r,
        )
        self.env_verdict = Gauge(
            "bgconsole_env_verdict",
            "1 for each colour's current verdict (healthy, degraded, down, unknown).",
            ["colour", "verdict"],
            registry=r,
        )
        self.failovers = Counter(
            "bgconsole_failovers",
            "Automatic switches this agent committed, by action and the colour made live.",
            ["action", "colour"],
            registry=r,
        )
        self.held = Counter(
            "bgconsole_failover_held",
            "Failovers the policy held back while the live colour was down, once per cause.",
            ["code"],
            registry=r,
        )
        self.control_lost = Counter(
            "bgconsole_control_plane_lost",
            "Times the control plane became unreachable (the agent went fail static).",
            registry=r,
        )
        self.drift_episodes = Counter(
            "bgconsole_router_drift",
            "Times the router was found disagreeing with the control plane.",
            registry=r,
        )
        self.route_changes = Counter(
            "bgconsole_route_changes",
            "Times the colour this agent routes to changed, by the new colour.",
            ["colour"],
            registry=r,
        )
        # Zero series exist before the first event, so rate() and increase() see the
        # first failover as a step from 0 rather than a series appearing.
        for colour in Colour:
            self.route_changes.labels(colour.value)
            for action in ("failover", "failback"):
                self.failovers.labels(action, colour.value)
        self._seen: dict[tuple[str, str], float] = {}
        self._control_ok: bool | None = None
        self._drift: str | None = None
        if agent is not None:
            self.registry.register(AgentCollector(agent, self))

    # -- hooks the agent calls ------------------------------------------------------------

    def on_snapshot(self, snapshot: HealthSnapshot) -> None:
        """A probe round finished: count each host's new probe and its latency."""
        for colour, env in snapshot.envs.items():
            for verdict in Verdict:
                self.env_verdict.labels(colour.value, verdict.value).set(
                    1.0 if env.verdict is verdict else 0.0
                )
            for host in env.hosts:
                self.host_up.labels(colour.value, host.host).set(1.0 if host.up else 0.0)
                probe = host.last
                key = (colour.value, host.host)
                if probe is None or self._seen.get(key) == probe.at:
                    continue
                self._seen[key] = probe.at
                result = "ok" if probe.ok else "fail"
                self.probes.labels(colour.value, host.host, result).inc()
                if probe.latency_ms is not None:
                    self.probe_seconds.labels(colour.value, host.host).observe(
                        probe.latency_ms / 1000
                    )

    def on_decision(self, action: str, to: Colour | None) -> None:
        """The agent committed an automatic switch (``failover`` or ``failback``)."""
        if to is not None:
            self.failovers.labels(action, to.value).inc()

    def on_held(self, code: str) -> None:
        """The agent recorded a held failover (once per cause, like the event)."""
        self.held.labels(code or "held").inc()

    def on_route(self, colour: Colour) -> None:
        """The colour the agent routes to changed."""
        self.route_changes.labels(colour.value).inc()

    def on_control(self, ok: bool) -> None:
        """The control plane answered (``ok``) or was found unreachable."""
        if not ok and self._control_ok is not False:
            self.control_lost.inc()
        self._control_ok = ok

    @property
    def drift(self) -> str | None:
        """How the router disagrees with the control plane, as last reported."""
        return self._drift

    def on_drift(self, drift: str | None) -> None:
        """The router disagrees (``drift`` says how) or is in line again (None)."""
        if drift is not None and self._drift is None:
            self.drift_episodes.inc()
        self._drift = drift


class AgentCollector(Collector):
    """Reads the agent's state and the proxy's counters when Prometheus scrapes."""

    def __init__(self, agent: AgentView, metrics: AgentMetrics) -> None:
        self.agent = agent
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Nothing to describe up front: the families depend on the router kind.
        return []

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        live = GaugeMetricFamily(
            "bgconsole_live_colour",
            "1 for the colour this agent routes to (the control plane's, or the last known "
            "while it is unreachable).",
            labels=["colour"],
        )
        for colour in Colour:
            live.add_metric([colour.value], 1.0 if agent.serving is colour else 0.0)
        yield live
        epoch = agent.active.epoch if agent.active is not None else 0
        yield GaugeMetricFamily(
            "bgconsole_epoch", "The live colour's epoch as last read (+1 per switch).", epoch
        )
        yield GaugeMetricFamily(
            "bgconsole_control_plane_up",
            "1 while the control plane answers the agent, 0 while it routes fail static.",
            0.0 if agent.control_error is not None else 1.0,
        )
        yield GaugeMetricFamily(
            "bgconsole_leader", "1 while this agent holds the leader lease.", float(agent.leader)
        )
        yield GaugeMetricFamily(
            "bgconsole_failover_armed",
            "1 while automatic failover is armed (as the control plane says).",
            float(agent.armed),
        )
        yield GaugeMetricFamily(
            "bgconsole_router_drift_active",
            "1 while the router disagrees with the control plane (leader's view).",
            0.0 if self.metrics.drift is None else 1.0,
        )
        if agent.proxy is not None:
            yield from _proxy_families(agent.proxy.stats(), dict(agent.proxy.tally.totals))


def _proxy_families(stats: ProxyStats, kinds: dict[str, int]) -> Iterator[Metric]:
    """The builtin proxy's counters as Prometheus families (labels: ``colour``)."""
    for name, values, text in (
        ("requests", stats.requests, "Requests the builtin proxy sent to a colour."),
        (
            "errors",
            stats.errors,
            "Requests that ended in a proxy-made 5xx or a broken response, by colour tried.",
        ),
        ("retries", stats.retries, "Requests retried on a colour (stand-by or fresh connection)."),
    ):
        family = CounterMetricFamily(f"bgconsole_proxy_{name}", text, labels=["colour"])
        for colour in Colour:
            family.add_metric([colour.value], float(values.get(colour.value, 0)))
        yield family
    latency = HistogramMetricFamily(
        "bgconsole_proxy_upstream_latency_seconds",
        "Time from sending a request upstream to the first byte of the answer, by colour.",
        labels=["colour"],
    )
    for colour in Colour:
        counts, total = stats.latency.get(colour.value, ((0,) * (len(LATENCY_BUCKETS) + 1), 0.0))
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        latency.add_metric([colour.value], buckets, sum_value=total)
    yield latency
    errors = CounterMetricFamily(
        "bgconsole_proxy_error_events",
        "Proxy errors by class (bad_request, upstream_502, upstream_504, response_broken, "
        "client_timeout, over_capacity, evicted, ...).",
        labels=["class"],
    )
    for kind, count in sorted(kinds.items()):
        errors.add_metric([kind], float(count))
    yield errors
    yield CounterMetricFamily(
        "bgconsole_proxy_unroutable",
        "Requests answered 502 because no upstream could take them.",
        float(stats.unroutable),
    )
    yield CounterMetricFamily(
        "bgconsole_proxy_rejected_connections",
        "Connections answered 503 because every connection slot was busy.",
        float(stats.rejected),
    )
    yield GaugeMetricFamily(
        "bgconsole_proxy_open_connections",
        "Client connections open right now.",
        float(stats.open_connections),
    )
    yield GaugeMetricFamily(
        "bgconsole_proxy_upgraded_connections",
        "Upgraded (WebSocket) connections open right now.",
        float(stats.upgraded),
    )
    yield GaugeMetricFamily(
        "bgconsole_proxy_max_connections",
        "The connection cap.",
        float(stats.max_connections),
    )


class MetricsServer:
    """``GET /metrics`` on ``HOST:PORT``, served in the agent's event loop.

    Plain HTTP/1.1, one request per connection (Prometheus opens one per scrape); the
    exposition format follows the scraper's ``Accept`` (text or OpenMetrics), written by
    prometheus-client's own encoder.
    """

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        self.registry = registry
        self.listen = listen
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str | None:
        """``host:port`` actually bound (port 0 picks one)."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        """Bind the listener.

        Raises:
            OSError: the address cannot be bound.
        """
        host, port = parse_listen(self.listen, any_port=True)
        self._server = await asyncio.start_server(self._serve, host, port, limit=_HEAD_LIMIT)

    async def close(self) -> None:
        """Stop listening (scrapes in flight are cut: they are retried next interval)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self._answer(head)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if not head.startswith(b"HEAD "):
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
        if target.split("?", 1)[0] not in ("/metrics", "/"):
            return "404 Not Found", "text/plain", b"see /metrics\n"
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        encoder, content_type = choose_encoder(accept)
        return "200 OK", content_type, encoder(self.registry)
