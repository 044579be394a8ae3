"""Health probes over HTTP: per-host history, fall/rise hysteresis, environment verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from console import __version__
from console.core.config import Config, HostConfig
from console.core.models import Colour, EnvHealth, HealthSnapshot, HostHealth, Probe, Verdict

SnapshotCallback = Callable[[HealthSnapshot], Awaitable[None] | None]

# Fetching a version from its own path costs a second request; do it on the first good
# probe and then every so many, since versions change only on deploys.
_VERSION_PATH_EVERY = 10
_MAX_VERSION_LEN = 64

PROBE_USER_AGENT = f"bgconsole-probe/{__version__}"
"""Sent with every health probe, so an app's access log can tell probes from users
(``bgconsole logs`` hides lines holding ``PROBE_MARK``; ``--all`` shows them)."""
PROBE_MARK = "bgconsole-probe/"
PROBE_HEADERS = {"User-Agent": PROBE_USER_AGENT, "X-BG-Probe": "1"}


@dataclass(slots=True)
class _HostTracker:
    """Mutable per-host state behind the frozen :class:`HostHealth` views."""

    colour: Colour
    host: HostConfig
    history: deque[Probe]
    up: bool | None = None
    """None until the first verdict; then flips only after ``fall``/``rise`` probes."""
    failures: int = 0
    successes: int = 0
    probes: int = 0
    version: str | None = None

    def observe(self, probe: Probe, fall: int, rise: int, hysteresis: bool) -> None:
        self.history.append(probe)
        self.probes += 1
        if probe.version is not None:
            self.version = probe.version
        if probe.ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
        if not hysteresis:
            self.up = probe.ok
        elif self.up is None:
            # A fresh host needs one good probe to be up, but `fall` bad ones to be down:
            # an agent that just started must not fail over on a single blip.
            if probe.ok:
                self.up = True
            elif self.failures >= fall:
                self.up = False
        elif self.up and self.failures >= fall:
            self.up = False
        elif not self.up and self.successes >= rise:
            self.up = True

    @property
    def changing(self) -> bool:
        """Between states: failing but not yet down, recovering but not yet up, or new."""
        if self.up is None:
            return True
        return (self.up and self.failures > 0) or (not self.up and self.successes > 0)

    def view(self) -> HostHealth:
        return HostHealth(
            colour=self.colour,
            host=self.host.name,
            url=self.host.url,
            up=bool(self.up),
            last=self.history[-1] if self.history else None,
            consecutive_failures=self.failures,
            consecutive_successes=self.successes,
            history=tuple(self.history),
        )


@dataclass(slots=True)
class _Env:
    colour: Colour
    trackers: list[_HostTracker] = field(default_factory=list)

    def verdict(self) -> Verdict:
        states = [t.up for t in self.trackers]
        if states and all(states):
            return Verdict.HEALTHY
        if any(states):
            return Verdict.DEGRADED
        if any(s is None for s in states):
            return Verdict.UNKNOWN
        return Verdict.DOWN


class HealthChecker:
    """Probes every host of both environments concurrently and keeps their state.

    One shared ``httpx.AsyncClient`` (keep-alive to each host); each probe is bounded by
    ``[failover] timeout``, so a host that hangs costs only its own timeout.
    """

    def __init__(
        self,
        config: Config,
        *,
        hysteresis: bool = True,
        concurrency: int = 64,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """Args:
        config: the configuration; hosts and the [failover] probe settings come from it.
        hysteresis: apply fall/rise; False makes ``up`` the last probe's result, which is
            what a one-shot ``bgconsole status`` wants.
        concurrency: probes in flight at once, for fleets of many hosts.
        client: an httpx client to use instead of creating one (closed by the caller).
        """
        self.config = config
        self.policy = config.failover
        self.hysteresis = hysteresis
        self._semaphore = asyncio.Semaphore(concurrency)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(self.policy.timeout),
            follow_redirects=False,
            headers=PROBE_HEADERS,
            limits=httpx.Limits(max_keepalive_connections=concurrency),
        )
        self._envs = {colour: _Env(colour) for colour in Colour}
        for colour, host in config.all_hosts():
            tracker = _HostTracker(colour, host, deque(maxlen=self.policy.history))
            self._envs[colour].trackers.append(tracker)
        self.last: HealthSnapshot | None = None
        """The most recent snapshot, None before the first round."""
        self._wake = asyncio.Event()

    async def aclose(self) -> None:
        """Close the HTTP client if this checker created it."""
        if self._own_client:
            await self._client.aclose()

    async def probe(self, host: HostConfig, *, want_version: bool = True) -> Probe:
        """Probe one host once; never raises."""
        started_wall = time.time()
        started = time.perf_counter()
        try:
            async with self._semaphore, asyncio.timeout(self.policy.timeout):
                response = await self._client.get(host.health_url)
                latency = (time.perf_counter() - started) * 1000
                ok = response.status_code == host.expect_status
                version = None
                # A failing answer still says which release gave it (a header, a JSON
                # field): the version shown is the latest probe's, not the last good one's.
                # A path: source costs another request, so only on a good probe.
                if want_version and (ok or (host.version and host.version.kind != "path")):
                    version = await self._version(host, response)
        except TimeoutError:
            return Probe(
                started_wall, False, None, None, error=f"timeout after {self.policy.timeout:g}s"
            )
        except httpx.HTTPError as e:
            return Probe(started_wall, False, None, None, error=_describe_http_error(e))
        error = None if ok else f"HTTP {response.status_code} (want {host.expect_status})"
        return Probe(started_wall, ok, response.status_code, round(latency, 2), version, error)

    async def _version(self, host: HostConfig, response: httpx.Response) -> str | None:
        source = host.version
        if source is None:
            return None
        value: object = None
        if source.kind == "header":
            value = response.headers.get(source.value)
        elif source.kind == "json":
            with contextlib.suppress(ValueError):
                value = _dig(json.loads(response.content), source.value)
        else:
            extra = await self._client.get(host.url.rstrip("/") + source.value)
            if extra.status_code == 200:
                value = extra.text.strip().splitlines()[0] if extra.text.strip() else None
        if value is None or isinstance(value, dict | list):
            return None
        return str(value)[:_MAX_VERSION_LEN]

    async def check_all(self) -> HealthSnapshot:
        """Probe every host once (concurrently), update hysteresis, return the snapshot."""
        trackers = [t for env in self._envs.values() for t in env.trackers]

        async def probe_one(tracker: _HostTracker) -> None:
            want_version = tracker.host.version is not None and (
                tracker.host.version.kind != "path"
                or tracker.version is None
                or tracker.probes % _VERSION_PATH_EVERY == 0
            )
            probe = await self.probe(tracker.host, want_version=want_version)
            tracker.observe(probe, self.policy.fall, self.policy.rise, self.hysteresis)

        await asyncio.gather(*(probe_one(t) for t in trackers))
        self.last = self.snapshot()
        return self.last

    def snapshot(self) -> HealthSnapshot:
        """The current state without probing."""
        envs = {
            colour: EnvHealth(colour, env.verdict(), tuple(t.view() for t in env.trackers))
            for colour, env in self._envs.items()
        }
        return HealthSnapshot(at=time.time(), envs=envs)

    def poke(self) -> None:
        """Probe again now, e.g. because the proxy just saw a connection to a host fail."""
        self._wake.set()

    def _next_delay(self) -> float:
        # Like HAProxy's fastinter: once a host starts failing (or recovering), confirm
        # quickly, so `fall` failures cost about interval + (fall-1) x fast_interval
        # rather than fall x interval. Steady hosts are probed at the normal pace.
        trackers = (t for env in self._envs.values() for t in env.trackers)
        if any(t.changing for t in trackers):
            return min(self.policy.fast_interval, self.policy.interval)
        return self.policy.interval

    async def run(self, on_snapshot: SnapshotCallback) -> None:
        """Probe forever, calling ``on_snapshot`` after each round.

        Rounds start every ``[failover] interval`` (``fast_interval`` while a host is
        changing state, at once after :meth:`poke`); a slow round delays the next one,
        rounds never overlap. Cancel the task to stop.
        """
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._wake.clear()
            snapshot = await self.check_all()
            result = on_snapshot(snapshot)
            if inspect.isawaitable(result):
                await result
            remaining = started + self._next_delay() - loop.time()
            if remaining > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()


def _dig(data: object, dotted: str) -> object:
    """``a.b.c`` into nested JSON objects; None if any step is missing."""
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _describe_http_error(error: httpx.HTTPError) -> str:
    """A short, operator-readable cause (``connection refused``, ``timeout``)."""
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        cause = cause.__cause__ or cause.__context__
    text = str(error).strip()
    if "refused" in text.lower() or "errno 111" in text.lower():
        return "connection refused"
    return text.splitlines()[0][:120] if text else type(error).__name__
