"""The switch procedure against real servers: redis-server, HTTP backends, a front door."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import HttpBackend, HttpBackendFactory, RedisServer, free_port
from traffic_helpers import ColourFile, FrontDoor, eventually, make_router

from console.core.agent import Agent
from console.core.agent_log import AgentLog
from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import ConflictError, VerificationFailed
from console.core.health import HealthChecker
from console.core.models import Colour, HealthSnapshot, Verdict
from console.core.router.base import Router
from console.core.switching import SwitchResult, TargetUnhealthy, perform_switch

pytestmark = pytest.mark.integration


def make_config(
    redis_url: str,
    blue: list[HttpBackend],
    green: list[HttpBackend],
    colour_file: ColourFile,
    front_door: str,
    **router: Any,
) -> Config:
    def env(backends: list[HttpBackend]) -> dict[str, Any]:
        return {"hosts": [{"name": f"h{i}", "url": b.url} for i, b in enumerate(backends)]}

    return parse_config(
        {
            "console": {"name": "switchtest"},
            "control": {"redis": redis_url, "timeout": 2.0},
            "router": {
                "kind": "command",
                "switch_command": colour_file.switch_command,
                "state_command": colour_file.state_command,
                "public_url": front_door,
                "verify_requests": 5,
                "confirm_timeout": 2.0,
                **router,
            },
            "failover": {"interval": 0.2, "timeout": 0.5},
            "env": {"blue": env(blue), "green": env(green)},
        }
    )


@dataclass
class Rig:
    """Everything one switch test needs, wired to real servers."""

    config: Config
    control: ControlPlane
    router: Router
    health: HealthChecker
    colour_file: ColourFile
    front: FrontDoor
    blue: list[HttpBackend]
    green: list[HttpBackend]

    async def switch(self, to: Colour, **kwargs: Any) -> SwitchResult:
        return await perform_switch(
            self.config, self.control, self.router, self.health, to=to, **kwargs
        )


RigFactory = Callable[..., Any]


@pytest.fixture
async def rig_factory(
    redis_server: RedisServer, http_backend_factory: HttpBackendFactory, tmp_path: Path
) -> AsyncIterator[RigFactory]:
    opened: list[Rig] = []

    async def build(*, green_hosts: int = 1, follow_file: bool = True, **router: Any) -> Rig:
        blue = [http_backend_factory("blue", "1.0")]
        green = [http_backend_factory("green", "2.0") for _ in range(green_hosts)]
        colour_file = ColourFile(tmp_path / "live")

        def pick() -> str:
            # The front door follows the file, like a load balancer the command drives;
            # with follow_file=False it is "stuck" on blue (a router that lies).
            colour = colour_file.read() if follow_file else "blue"
            backends = blue if colour == "blue" else green
            return next((b.address for b in backends if b.running), backends[0].address)

        front = await FrontDoor(pick).start()
        config = make_config(redis_server.url, blue, green, colour_file, front.url, **router)
        control = ControlPlane.from_config(config.control, config.console.name)
        rig = Rig(
            config,
            control,
            make_router(config, control),
            HealthChecker(config, hysteresis=False),
            colour_file,
            front,
            blue,
            green,
        )
        await control.ensure_active(Colour.BLUE)
        opened.append(rig)
        return rig

    yield build
    for rig in opened:
        await rig.health.aclose()
        await rig.router.aclose()
        await rig.front.aclose()
        await rig.control.aclose()


async def test_switch_moves_traffic_and_verifies(rig_factory: RigFactory) -> None:
    rig: Rig = await rig_factory()
    progress: list[str] = []
    result = await rig.switch(Colour.GREEN, reason="release 2.0", on_progress=progress.append)
    assert result.changed
    assert (result.before, result.after, result.epoch) == (Colour.BLUE, Colour.GREEN, 2)
    assert rig.colour_file.read() == "green"
    assert result.verification is not None
    assert result.verification.ok
    assert result.verification.served_by_target == 5
    assert result.router_confirmed_s is not None
    assert result.router_confirmed_s < 2.0
    assert "blue -> green (epoch 2): router confirmed in" in result.summary()
    assert "5/5 verification requests served by green" in result.summary()
    assert any("control plane: blue -> green (epoch 2)" in line for line in progress)
    active = await rig.control.active()
    assert active is not None
    assert (active.colour, active.epoch, active.reason) == (Colour.GREEN, 2, "release 2.0")
    events = await rig.control.events()
    switch_events = [e for e in events if e.kind == "switch"]
    assert [e.outcome for e in switch_events] == ["ok", "ok"]
    assert switch_events[-1].summary.endswith("verified")


async def test_already_live_does_nothing(rig_factory: RigFactory) -> None:
    rig: Rig = await rig_factory()
    result = await rig.switch(Colour.BLUE)
    assert not result.changed
    assert result.summary() == "blue is already live (epoch 1); nothing to do"
    assert rig.colour_file.read() == "blue"


async def test_switch_to_the_live_colour_repairs_router_drift(rig_factory: RigFactory) -> None:
    rig: Rig = await rig_factory()
    rig.colour_file.write(Colour.GREEN)  # someone changed the router behind our back
    result = await rig.switch(Colour.BLUE, reason="repair")
    assert result.changed
    assert result.epoch == 1  # the control plane was right; only the router moved
    assert rig.colour_file.read() == "blue"
    assert result.verification is not None
    assert result.verification.served_by_target == 5
    last = (await rig.control.events(limit=1))[0]
    assert last.summary == "router drift repaired: it reports green, now blue (epoch 1)"
    assert (last.before, last.after, last.reason) == ("green", "blue", "repair")


async def test_unhealthy_target_is_refused(rig_factory: RigFactory) -> None:
    rig: Rig = await rig_factory()
    rig.green[0].set_mode("500")
    with pytest.raises(TargetUnhealthy, match="use --force to switch anyway") as caught:
        await rig.switch(Colour.GREEN)
    assert "green/h0: HTTP 500" in str(caught.value)
    active = await rig.control.active()
    assert active is not None
    assert (active.colour, active.epoch) == (Colour.BLUE, 1)
    assert rig.colour_file.read() == "blue"
    events = await rig.control.events()
    assert events[-1].outcome == "refused"


async def test_force_switches_to_partly_unhealthy_target(rig_factory: RigFactory) -> None:
    rig: Rig = await rig_factory(green_hosts=2)
    rig.green[1].kill()
    with pytest.raises(TargetUnhealthy):
        await rig.switch(Colour.GREEN)
    result = await rig.switch(Colour.GREEN, force=True)
    assert result.forced
    assert result.verification is not None
    assert result.verification.ok
    assert "connection refused" in result.target_health["green/h1"]
    assert "[forced]" in result.summary()
    assert rig.colour_file.read() == "green"


async def test_failed_verification_says_how_to_revert(rig_factory: RigFactory) -> None:
    rig: Rig = await rig_factory(follow_file=False)
    with pytest.raises(VerificationFailed) as caught:
        await rig.switch(Colour.GREEN)
    message = str(caught.value)
    assert "0/5 verification requests served by green" in message
    assert "revert with: bgconsole switch blue --force" in message
    events = await rig.control.events()
    assert events[-1].outcome == "failed"
    assert "not confirmed" in events[-1].summary


async def test_router_that_never_confirms_fails(rig_factory: RigFactory, tmp_path: Path) -> None:
    stuck = tmp_path / "stuck"
    stuck.write_text("blue")
    rig: Rig = await rig_factory(state_command=f"cat {stuck}", confirm_timeout=0.5)
    with pytest.raises(VerificationFailed, match=r"did not confirm green within 0.5 s"):
        await rig.switch(Colour.GREEN)
    events = await rig.control.events()
    assert events[-1].outcome == "failed"


@dataclass
class InStep:
    """A real health checker whose probe round waits for the other operator's.

    Both switches have read the active state before either probes, so both compare-and-set
    on the same epoch: the race the control plane must settle, made deterministic.
    """

    health: HealthChecker
    barrier: asyncio.Barrier

    async def check_all(self) -> HealthSnapshot:
        await self.barrier.wait()
        return await self.health.check_all()


async def test_concurrent_switches_exactly_one_wins(rig_factory: RigFactory) -> None:
    rig: Rig = await rig_factory()
    # A second operator: its own control-plane client and health checker.
    other = ControlPlane.from_config(rig.config.control, rig.config.console.name, actor="bob@j2")
    other_health = HealthChecker(rig.config, hysteresis=False)
    barrier = asyncio.Barrier(2)
    try:
        results = await asyncio.gather(
            perform_switch(
                rig.config,
                rig.control,
                rig.router,
                InStep(rig.health, barrier),
                to=Colour.GREEN,
                reason="alice",
            ),
            perform_switch(
                rig.config,
                other,
                rig.router,
                InStep(other_health, barrier),
                to=Colour.GREEN,
                reason="bob",
            ),
            return_exceptions=True,
        )
    finally:
        await other_health.aclose()
        await other.aclose()
    wins = [r for r in results if isinstance(r, SwitchResult)]
    losses = [r for r in results if isinstance(r, ConflictError)]
    assert len(wins) == 1, results
    assert len(losses) == 1, results
    assert "switched to green first (epoch 1 -> 2" in str(losses[0])
    assert "production now serves green" in str(losses[0])
    active = await rig.control.active()
    assert active is not None
    assert active.epoch == 2
    outcomes = sorted(e.outcome for e in await rig.control.events() if e.kind == "switch")
    assert outcomes == ["conflict", "ok", "ok"]


@pytest.fixture
async def agent_rig(
    redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> AsyncIterator[tuple[Config, ControlPlane, Agent, list[HttpBackend]]]:
    """The builtin router for real: an agent (proxy + monitor) running as a task."""
    blue, green = http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")
    listen = f"127.0.0.1:{free_port()}"
    config = parse_config(
        {
            "console": {"name": "agentswitch"},
            "control": {"redis": redis_server.url},
            "router": {"kind": "builtin", "listen": listen, "confirm_timeout": 5.0},
            "failover": {"interval": 0.2, "timeout": 0.5, "min_dwell": 0.0},
            "agent": {"heartbeat_interval": 0.2, "log_format": "json"},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )
    control = ControlPlane.from_config(config.control, config.console.name)
    await control.ensure_active(Colour.BLUE)
    agent = Agent(config, log=AgentLog("json", stream=io.StringIO()))
    task = asyncio.create_task(agent.run())
    try:

        async def agent_up() -> bool:
            return bool(await control.agents())

        await eventually(agent_up)
        yield config, control, agent, [blue, green]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await control.aclose()


async def test_switch_through_the_builtin_router(
    agent_rig: tuple[Config, ControlPlane, Agent, list[HttpBackend]],
) -> None:
    config, control, _agent, _backends = agent_rig
    router = make_router(config, control)
    health = HealthChecker(config, hysteresis=False)
    try:
        result = await perform_switch(config, control, router, health, to=Colour.GREEN)
    finally:
        await health.aclose()
        await router.aclose()
    assert result.verification is not None
    assert result.verification.ok
    assert result.summary().endswith("5/5 verification requests served by green")
    assert result.router_confirmed_s is not None
    assert result.router_confirmed_s < 2.0


async def test_agent_fails_over_with_evidence_when_live_dies(
    agent_rig: tuple[Config, ControlPlane, Agent, list[HttpBackend]],
) -> None:
    _config, control, _agent, (blue, _green) = agent_rig
    blue.kill()

    async def green_live() -> bool:
        active = await control.active()
        return active is not None and active.colour is Colour.GREEN

    await eventually(green_live)

    async def recorded() -> bool:  # the event follows the compare-and-set
        return any(e.kind == "failover" for e in await control.events())

    await eventually(recorded)
    failover = next(e for e in await control.events() if e.kind == "failover")
    assert failover.outcome == "ok"
    assert "live blue is down" in failover.reason
    assert "failures: connection refused" in failover.details["blue/blue"]
    assert failover.details["green"] == "healthy 1/1 hosts up"


async def test_disarmed_agent_does_not_fail_over(
    agent_rig: tuple[Config, ControlPlane, Agent, list[HttpBackend]],
) -> None:
    _config, control, agent, (blue, _green) = agent_rig
    await control.set_armed(False, reason="test")
    blue.kill()

    async def blue_down() -> bool:
        return agent.snapshot is not None and agent.snapshot.verdict(Colour.BLUE) is Verdict.DOWN

    await eventually(blue_down)
    await asyncio.sleep(0.5)  # a few more rounds in which a failover could happen
    active = await control.active()
    assert active is not None
    assert active.colour is Colour.BLUE
