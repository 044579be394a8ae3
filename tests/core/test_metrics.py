"""The agent's Prometheus /metrics, scraped over HTTP and parsed with prometheus_client."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from observe_support import eventually, observed_config, running_agent
from prometheus_client.parser import text_string_to_metric_families
from servers import HttpBackend, HttpBackendFactory, RedisServer, free_port

from console.core.agent import Agent
from console.core.config import parse_config
from console.core.errors import ConfigError
from console.core.metrics import AgentMetrics
from console.core.models import Colour

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(agent: Agent, accept: str = "") -> Samples:
    """Every sample of the agent's /metrics, keyed by (name, labels)."""
    assert agent.metrics_server is not None
    url = f"http://{agent.metrics_server.address}/metrics"
    headers = {"Accept": accept} if accept else {}
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


def test_metrics_listen_is_off_by_default_and_checked() -> None:
    base = {
        "console": {"name": "shop"},
        "control": {"redis": "redis://127.0.0.1:1"},
        "router": {"kind": "builtin"},
        "env": {"blue": {"url": "http://127.0.0.1:1"}, "green": {"url": "http://127.0.0.1:2"}},
    }
    assert parse_config(base).agent.metrics_listen is None
    with pytest.raises(ConfigError, match=r"^agent\.metrics_listen: port 99999 out of range"):
        parse_config({**base, "agent": {"metrics_listen": "127.0.0.1:99999"}})


def test_drift_and_control_plane_counters_count_episodes_not_rounds() -> None:
    metrics = AgentMetrics()
    for drift in ("router serves blue", "router serves blue", "router unreadable", None):
        metrics.on_drift(drift)  # the reconcile loop reports every round
    metrics.on_drift("router serves green")
    for ok in (True, False, False, True, False):
        metrics.on_control(ok)
    assert metrics.registry.get_sample_value("bgconsole_router_drift_total") == 2.0
    assert metrics.registry.get_sample_value("bgconsole_control_plane_lost_total") == 2.0


def test_each_agent_has_its_own_registry() -> None:
    # Two sets of the same metric names in one process: the global registry would refuse.
    first, second = AgentMetrics(), AgentMetrics()
    first.on_control(False)
    assert first.registry.get_sample_value("bgconsole_control_plane_lost_total") == 1.0
    assert second.registry.get_sample_value("bgconsole_control_plane_lost_total") == 0.0


async def test_scrape_before_and_after_traffic_and_a_failover(
    redis_server: RedisServer, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    blue, green = backends
    config = observed_config(
        redis_server.url, blue, green, agent={"metrics_listen": f"127.0.0.1:{free_port()}"}
    )
    async with running_agent(config) as agent:
        before = await scrape(agent)
        assert value(before, "bgconsole_live_colour", colour="blue") == 1.0
        assert value(before, "bgconsole_live_colour", colour="green") == 0.0
        assert value(before, "bgconsole_epoch") == 1.0
        assert value(before, "bgconsole_control_plane_up") == 1.0
        assert value(before, "bgconsole_proxy_requests_total", colour="blue") == 0.0
        assert value(before, "bgconsole_failovers_total", action="failover", colour="green") == 0

        async with httpx.AsyncClient(base_url=f"http://{agent.address}", timeout=5.0) as http:
            for _ in range(10):
                assert (await http.get("/")).headers["x-bg-env"] == "blue"

        async def probed() -> bool:
            s = await scrape(agent)
            return value(s, "bgconsole_probes_total", colour="green", host="green", result="ok") > 2

        await eventually(probed)
        after = await scrape(agent)
        assert value(after, "bgconsole_proxy_requests_total", colour="blue") == 10.0
        assert value(after, "bgconsole_proxy_errors_total", colour="blue") == 0.0
        # Every answer was timed: the histogram holds the 10 requests, +Inf is cumulative.
        latency = "bgconsole_proxy_upstream_latency_seconds"
        assert value(after, f"{latency}_count", colour="blue") == 10.0
        assert value(after, f"{latency}_bucket", colour="blue", le="+Inf") == 10.0
        assert value(after, f"{latency}_bucket", colour="blue", le="10.0") == 10.0
        assert value(after, f"{latency}_sum", colour="blue") > 0
        assert value(after, f"{latency}_count", colour="green") == 0.0
        assert value(after, "bgconsole_host_up", colour="blue", host="blue") == 1.0
        assert value(after, "bgconsole_env_verdict", colour="blue", verdict="healthy") == 1.0
        count = value(after, "bgconsole_probe_duration_seconds_count", colour="blue", host="blue")
        assert count >= 1
        assert value(after, "bgconsole_probe_duration_seconds_sum", colour="blue", host="blue") > 0

        blue.kill()

        async def failed_over() -> bool:
            return agent.serving is Colour.GREEN

        await eventually(failed_over)
        final = await scrape(agent)
        assert value(final, "bgconsole_failovers_total", action="failover", colour="green") == 1
        assert value(final, "bgconsole_live_colour", colour="green") == 1.0
        assert value(final, "bgconsole_epoch") == 2.0
        assert value(final, "bgconsole_route_changes_total", colour="green") == 1.0
        assert value(final, "bgconsole_host_up", colour="blue", host="blue") == 0.0
        failed = value(final, "bgconsole_probes_total", colour="blue", host="blue", result="fail")
        assert failed >= 2  # fall = 2


async def test_control_plane_loss_is_a_gauge_and_a_counter(
    redis_server: RedisServer, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    blue, green = backends
    config = observed_config(
        redis_server.url, blue, green, agent={"metrics_listen": f"127.0.0.1:{free_port()}"}
    )
    async with running_agent(config) as agent:
        redis_server.stop()

        async def down() -> bool:
            return value(await scrape(agent), "bgconsole_control_plane_up") == 0.0

        await eventually(down)
        samples = await scrape(agent)
        assert value(samples, "bgconsole_control_plane_lost_total") == 1.0
        assert value(samples, "bgconsole_live_colour", colour="blue") == 1.0  # fail static
        redis_server.start()

        async def up() -> bool:
            return value(await scrape(agent), "bgconsole_control_plane_up") == 1.0

        await eventually(up)
        assert value(await scrape(agent), "bgconsole_control_plane_lost_total") == 1.0


async def test_openmetrics_on_request_and_404_elsewhere(
    redis_server: RedisServer, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    blue, green = backends
    config = observed_config(
        redis_server.url, blue, green, agent={"metrics_listen": f"127.0.0.1:{free_port()}"}
    )
    async with running_agent(config) as agent:
        assert agent.metrics_server is not None
        base = f"http://{agent.metrics_server.address}"
        async with httpx.AsyncClient(timeout=5.0) as client:
            open_metrics = await client.get(
                base + "/metrics", headers={"Accept": "application/openmetrics-text"}
            )
            assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
            assert open_metrics.text.endswith("# EOF\n")
            assert (await client.get(base + "/other")).status_code == 404
            assert (await client.post(base + "/metrics")).status_code == 405


async def test_a_held_failover_is_counted_once_per_cause(
    redis_server: RedisServer, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    blue, green = backends
    green.set_mode("500")
    config = observed_config(
        redis_server.url, blue, green, agent={"metrics_listen": f"127.0.0.1:{free_port()}"}
    )
    async with running_agent(config) as agent:
        blue.set_mode("500")  # live down, and nowhere better to go

        async def held() -> bool:
            s = await scrape(agent)
            return (
                sum(v for (name, _), v in s.items() if name == "bgconsole_failover_held_total") > 0
            )

        await eventually(held)
        await asyncio.sleep(0.5)  # more probe rounds, still one held decision
        samples = await scrape(agent)
        counts = {
            dict(labels)["code"]: v
            for (name, labels), v in samples.items()
            if name == "bgconsole_failover_held_total"
        }
        assert list(counts.values()) == [1.0]
        assert value(samples, "bgconsole_env_verdict", colour="green", verdict="down") == 1.0
        assert value(samples, "bgconsole_live_colour", colour="blue") == 1.0
