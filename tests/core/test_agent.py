"""The agent (``bgconsole serve``) with real Redis and real HTTP backends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fault_support import Running, agent_config, eventually, start_agent
from servers import HttpBackend, HttpBackendFactory, RedisServer, free_port

from console.core.config import Config
from console.core.control import ControlPlane
from console.core.errors import RouterError
from console.core.models import Colour
from console.core.router.builtin import BuiltinRouter

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def run_agent() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    running: list[Running] = []

    async def start(config: Config, actor: str | None = None) -> Running:
        handle = await start_agent(config, actor)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.stop()


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "shop", timeout=0.5, actor="tester@here")
    yield plane
    await plane.aclose()


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


async def test_proxy_follows_a_switch_in_the_control_plane(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    run_agent: Callable[..., Awaitable[Running]],
) -> None:
    blue, green = backends
    running = await run_agent(agent_config(redis_server.url, blue, green))
    assert await running.colour() == "blue"
    state = await control.active()
    assert state is not None
    assert state.colour is Colour.BLUE  # the agent initialised the control plane
    await control.switch(Colour.GREEN, expected_epoch=state.epoch, reason="test")

    async def on_green() -> bool:
        return await running.colour() == "green"

    assert await eventually(on_green, limit=1.0) < 1.0
    # Consoles see the agent through its heartbeat.
    router = BuiltinRouter(running.agent.config, control)

    async def reported() -> bool:
        return (await router.state()).live is Colour.GREEN

    await eventually(reported)
    detail = (await router.state()).detail
    assert "(leader) serves green" in detail
    assert "heartbeat" in detail


async def test_builtin_router_without_agent_says_how_to_start_one(
    redis_server: RedisServer, control: ControlPlane, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    blue, green = backends
    router = BuiltinRouter(agent_config(redis_server.url, blue, green), control)
    with pytest.raises(RouterError, match="bgconsole serve"):
        await router.state()


async def test_live_backend_killed_fails_over_with_evidence(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    run_agent: Callable[..., Awaitable[Running]],
) -> None:
    blue, green = backends
    running = await run_agent(agent_config(redis_server.url, blue, green))
    assert await running.colour() == "blue"
    blue.kill()
    # Even before the failover, GETs succeed through the stand-by retry.
    assert await running.colour() == "green"

    async def failed_over() -> bool:
        state = await control.active()
        return state is not None and state.colour is Colour.GREEN

    await eventually(failed_over)

    async def agent_applied() -> bool:  # the CAS lands before the agent's switch() returns
        return running.agent.serving is Colour.GREEN and "event=failover" in running.log.getvalue()

    await eventually(agent_applied)
    events = [e for e in await control.events() if e.kind == "failover"]
    assert len(events) == 1
    assert events[0].before == "blue"
    assert events[0].after == "green"
    assert events[0].details  # the health evidence
    assert events[0].actor == running.agent.actor
    assert "event=failover from=blue to=green" in running.log.getvalue()


async def test_disarmed_agent_does_not_fail_over(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    run_agent: Callable[..., Awaitable[Running]],
) -> None:
    blue, green = backends
    await control.ensure_active(Colour.BLUE)
    await control.set_armed(False, reason="test")
    running = await run_agent(agent_config(redis_server.url, blue, green))
    blue.set_mode("500")

    async def down_seen() -> bool:
        snap = running.agent.snapshot
        return snap is not None and snap.verdict(Colour.BLUE).value == "down"

    await eventually(down_seen)
    await asyncio.sleep(0.3)
    state = await control.active()
    assert state is not None
    assert state.colour is Colour.BLUE
    assert running.agent.decisions == 0


async def test_unhealthy_standby_means_no_failover_and_a_held_event(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    run_agent: Callable[..., Awaitable[Running]],
) -> None:
    blue, green = backends
    green.set_mode("500")
    running = await run_agent(agent_config(redis_server.url, blue, green))
    blue.set_mode("500")  # a bad release on the live colour, and nowhere better to go

    async def held() -> bool:
        return any(e.outcome == "held" for e in await control.events())

    await eventually(held)
    await asyncio.sleep(0.5)  # more probe rounds: still no switch, and no event spam
    state = await control.active()
    assert state is not None
    assert state.colour is Colour.BLUE
    assert running.agent.decisions == 0
    held_events = [e for e in await control.events() if e.outcome == "held"]
    assert len(held_events) == 1
    assert "stand-by green" in held_events[0].summary
    assert held_events[0].details  # the evidence: which checks failed, how
    # Green recovers: the agent now fails over (min_dwell is 0 here).
    green.set_mode("ok")

    async def failed_over() -> bool:
        active = await control.active()
        return active is not None and active.colour is Colour.GREEN

    await eventually(failed_over)


async def test_switch_from_the_cli_under_load_fails_no_request(
    redis_server: RedisServer,
    backends: tuple[HttpBackend, HttpBackend],
    run_agent: Callable[..., Awaitable[Running]],
    tmp_path: Path,
) -> None:
    blue, green = backends
    config = agent_config(redis_server.url, blue, green)
    running = await run_agent(config)
    path = tmp_path / "bg.toml"
    path.write_text(
        f"""[console]\nname = "shop"\n[control]\nredis = "{redis_server.url}"\n"""
        f"""[router]\nkind = "builtin"\nlisten = "{running.agent.address}"\n"""
        f"""[env.blue]\nurl = "{blue.url}"\n[env.green]\nurl = "{green.url}"\n"""
    )
    answers: list[str] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f"http://{running.agent.address}") as http:
            while not stop.is_set():
                try:
                    response = await http.get("/", timeout=5.0)
                    if response.status_code != 200:
                        failures.append(f"HTTP {response.status_code}")
                    answers.append(response.headers.get("x-bg-env", "?"))
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                await asyncio.sleep(0.002)

    loop_task = asyncio.create_task(client())
    await asyncio.sleep(0.3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "switch", "green", "--yes", "-c", str(path),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    await asyncio.sleep(0.3)
    stop.set()
    await loop_task
    assert proc.returncode == 0, err.decode()
    assert "blue -> green (epoch 2)" in out.decode()
    assert failures == []
    assert answers[0] == "blue"
    assert answers[-1] == "green"
    # Once green answered, nothing went back to blue.
    assert "blue" not in answers[answers.index("green") :]


async def test_two_agents_one_leads_and_the_other_takes_over(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    run_agent: Callable[..., Awaitable[Running]],
) -> None:
    blue, green = backends
    # Two agents in one process: name them apart (in production, host and pid do).
    first = await run_agent(agent_config(redis_server.url, blue, green), "agent:one")
    second = await run_agent(agent_config(redis_server.url, blue, green), "agent:two")

    async def one_leader() -> bool:
        return first.agent.leader != second.agent.leader

    await eventually(one_leader)
    leader, standby = (first, second) if first.agent.leader else (second, first)
    # Both carry traffic (each is a proxy) but only the leader decides.
    assert await standby.colour() == "blue"
    leader.task.cancel()
    await asyncio.gather(leader.task, return_exceptions=True)
    started = time.monotonic()

    async def took_over() -> bool:
        return standby.agent.leader

    await eventually(took_over)
    # A clean stop resigns: no waiting for the 2 s lease to run out.
    assert time.monotonic() - started < 1.5
    assert await control.leader() == standby.agent.actor
    assert [a.actor for a in await control.agents()] == [standby.agent.actor]
    # And the new leader fails over when blue dies.
    blue.kill()

    async def failed_over() -> bool:
        state = await control.active()
        return state is not None and state.colour is Colour.GREEN

    await eventually(failed_over)

    async def recorded() -> bool:  # the event follows the compare-and-set
        return any(e.kind == "failover" for e in await control.events())

    await eventually(recorded)
    events = [e for e in await control.events() if e.kind == "failover"]
    assert [e.actor for e in events] == [standby.agent.actor]


async def test_redis_down_keeps_routing_then_recovers(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    run_agent: Callable[..., Awaitable[Running]],
) -> None:
    blue, green = backends
    state = await control.ensure_active(Colour.BLUE)
    await control.switch(Colour.GREEN, expected_epoch=state.epoch)
    running = await run_agent(agent_config(redis_server.url, blue, green))
    assert await running.colour() == "green"
    redis_server.stop()

    async def degraded() -> bool:
        return running.agent.degraded

    await eventually(degraded)
    for _ in range(20):
        assert await running.colour() == "green"
    assert "control plane unavailable, routing to green (fail static)" in running.log.getvalue()
    redis_server.start()  # no persistence: the control plane comes back empty

    async def recovered() -> bool:
        return not running.agent.degraded

    await eventually(recovered, limit=10.0)

    async def reseeded() -> bool:
        return await control.active() is not None

    await eventually(reseeded, limit=3.0)
    back = await control.active()
    assert back is not None
    assert back.colour is Colour.GREEN  # re-seeded with what was being served
    assert back.epoch > 2  # above every epoch the agent saw, never back to 1
    await control.switch(Colour.BLUE, expected_epoch=back.epoch)

    async def on_blue() -> bool:
        return await running.colour() == "blue"

    await eventually(on_blue, limit=3.0)


def test_serve_subprocess_exits_0_on_sigterm(
    redis_server: RedisServer, backends: tuple[HttpBackend, HttpBackend], tmp_path: Path
) -> None:
    blue, green = backends
    port = free_port()
    config = tmp_path / "bg.toml"
    config.write_text(
        f'[console]\nname = "shop"\n[control]\nredis = "{redis_server.url}"\n'
        f'[router]\nkind = "builtin"\nlisten = "127.0.0.1:{port}"\n'
        f'[env.blue]\nurl = "{blue.url}"\n[env.green]\nurl = "{green.url}"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in line
        with httpx.Client(timeout=5.0) as http:
            assert http.get(f"http://127.0.0.1:{port}/").headers["x-bg-env"] == "blue"
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # dump the stuck tasks into the failure
            time.sleep(1.0)
            proc.kill()
            _, stderr = proc.communicate()
            raise AssertionError(f"serve did not stop on SIGTERM:\n{stderr}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "event=started" in stderr
    assert "event=stopped" in stderr
    assert "Traceback" not in stderr
