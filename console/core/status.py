"""One picture of the whole system: intent, router reality, health, agent, control plane."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from console.core.config import Config
from console.core.control import ControlPlane
from console.core.errors import ConsoleError
from console.core.health import HealthChecker
from console.core.models import ActiveState, AgentHeartbeat, Colour, HealthSnapshot, LockInfo
from console.core.notify import DeliveryFailure, delivery_failures
from console.core.readiness import Readiness, readiness
from console.core.router.base import Router, RouterState


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything ``bgconsole status`` and the dashboard header show."""

    at: float
    health: HealthSnapshot
    active: ActiveState | None
    armed: bool | None
    agents: tuple[AgentHeartbeat, ...]
    locks: tuple[LockInfo, ...]
    """Deploys and migrations in progress, with who holds them."""
    control_latency_ms: float | None
    control_error: str | None
    """Why the control plane could not be read; None when it answered."""
    router: RouterState | None
    router_error: str | None
    failover: Readiness
    """Whether automatic failover would really act, and the alarm when it would not."""
    persistence: str | None = None
    """A warning when the control-plane Redis would lose everything on a restart."""
    mirror: str | None = None
    """``blue -> green: mirror: 3 change(s) behind, oldest 1.2 s`` while change capture
    mirrors one colour's data into the other; None when no mirror is set up."""
    mirror_behind: bool = False
    """The mirror has changes not applied yet (a switch now would leave them behind)."""
    notify_failures: tuple[DeliveryFailure, ...] = ()
    """``[[notify]]`` receivers with failed deliveries (see :mod:`console.core.notify`)."""

    @property
    def drift(self) -> str | None:
        """A sentence when the router does not send traffic where the control plane says."""
        if self.active is None or self.router is None:
            return None
        if self.router.live != self.active.colour:
            actual = self.router.live.value if self.router.live else "no single colour"
            return f"router sends traffic to {actual}, control plane says {self.active.colour}"
        return None


class MirrorLagLike(Protocol):
    """What :meth:`MigrationRunner.mirror_lag` returns (core/status does not import migrate)."""

    @property
    def captured(self) -> bool:
        """Change capture is set up on every source."""
        ...

    @property
    def pending(self) -> int:
        """Changes not applied on the target yet."""
        ...

    def describe(self) -> str:
        """One line for the operator."""
        ...


MirrorLagSource = Callable[[Colour, Colour], Awaitable[MirrorLagLike]]


async def read_mirror(
    control: ControlPlane, lag_of: MirrorLagSource | None
) -> tuple[str | None, bool]:
    """The mirror's line and whether it is behind; (None, False) when none is set up."""
    pair = await control.mirror()
    if pair is None:
        return None, False
    source, target = pair
    if lag_of is None:
        return f"{source} -> {target}: change capture set up (lag not measured here)", False
    try:
        async with asyncio.timeout(10.0):
            lag = await lag_of(source, target)
    except (ConsoleError, TimeoutError) as e:
        return f"{source} -> {target}: mirror lag unknown ({e or 'timed out'})", True
    return f"{source} -> {target}: {lag.describe()}", lag.captured and lag.pending > 0


async def gather_status(
    config: Config,
    control: ControlPlane,
    health: HealthChecker,
    router: Router | None,
    mirror_lag: MirrorLagSource | None = None,
) -> StatusReport:
    """Ask everything at once; one part failing never hides the others.

    Args:
        mirror_lag: measures a mirror's lag (SSH to the hosts) when one is set up.
    """

    async def read_control() -> tuple[
        float, ActiveState | None, bool | None, list[AgentHeartbeat], list[LockInfo], str | None
    ]:
        latency = await control.ping()
        await control.clock()  # ages below are measured on the control plane's clock
        try:
            persistence = await control.persistence()
        except ConsoleError:
            persistence = None  # INFO/CONFIG refused (ACL): nothing to say
        mirror_state.extend(await read_mirror(control, mirror_lag))
        return (
            latency,
            await control.active(),
            await control.armed_state(),
            await control.agents(),
            await control.locks(),
            persistence,
        )

    async def read_router() -> RouterState | None:
        return await router.state() if router is not None else None

    mirror_state: list[Any] = []
    snapshot, control_result, router_result = await asyncio.gather(
        health.check_all(), read_control(), read_router(), return_exceptions=True
    )
    if isinstance(snapshot, BaseException):
        raise snapshot  # the checker never raises for a host; anything here is a bug
    latency: float | None = None
    active: ActiveState | None = None
    armed: bool | None = None
    agents: list[AgentHeartbeat] = []
    locks: list[LockInfo] = []
    persistence: str | None = None
    control_error: str | None = None
    if isinstance(control_result, ConsoleError):
        control_error = str(control_result)
    elif isinstance(control_result, BaseException):
        raise control_result
    else:
        latency, active, armed, agents, locks, persistence = control_result
    router_state: RouterState | None = None
    router_error: str | None = None
    if isinstance(router_result, ConsoleError):
        router_error = str(router_result)
    elif isinstance(router_result, BaseException):
        raise router_result
    else:
        router_state = router_result
    notify_failures: list[DeliveryFailure] = []
    if control_error is None and config.notify:
        with contextlib.suppress(ConsoleError):
            notify_failures = await delivery_failures(control, config.notify)
    now = control.clock_now()
    return StatusReport(
        at=now,
        health=snapshot,
        active=active,
        armed=armed,
        agents=tuple(agents),
        locks=tuple(locks),
        control_latency_ms=latency,
        control_error=control_error,
        router=router_state,
        router_error=router_error,
        failover=readiness(
            now=now,
            active=active,
            armed=armed,
            agents=agents,
            health=snapshot,
            policy=config.failover,
            agent_config=config.agent,
            control_error=control_error,
        ),
        persistence=persistence,
        notify_failures=tuple(notify_failures),
        mirror=mirror_state[0] if mirror_state else None,
        mirror_behind=bool(mirror_state[1]) if mirror_state else False,
    )
