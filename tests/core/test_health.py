"""Health probes: hysteresis (pure) and verdicts against real HTTP backends."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from configs import config_data, write_config
from servers import HttpBackend, HttpBackendFactory

from console.core.config import HostConfig
from console.core.health import HealthChecker, _HostTracker
from console.core.models import Colour, Probe, Verdict


def tracker() -> _HostTracker:
    return _HostTracker(Colour.BLUE, HostConfig("h", "http://h:1"), deque(maxlen=5))


def feed(t: _HostTracker, results: str, fall: int = 3, rise: int = 2) -> list[bool | None]:
    """Feed probes ('+' ok, '-' failed); return the up state after each."""
    states: list[bool | None] = []
    for r in results:
        t.observe(Probe(0.0, r == "+", 200 if r == "+" else None, 1.0), fall, rise, True)
        states.append(t.up)
    return states


def test_fresh_host_is_up_after_one_good_probe() -> None:
    assert feed(tracker(), "+") == [True]


def test_fresh_host_needs_fall_failures_to_be_down() -> None:
    assert feed(tracker(), "---") == [None, None, False]


def test_up_host_goes_down_only_after_fall_consecutive_failures() -> None:
    assert feed(tracker(), "+--+---") == [True, True, True, True, True, True, False]


def test_down_host_needs_rise_consecutive_successes() -> None:
    assert feed(tracker(), "---+-++") == [None, None, False, False, False, False, True]


def test_history_is_bounded_and_counts_reset() -> None:
    t = tracker()
    feed(t, "++++++++--")
    view = t.view()
    assert len(view.history) == 5
    assert view.consecutive_failures == 2
    assert view.consecutive_successes == 0


def test_without_hysteresis_up_is_the_last_probe() -> None:
    t = tracker()
    t.observe(Probe(0.0, False, None, None), 3, 2, False)
    assert t.up is False
    t.observe(Probe(0.0, True, 200, 1.0), 3, 2, False)
    assert t.up is True


MakeChecker = Callable[..., HealthChecker]


@pytest.fixture
async def make_checker(tmp_path: Path) -> AsyncIterator[MakeChecker]:
    checkers: list[HealthChecker] = []

    def make(
        blue: HttpBackend | str, green: HttpBackend | str, **failover: object
    ) -> HealthChecker:
        data = config_data(
            redis_url="redis://127.0.0.1:1/0",
            blue_url=blue if isinstance(blue, str) else blue.url,
            green_url=green if isinstance(green, str) else green.url,
            failover={"fall": 2, "rise": 2, **failover},
        )
        checker = HealthChecker(write_config(tmp_path / "c.toml", data))
        checkers.append(checker)
        return checker

    yield make
    for checker in checkers:
        await checker.aclose()


async def test_probe_reports_status_latency_and_version(
    http_backend_factory: HttpBackendFactory, make_checker: MakeChecker
) -> None:
    blue = http_backend_factory("blue", "1.4.2")
    green = http_backend_factory("green", "1.5.0")
    snapshot = await make_checker(blue, green).check_all()
    assert snapshot.verdict(Colour.BLUE) is Verdict.HEALTHY
    host = snapshot.envs[Colour.GREEN].hosts[0]
    assert host.last is not None
    assert host.last.status == 200
    assert host.last.latency_ms is not None
    assert host.version == "1.5.0"


async def test_verdict_flips_after_fall_and_back_after_rise(
    http_backend_factory: HttpBackendFactory, make_checker: MakeChecker
) -> None:
    blue = http_backend_factory("blue", "1")
    green = http_backend_factory("green", "1")
    checker = make_checker(blue, green, fall=3, rise=2)
    assert (await checker.check_all()).verdict(Colour.BLUE) is Verdict.HEALTHY
    blue.set_mode("500")
    verdicts = [(await checker.check_all()).verdict(Colour.BLUE) for _ in range(3)]
    assert verdicts == [Verdict.HEALTHY, Verdict.HEALTHY, Verdict.DOWN]
    last = checker.snapshot().envs[Colour.BLUE].hosts[0].last
    assert last is not None
    assert last.error == "HTTP 500 (want 200)"
    blue.set_mode("ok")
    verdicts = [(await checker.check_all()).verdict(Colour.BLUE) for _ in range(2)]
    assert verdicts == [Verdict.DOWN, Verdict.HEALTHY]
    assert checker.snapshot().verdict(Colour.GREEN) is Verdict.HEALTHY


async def test_dead_and_hanging_hosts_cost_only_their_timeout(
    http_backend_factory: HttpBackendFactory, make_checker: MakeChecker
) -> None:
    blue = http_backend_factory("blue", "1")
    green = http_backend_factory("green", "1")
    green.set_mode("hang")
    blue.kill()
    checker = make_checker(blue, green, fall=1, timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    snapshot = await checker.check_all()
    assert loop.time() - started < 3  # bounded by the probe timeout, not a hang
    blue_probe = snapshot.envs[Colour.BLUE].hosts[0].last
    green_probe = snapshot.envs[Colour.GREEN].hosts[0].last
    assert blue_probe is not None
    assert blue_probe.error == "connection refused"
    assert green_probe is not None
    assert green_probe.error is not None
    assert "timeout" in green_probe.error
    assert snapshot.verdict(Colour.BLUE) is Verdict.DOWN


async def test_fleet_verdict_is_degraded_when_some_hosts_fail(
    http_backend_factory: HttpBackendFactory, tmp_path: Path
) -> None:
    a, b, g = (http_backend_factory(c, "1") for c in ("blue", "blue", "green"))
    data = config_data(redis_url="redis://127.0.0.1:1/0", blue_url=a.url, green_url=g.url)
    data["env"]["blue"] = {"hosts": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}]}
    checker = HealthChecker(write_config(tmp_path / "c.toml", data), hysteresis=False)
    try:
        b.kill()
        snapshot = await checker.check_all()
        assert snapshot.verdict(Colour.BLUE) is Verdict.DEGRADED
        assert [h.host for h in snapshot.envs[Colour.BLUE].healthy_hosts] == ["a"]
    finally:
        await checker.aclose()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("header:X-Version", "3.1.4"),
        ("json:version", "3.1.4"),
        ("json:missing.field", None),
        ("path:/version", "green 3.1.4"),  # first line of the body, as a version file
    ],
)
async def test_version_sources(
    source: str,
    expected: str | None,
    http_backend_factory: HttpBackendFactory,
    tmp_path: Path,
) -> None:
    blue = http_backend_factory("blue", "1")
    green = http_backend_factory("green", "3.1.4")
    data = config_data(redis_url="redis://127.0.0.1:1/0", blue_url=blue.url, green_url=green.url)
    data["env"]["green"]["version"] = source
    checker = HealthChecker(write_config(tmp_path / "c.toml", data))
    try:
        snapshot = await checker.check_all()
    finally:
        await checker.aclose()
    assert snapshot.envs[Colour.GREEN].hosts[0].version == expected


async def test_a_fleet_is_probed_concurrently_and_hung_hosts_cost_one_timeout(
    http_backend_factory: HttpBackendFactory, tmp_path: Path
) -> None:
    # A few hosts share each test backend (its listen backlog is small; real fleets have
    # one server per host).
    good = [http_backend_factory("blue", "1") for _ in range(4)]
    hung = http_backend_factory("green", "1")
    hung.set_mode("hang")
    hosts = [{"name": f"app{i:02}", "url": good[i % 4].url} for i in range(12)]
    hosts += [{"name": f"stuck{i:02}", "url": hung.url} for i in range(6)]
    data = config_data(
        redis_url="redis://127.0.0.1:1/0", blue_url=good[0].url, green_url=good[0].url
    )
    data["env"]["blue"] = {"hosts": hosts}
    data["failover"]["timeout"] = 0.5
    checker = HealthChecker(write_config(tmp_path / "c.toml", data), hysteresis=False)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        snapshot = await checker.check_all()
        elapsed = loop.time() - started
    finally:
        await checker.aclose()
    blue = snapshot.envs[Colour.BLUE]
    assert len(blue.hosts) == 18
    assert len(blue.healthy_hosts) == 12
    assert blue.verdict is Verdict.DEGRADED
    # Eighteen probes, six of them hanging: one timeout's worth, not six (sequential would
    # take 3 s). Generous bound for a busy machine.
    assert elapsed < 2.0
