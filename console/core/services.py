"""The Services bundle: every core client the console needs, built once, closed once.

The terminal UI talks to the core only through this object, so its screens never build
clients of their own, and tests can hand the UI a bundle pointed at fixture servers (or a
subclass that returns fixed data for layout-only snapshot tests).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from console.core.config import Config
from console.core.control import ControlPlane, Notification
from console.core.deploy import (
    DEFAULT_PARALLEL,
    BatchProgress,
    DeployMethod,
    DeployResult,
    DeployRunner,
    StepStarted,
)
from console.core.errors import ControlPlaneUnavailable, ReadOnly
from console.core.flags import FlagChange, FlagStore, FlagTable
from console.core.health import HealthChecker
from console.core.logs import PER_HOST_LINES, LogFollower, LogLine
from console.core.migrate.mirror import MirrorStatus
from console.core.migrate.mirror import StatusCallback as MirrorStatusCallback
from console.core.migrate.plan import (
    MigrationRequest,
    MigrationResult,
    ProgressCallback,
    no_progress,
)
from console.core.migrate.runner import MigrationRunner
from console.core.models import Colour, Event
from console.core.router.base import Router
from console.core.router.factory import build_router
from console.core.ssh import OutputLine, SshPool
from console.core.status import StatusReport, gather_status
from console.core.switching import SwitchResult, perform_switch

LOG_BACKLOG = 50
"""Lines of backlog per log when a log pane opens."""


@dataclass(eq=False)
class Services:
    """The clients of one console session (control plane, health, router, flags, SSH).

    Build with :meth:`build`; close with :meth:`aclose` (the app does it on unmount).
    """

    config: Config
    control: ControlPlane
    health: HealthChecker
    """Probes with fall/rise hysteresis and history: what the dashboard shows."""
    router: Router
    flags: FlagStore
    ssh: SshPool
    clock: Callable[[], float] = field(default=time.time)
    """Wall clock; injected so snapshot tests render fixed times."""
    _oneshot: HealthChecker | None = field(default=None, repr=False)
    read_only: bool = False
    """A watch-only console (``--read-only``, ``[console] read_only``): every call that
    changes production raises :class:`ReadOnly` instead, so each key and palette command
    says so where the operator looks, and nothing can slip through a screen's own code."""

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnly(
                f"read-only console: {what} refused (started with --read-only or "
                "[console] read_only = true)"
            )

    @classmethod
    def build(cls, config: Config) -> Services:
        """Create every client for ``config`` (no I/O happens until one is used).

        Raises:
            ConfigError: the router kind needs something the configuration lacks.
        """
        control = ControlPlane.from_config(config.control, config.console.name)
        # Redis connects lazily, so a ConfigError here leaves nothing open to close.
        router = build_router(config, control)
        return cls(
            config=config,
            control=control,
            health=HealthChecker(config),
            router=router,
            flags=FlagStore(config, control),
            ssh=SshPool(config.ssh),
            read_only=config.console.read_only,
        )

    def _switch_health(self) -> HealthChecker:
        # Switches and deploys judge the target by fresh probes, not by hysteresis, the way
        # the CLI verbs do; one lazily created checker serves both.
        if self._oneshot is None:
            self._oneshot = HealthChecker(self.config, hysteresis=False)
        return self._oneshot

    async def aclose(self) -> None:
        """Close every client; safe to call more than once.

        Every close runs whatever happens to the others, the Redis clients first (quick,
        and their sockets are what a half-finished close used to leave open): closing SSH
        connections can take a while, and an exit that stops waiting must not skip them.
        """
        closers = [self.control.aclose, self.flags.aclose, self.router.aclose,
                   self.health.aclose]  # fmt: skip
        if self._oneshot is not None:
            closers.append(self._oneshot.aclose)
        closers.append(self.ssh.aclose)
        errors: list[BaseException] = []
        for close in closers:
            try:
                await close()
            except Exception as e:  # the next client must still be closed
                errors.append(e)
        if errors:
            raise errors[0]

    async def status(self) -> StatusReport:
        """Health (with hysteresis), control plane, router and agents in one report."""
        from console.core.migrate.runner import MigrationRunner

        lag = MigrationRunner(self.config, self.control, self.ssh).mirror_lag
        return await gather_status(
            self.config, self.control, self.health, self.router, mirror_lag=lag
        )

    async def flag_table(self) -> FlagTable:
        """Every flag in both colours (a colour that cannot be read shows as unknown)."""
        return await self.flags.read_all()

    async def toggle_flag(self, name: str, colour: Colour, reason: str = "") -> FlagChange:
        """Flip a declared flag in one colour and record the event."""
        self._writable(f"flag {name} on {colour}")
        return await self.flags.toggle(name, colour, reason=reason)

    async def events(self, limit: int = 50) -> list[Event]:
        """The newest ``limit`` events, oldest first."""
        return await self.control.events(limit=limit)

    def follow_events(self, after: str = "$") -> AsyncIterator[Event]:
        """New events as they are appended after ``after``."""
        # XREAD BLOCK must return before the client's socket timeout (= [control] timeout)
        # fires, or every quiet second would look like an unavailable control plane.
        block_ms = max(50, min(1000, int(self.control.timeout * 500)))
        return self.control.follow_events(after=after, block_ms=block_ms)

    def notifications(self) -> AsyncIterator[Notification]:
        """Control-plane pub/sub notifications (switch, flag, armed, ...) until cancelled."""
        return self.control.notifications()

    async def live(self) -> Colour | None:
        """The live colour per the control plane; None when unset or unreadable."""
        try:
            state = await self.control.active()
        except ControlPlaneUnavailable:
            return None
        return None if state is None else state.colour

    async def armed(self) -> bool:
        """Whether automatic failover is armed."""
        return await self.control.armed()

    async def set_armed(self, armed: bool, reason: str = "") -> None:
        """Arm or disarm automatic failover for everyone (recorded as an event)."""
        self._writable("arming failover" if armed else "disarming failover")
        await self.control.set_armed(armed, reason=reason)

    async def switch(
        self,
        to: Colour,
        *,
        force: bool = False,
        reason: str = "",
        on_progress: Callable[[str], None] | None = None,
        skip_gates: bool = False,
    ) -> SwitchResult:
        """Move live traffic to ``to``: checked, compare-and-set, verified (``perform_switch``).

        ``skip_gates``: do not run the ``pre_switch`` gates (recorded in the event).
        """
        self._writable(f"switch to {to}")
        return await perform_switch(
            self.config,
            self.control,
            self.router,
            self._switch_health(),
            to=to,
            force=force,
            reason=reason,
            on_progress=on_progress,
            skip_gates=skip_gates,
        )

    async def deploy(
        self,
        colour: Colour,
        *,
        ref: str | None,
        live_ok: bool,
        reason: str = "",
        on_line: Callable[[OutputLine], None] | None = None,
        on_step: Callable[[StepStarted], None] | None = None,
        on_batch: Callable[[BatchProgress], None] | None = None,
        method: DeployMethod | None = None,
        repo: Path | None = None,
        parallel: int | None = None,
    ) -> DeployResult:
        """Deploy ``ref`` to ``colour`` under the deploy lock, then wait for health.

        ``method``, ``repo`` and ``parallel`` are the CLI's ``--git``, ``--repo`` and
        ``--parallel`` (hosts per batch after the canary)."""
        self._writable(f"deploy to {colour}")
        runner = DeployRunner(
            self.config,
            self.control,
            self.ssh,
            self._switch_health(),
            parallel=parallel or DEFAULT_PARALLEL,
        )
        return await runner.deploy(
            colour, ref=ref, live_ok=live_ok, method=method, repo=repo, reason=reason,
            on_line=on_line, on_step=on_step, on_batch=on_batch,
        )  # fmt: skip

    async def migrate(
        self, request: MigrationRequest, on_progress: ProgressCallback = no_progress
    ) -> MigrationResult:
        """Run (or with ``request.dry_run`` only plan) one migration under the migrate lock.

        Raises as :meth:`MigrationRunner.migrate` does (every error is a ``ConsoleError``).
        """
        if not request.dry_run:  # a dry run reads only: allowed
            self._writable(f"migration {request.source} -> {request.target}")
        runner = MigrationRunner(self.config, self.control, self.ssh)
        return await runner.migrate(request, on_progress)

    async def mirror(
        self,
        request: MigrationRequest,
        on_status: MirrorStatusCallback,
        stop: asyncio.Event,
        on_progress: ProgressCallback = no_progress,
    ) -> tuple[MigrationResult, MirrorStatus]:
        """Install change capture (idempotent), catch up, then mirror until ``stop`` is set.

        Change capture is what makes a mirror carry updates and deletes, not only appends;
        from the console it is always installed (``migrate mirror --setup`` from the CLI).
        """
        self._writable(f"mirror {request.source} -> {request.target}")
        runner = MigrationRunner(self.config, self.control, self.ssh)
        await runner.mirror_setup(request)
        return await runner.mirror(request, on_status, stop, on_progress=on_progress)

    async def mirror_teardown(self, request: MigrationRequest) -> int:
        """Remove the mirror's change capture from both colours (idempotent)."""
        self._writable("removing change capture")
        runner = MigrationRunner(self.config, self.control, self.ssh)
        return await runner.mirror_setup(request, teardown=True)

    def logs(
        self, colours: tuple[Colour, ...], *, lines: int = LOG_BACKLOG, grep: str | None = None
    ) -> AsyncGenerator[LogLine, None]:
        """Follow every log of every host of ``colours``, multiplexed, with marker lines.

        Closing the generator stops every remote command (and its SSH channel).

        Raises:
            ConfigError: the hosts have no logs configured.
        """
        hosts = [(c, host) for c in colours for host in self.config.env(c).hosts]
        pattern = re.compile(grep) if grep else None
        # Per-stream buffers that drop the oldest lines (with a gap marker) rather than
        # pausing the remote commands: with tens of hosts one chatty host must neither
        # stall the others nor grow the console's memory without bound.
        follower = LogFollower(
            self.ssh, hosts, None, lines=lines, follow=True, grep=pattern,
            per_host_lines=PER_HOST_LINES,
        )  # fmt: skip
        return follower.stream()
