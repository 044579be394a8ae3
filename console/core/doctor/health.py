"""Each host's health URL: does it answer, how fast against the probe timeout, what it costs.

The agent fails a probe that takes longer than ``[failover] timeout``; a health path that
is usually fast but has a slow tail marks a healthy host down now and then, which is the
first surprise of an app whose "health check" is its home page. So several probes are
timed here with a generous timeout, and the p95 is compared with the agent's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from dataclasses import dataclass

import httpx

from console.core.config import Config, HostConfig
from console.core.doctor.model import Check, fail, ok, warn
from console.core.health import PROBE_HEADERS, HealthChecker
from console.core.models import Colour

SAMPLES = 8
"""Probes per host, the first not counted (fewer if they are slow: see ``BUDGET``)."""
BUDGET = 3.0
"""Seconds of probing per host after which no new probe starts."""
LARGE_BODY = 64 * 1024
"""A health answer above this is a page, not a health check: it costs every probe."""
COMMON_PATHS = ("/health", "/healthz", "/status", "/ping", "/")
_VERSION_HEADERS = ("x-version", "x-app-version", "x-release", "x-git-commit", "x-revision")
_VERSION_FIELDS = ("version", "commit", "git_sha", "sha", "revision", "release", "build")


@dataclass(frozen=True, slots=True)
class Timing:
    """What timing a host's health URL found."""

    samples: tuple[float, ...]
    """Seconds per probe that answered."""
    status: int | None
    size: int
    error: str | None = None
    response: httpx.Response | None = None

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _subject(colour: str, host: HostConfig, hosts: int) -> str:
    return colour if hosts == 1 else f"{colour}/{host.name}"


async def time_probes(client: httpx.AsyncClient, url: str, per_probe: float) -> Timing:
    """Probe ``url`` up to ``SAMPLES`` times within ``BUDGET`` s; never raises."""
    samples: list[float] = []
    started = time.monotonic()
    last: httpx.Response | None = None
    while len(samples) < SAMPLES and (not samples or time.monotonic() - started < BUDGET):
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(per_probe):
                last = await client.get(url)
        except TimeoutError:
            return Timing(tuple(samples), None, 0, f"no answer within {per_probe:g} s")
        except httpx.HTTPError as e:
            return Timing(tuple(samples), None, 0, _http_error(e))
        samples.append(time.perf_counter() - t0)
    assert last is not None
    # The first probe also opens the connection; the agent keeps it open, so that cost is
    # paid once, not per probe: left out of the figure when there are others.
    timed = samples[1:] if len(samples) > 2 else samples
    return Timing(tuple(timed), last.status_code, len(last.content), response=last)


def _http_error(error: httpx.HTTPError) -> str:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]


async def _answering_paths(client: httpx.AsyncClient, host: HostConfig) -> list[str]:
    """Which of the usual health paths answer ``expect_status`` (for the fix line)."""
    base = host.url.rstrip("/")

    async def one(path: str) -> str | None:
        try:
            async with asyncio.timeout(2.0):
                response = await client.get(base + path)
        except (TimeoutError, httpx.HTTPError):
            return None
        return path if response.status_code == host.expect_status else None

    found = await asyncio.gather(*(one(p) for p in COMMON_PATHS))
    return [p for p in found if p is not None]


def version_candidates(response: httpx.Response) -> list[str]:
    """``version = ...`` values that would work for this answer (headers, JSON fields)."""
    # .raw keeps the names as the app wrote them (X-Version, not x-version).
    names = [name.decode("latin-1") for name, _ in response.headers.raw]
    found = [f"header:{name}" for name in names if name.lower() in _VERSION_HEADERS]
    try:
        data = json.loads(response.content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        found += [f"json:{k}" for k, v in data.items() if k.lower() in _VERSION_FIELDS and v]
    return found


async def check_health(config: Config) -> list[Check]:
    """Every host's health URL, timed, then its version source; hosts concurrently."""
    per_probe = max(config.failover.timeout * 5, 2.0)
    # The version is read by the product's HealthChecker, with a timeout long enough that
    # a slow health answer (reported above) still shows whether the version is found.
    generous = dataclasses.replace(
        config, failover=dataclasses.replace(config.failover, timeout=per_probe)
    )
    checker = HealthChecker(generous, hysteresis=False)
    try:
        async with httpx.AsyncClient(
            headers=PROBE_HEADERS, follow_redirects=False, timeout=httpx.Timeout(per_probe)
        ) as client:
            jobs = [
                _host(config, checker, client, colour, host, per_probe)
                for colour, host in config.all_hosts()
            ]
            results = await asyncio.gather(*jobs)
    finally:
        await checker.aclose()
    return [check for checks in results for check in checks]


async def _host(
    config: Config,
    checker: HealthChecker,
    client: httpx.AsyncClient,
    colour: Colour,
    host: HostConfig,
    per_probe: float,
) -> list[Check]:
    env = config.env(colour)
    subject = _subject(colour.value, host, len(env.hosts))
    key = f"env.{colour}" if len(env.hosts) == 1 else f"env.{colour}.hosts[{host.name}]"
    url = host.health_url
    timing = await time_probes(client, url, per_probe)
    if timing.error is not None:
        return [
            fail(
                "health",
                subject,
                f"GET {url}: {timing.error}",
                f"start the app, or correct {key}.url and health_path",
            ),
            fail("version", subject, "not checked: the health URL does not answer", "see above"),
        ]
    checks: list[Check] = []
    if timing.status != host.expect_status:
        paths = [p for p in await _answering_paths(client, host) if p != host.health_path]
        fix = (
            f"set {key}.health_path to one that answers {host.expect_status}: " + ", ".join(paths)
            if paths
            else f"add a light health endpoint to the app and set {key}.health_path"
        )
        checks.append(
            fail(
                "health",
                subject,
                f"GET {url} answered {timing.status}, want {host.expect_status}",
                fix,
            )
        )
    else:
        checks.append(_latency(config, subject, key, host, timing))
    checks.extend(_cost(subject, key, host, timing))
    checks.append(await _version(checker, subject, key, host, timing))
    return checks


def _latency(config: Config, subject: str, key: str, host: HostConfig, timing: Timing) -> Check:
    timeout = config.failover.timeout
    p95 = timing.p95
    n = len(timing.samples)
    said = (
        f"{host.expect_status} in p95 {p95 * 1000:.0f} ms over {n} probes "
        f"(probe timeout {timeout * 1000:.0f} ms, [failover] timeout)"
    )
    if p95 > timeout:
        return warn(
            "health",
            subject,
            f"{said}: SLOWER than the timeout, so the agent will count healthy probes as "
            "failures and can mark the host down",
            f"point {key}.health_path at a light endpoint (no page rendering, no heavy "
            f"queries), or raise [failover] timeout above {p95 * 1.5:.2f}",
        )
    if p95 > timeout / 2:
        return warn(
            "health",
            subject,
            f"{said}: above half the timeout, a slow moment fails the probe",
            f"use a lighter health path, or raise [failover] timeout to {p95 * 2.5:.2f}",
        )
    return ok("health", subject, said)


def _cost(subject: str, key: str, host: HostConfig, timing: Timing) -> list[Check]:
    checks: list[Check] = []
    if host.health_path in ("", "/"):
        checks.append(
            warn(
                "health",
                subject,
                "the health path is / (the home page): every probe renders a page, and a "
                "broken dependency the page does not touch goes unnoticed",
                f"add a light /health to the app (checks its database and Redis, answers "
                f"200 with a few bytes) and set {key}.health_path",
            )
        )
    if timing.size > LARGE_BODY:
        checks.append(
            warn(
                "health",
                subject,
                f"the health answer is {timing.size / 1024:.0f} KB: the agent fetches it "
                "several times a second",
                f"answer health with a few bytes ({key}.health_path)",
            )
        )
    return checks


async def _version(
    checker: HealthChecker, subject: str, key: str, host: HostConfig, timing: Timing
) -> Check:
    candidates = version_candidates(timing.response) if timing.response is not None else []
    hint = (
        f"set {key}.version = {candidates[0]!r} (found in the health answer)"
        if candidates
        else "expose the version or git commit (an X-Version header, a JSON field of "
        f"the health answer, or a /version path) and set {key}.version"
    )
    if host.version is None:
        return warn(
            "version",
            subject,
            "no version source: a deploy cannot tell the new release from the old one "
            "(version unknown)",
            hint,
        )
    source = f"{host.version.kind}:{host.version.value}"
    # The product's own probe, so what is checked is what deploys and the console read.
    probe = await checker.probe(host)
    if probe.version:
        return ok("version", subject, f"{source} reads {probe.version!r}")
    why = probe.error or "nothing found there"
    return fail("version", subject, f"{source} reads no version ({why})", hint)
