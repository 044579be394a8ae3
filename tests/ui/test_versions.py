"""Versions shown are the latest probe's; a host that broke shows none as current."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from ui_support import fake_config

from console.core.health import HealthChecker
from console.core.models import Colour, HostHealth, Probe
from console.widgets.host_table import host_cells, version_detail, version_seen


def _host(*probes: Probe, up: bool = True) -> HostHealth:
    return HostHealth(Colour.GREEN, "green", "http://g", up, probes[-1], 0, 0, probes)


def test_a_version_seen_before_failures_is_not_current() -> None:
    good = Probe(100.0, True, 200, 2.0, "1.0.0")
    bad = Probe(101.0, False, 500, 2.0, None, "HTTP 500 (want 200)")
    host = _host(good, bad, bad, up=False)
    seen = version_seen(host)
    assert (seen.version, seen.current) == ("1.0.0", False)
    assert host_cells(host)["version"].plain == "last seen 1.0.0"
    assert host_cells(host, wide_version=False)["version"].plain == "-"
    assert "unknown now; last seen 1.0.0, 3.0s ago" in version_detail(host, 103.0)


def test_the_newest_reported_version_wins_even_from_a_failing_answer() -> None:
    good = Probe(100.0, True, 200, 2.0, "1.0.0")
    bad = Probe(101.0, False, 500, 2.0, "1.1.0", "HTTP 500 (want 200)")
    host = _host(good, bad, up=False)
    seen = version_seen(host)
    assert (seen.version, seen.current) == ("1.1.0", True)
    assert host_cells(host)["version"].plain == "1.1.0"


def test_a_healthy_host_keeps_a_path_version_between_version_probes() -> None:
    first = Probe(100.0, True, 200, 2.0, "2.0.0")
    later = Probe(101.0, True, 200, 2.0, None)
    assert version_seen(_host(first, later, later)).current


async def test_the_probe_reads_the_version_from_a_500_answer(tmp_path: Path) -> None:
    # Reported: after a bad deploy green showed 1.0.0 while the host answered 1.1.0.
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "version": "1.1.0"}
        return httpx.Response(500, content=json.dumps(body).encode())

    config = fake_config(tmp_path)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        checker = HealthChecker(config, client=client)
        probe = await checker.probe(config.env(Colour.GREEN).hosts[0])
    assert not probe.ok
    assert probe.version == "1.1.0"
