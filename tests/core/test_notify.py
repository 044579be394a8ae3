"""Notifications ([[notify]]) delivered by the agent to a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from observe_support import eventually, observed_config, running_agent
from servers import HttpBackend, HttpBackendFactory, RedisServer, free_port

from console.cli.status import as_json, render
from console.core.agent import Agent
from console.core.config import parse_config
from console.core.control import ControlPlane
from console.core.errors import ConfigError
from console.core.health import HealthChecker
from console.core.models import Colour, Event
from console.core.notify import delivery_failures, notify_kind, payload, receiver_id
from console.core.status import gather_status

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook receiver on 127.0.0.1: keeps every JSON body, answers ``status`` after
    ``delay`` seconds (a delay longer than the sender's timeout is a hung receiver)."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        self._closing.set()  # a hung answer ends now, so no handler outlives the test
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.requests += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delay):
                    await self._closing.wait()
            if 200 <= self.status < 300:
                self.bodies.append(json.loads(body))
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def kinds(self) -> list[str]:
        return [body["kind"] for body in self.bodies]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.close()


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "shop", timeout=0.5, actor="ops@laptop")
    yield plane
    await plane.aclose()


async def following(agent: Agent) -> None:
    """Until every receiver's cursor is set (events from then on are delivered)."""

    async def ready() -> bool:
        return len(agent.notifier.following) == len(agent.config.notify)

    await eventually(ready)


def test_notify_config_names_the_key_path() -> None:
    base: dict[str, Any] = {
        "console": {"name": "shop"},
        "control": {"redis": "redis://127.0.0.1:1"},
        "router": {"kind": "builtin"},
        "env": {"blue": {"url": "http://127.0.0.1:1"}, "green": {"url": "http://127.0.0.1:2"}},
    }
    config = parse_config({**base, "notify": [{"url": "https://hooks.example/T0/B0/secret"}]})
    assert config.notify[0].kinds == (
        "switch", "failover", "failover_held", "deploy", "migration", "flag", "drift",
        "control_plane_lost",
    )  # fmt: skip
    assert config.notify[0].name == "hooks.example"  # never the URL: it holds the secret
    with pytest.raises(ConfigError, match=r"^notify\[1\]\.kinds\[0\]: unknown kind 'failovr' "):
        parse_config(
            {**base, "notify": [{"url": "http://a/"}, {"url": "http://b/", "kinds": ["failovr"]}]}
        )
    with pytest.raises(ConfigError, match=r"^notify\[0\]\.url: not an http\(s\) URL"):
        parse_config({**base, "notify": [{"url": "hooks.example"}]})


def test_event_kinds_and_the_slack_text() -> None:
    def event(kind: str, outcome: str = "ok", summary: str = "", **details: str) -> Event:
        return Event(
            "1-0", 0.0, kind, "agent:vm:1", summary, "blue", "green", "r", outcome, details
        )

    assert notify_kind(event("failover")) == "failover"
    assert notify_kind(event("failover", "held")) == "failover_held"
    assert notify_kind(event("migrate")) == "migration"
    assert notify_kind(event("control", "lost")) == "control_plane_lost"
    assert notify_kind(event("switch", summary="router drift repaired by the agent")) == "drift"
    # An operator switch is one message: its outcome, not also the compare-and-set.
    assert (
        notify_kind(event("switch", summary="switch blue -> green (epoch 2)", forced="no")) is None
    )
    assert (
        notify_kind(event("switch", summary="switch blue -> green (epoch 2) verified")) == "switch"
    )
    assert notify_kind(event("armed")) is None
    body = payload("shop", "failover", event("failover", summary="failover blue -> green", x="y"))
    assert body["event"]["before"] == "blue"
    assert body["event"]["details"] == {"x": "y"}
    assert "*shop*: failover blue -> green" in body["text"]
    assert "by agent:vm:1 · blue → green" in body["text"]
    assert "• x: y" in body["text"]
    assert "late" not in body["text"]
    old = dataclasses.replace(event("flag", summary="flag x"), at=60.0)
    late = payload("shop", "flag", old, now=3660.0)
    assert "_delivered late: this happened at 1970-01-01 00:01:00 UTC (60 min ago)_" in late["text"]


async def test_operator_switch_and_failover_are_delivered_once_each(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    receiver: Receiver,
) -> None:
    blue, green = backends
    config = observed_config(redis_server.url, blue, green, notify=[{"url": receiver.url}])
    # Two agents: only the leader delivers, so each event arrives once.
    async with running_agent(config, "agent:a") as first, running_agent(config, "agent:b"):
        await following(first)
        await control.record("flag", "flag uploads on blue: on -> off", before="on", after="off")

        async def flag_arrived() -> bool:
            return receiver.kinds() == ["flag"]

        await eventually(flag_arrived)
        assert receiver.bodies[0]["event"]["actor"] == "ops@laptop"  # the CLI's own event
        blue.kill()

        async def failed_over() -> bool:
            return "failover" in receiver.kinds()

        await eventually(failed_over)
        await asyncio.sleep(0.5)  # room for a duplicate to show up
        assert receiver.kinds() == ["flag", "failover"]
        failover = receiver.bodies[1]
        assert failover["event"]["before"] == "blue"
        assert failover["event"]["after"] == "green"
        assert failover["event"]["actor"] in ("agent:a", "agent:b")
        assert any(key.startswith("blue") for key in failover["event"]["details"])  # evidence
        assert failover["text"].startswith(":rotating_light: *shop*: failover blue -> green")
        assert await delivery_failures(control) == []


async def test_dead_and_hung_receivers_delay_no_failover_and_show_in_status(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    receiver: Receiver,
) -> None:
    blue, green = backends
    hung = await Receiver(delay=30.0).start()
    dead = f"http://127.0.0.1:{free_port()}/hook"
    config = observed_config(
        redis_server.url,
        blue,
        green,
        notify=[
            {"url": dead, "name": "dead"},
            {"url": hung.url, "name": "hung", "timeout": 1.0},
            {"url": receiver.url, "kinds": ["failover"]},
        ],
    )
    try:
        async with running_agent(config) as agent:
            agent.notifier.backoff = (0.05, 0.1)
            await following(agent)
            # Keep the dead and hung receivers busy retrying while the failover happens.
            await control.record("flag", "flag a on blue", before="off", after="on")
            killed = time.monotonic()
            blue.kill()

            async def on_green() -> bool:
                state = await control.active()
                return state is not None and state.colour is Colour.GREEN

            await eventually(on_green)
            took = time.monotonic() - killed
            assert took < 1.5, f"failover took {took:.2f} s"

            async def delivered() -> bool:
                return receiver.kinds() == ["failover"]

            await eventually(delivered)

            async def both_failed() -> bool:
                failures = {f.receiver: f for f in await delivery_failures(control)}
                return {"dead", "hung"} <= set(failures)

            await eventually(both_failed, limit=10.0)
            failures = {f.receiver: f for f in await delivery_failures(control)}
            assert failures["dead"].failing
            assert "after 3 tries" in failures["dead"].last_error
            assert failures["dead"].failures >= 2  # the flag change, then the failover
            assert "no answer within 1 s" in failures["hung"].last_error
            # bgconsole status shows it: one line per failing receiver, never the URL.
            checker = HealthChecker(config)
            try:
                report = await gather_status(config, control, checker, None)
            finally:
                await checker.aclose()
            text = render(config, report)
            assert "notify: dead FAILING: " in text
            assert "notify: hung FAILING: " in text
            assert dead not in text
            # A receiver no longer configured is not reported as failing forever.
            assert {
                f.receiver for f in await delivery_failures(control, config.notify[2:])
            } == set()
            report_json = as_json(config, report)
            assert {f["receiver"] for f in report_json["notify_failures"]} == {"dead", "hung"}
    finally:
        await hung.close()


async def test_control_plane_loss_is_sent_directly_by_the_agent(
    redis_server: RedisServer, backends: tuple[HttpBackend, HttpBackend], receiver: Receiver
) -> None:
    blue, green = backends
    config = observed_config(
        redis_server.url,
        blue,
        green,
        notify=[{"url": receiver.url, "kinds": ["control_plane_lost"]}],
    )
    async with running_agent(config, "agent:a") as agent:
        await following(agent)
        redis_server.stop()

        async def lost() -> bool:
            return [b["event"]["outcome"] for b in receiver.bodies] == ["lost"]

        await eventually(lost)
        assert "routes to blue (fail static)" in receiver.bodies[0]["text"]
        redis_server.start()

        async def back() -> bool:
            return [b["event"]["outcome"] for b in receiver.bodies] == ["lost", "recovered"]

        await eventually(back)


def test_receiver_id_hides_the_url() -> None:
    config = parse_config(
        {
            "console": {"name": "shop"},
            "control": {"redis": "redis://127.0.0.1:1"},
            "router": {"kind": "builtin"},
            "env": {"blue": {"url": "http://127.0.0.1:1"}, "green": {"url": "http://127.0.0.1:2"}},
            "notify": [{"url": "https://hooks.example/services/T0/B0/secret"}],
        }
    )
    rid = receiver_id(config.notify[0])
    assert len(rid) == 12
    assert "secret" not in rid
