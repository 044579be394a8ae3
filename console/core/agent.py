"""The agent behind ``bgconsole serve``: proxy, health monitor, failover, heartbeat.

One long-running asyncio service. With ``router.kind = "builtin"`` it carries traffic
through :class:`~console.core.proxy.Proxy`; with any other kind it only monitors and, on
failover, drives the router adapter. It:

- follows the control plane's active colour (pub/sub within milliseconds, plus a poll
  every second in case a message is lost);
- probes health every ``[failover] interval`` and feeds the verdicts to the proxy;
- when it holds the leader lease and failover is armed, asks the policy
  (:func:`console.core.failover.decide`) after every round and carries out its decision
  as a compare-and-set switch recorded with the evidence;
- publishes a heartbeat with what it serves, its health view, armed and leader;
- with the control plane unreachable keeps routing to the last known colour (fail
  static) and reconnects with exponential backoff and jitter.

``run()`` is cancellable: the listening socket closes at once and requests in flight get
``grace`` seconds to finish, so the agent can be embedded as a task (the demo does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from typing import TYPE_CHECKING, Any

from console.core.actor import agent_actor
from console.core.agent_log import AgentLog
from console.core.config import Config, redact_url
from console.core.control import ControlPlane, Notification
from console.core.errors import ConflictError, ConsoleError, ControlPlaneUnavailable
from console.core.failover import FailoverDecision, decide, last_switch_at, refusing_only
from console.core.gates import failover_gates_note
from console.core.health import HealthChecker
from console.core.metrics import AgentMetrics, MetricsServer
from console.core.models import ActiveState, AgentHeartbeat, Colour, HealthSnapshot, Verdict
from console.core.notify import Notifier
from console.core.proxy import Proxy, RouteTable, Upstream, route_table_from_hosts

if TYPE_CHECKING:
    from console.core.router.base import Router

_SWITCH_KINDS = frozenset({"switch", "failover", "failback", "init"})
_POLL_INTERVAL = 1.0
_BACKOFF_START = 0.1
# One Redis to reconnect to: retrying every second at most costs nothing and keeps the
# promise that failover works again within 2 s of the control plane answering.
_BACKOFF_CAP = 1.0
_STATS_EVERY = 60.0


class Agent:
    """The long-running monitor (and, for the builtin router, the data plane).

    Args:
        config: the whole configuration.
        control: the control-plane client (built from ``[control]`` when omitted; the
            agent closes only a client it built).
        log: where structured events go (stderr in ``[agent] log_format`` by default).
        actor: the name used for heartbeats, leadership and events.
        grace: seconds requests in flight may take to finish on shutdown.
        listen: overrides ``[router] listen`` (tests and the demo use port 0).
    """

    def __init__(
        self,
        config: Config,
        control: ControlPlane | None = None,
        *,
        log: AgentLog | None = None,
        actor: str | None = None,
        grace: float = 5.0,
        listen: str | None = None,
    ) -> None:
        self.config = config
        self.actor = actor or agent_actor()
        self._own_control = control is None
        self.control = control or ControlPlane.from_config(
            config.control, config.console.name, actor=self.actor
        )
        self.log = log or AgentLog(config.agent.log_format)
        self.grace = grace
        self.builtin = config.router.kind == "builtin"
        self.routes: RouteTable | None = None
        self.proxy: Proxy | None = None
        if self.builtin:
            self.routes = route_table_from_hosts((c, h.name, h.url) for c, h in config.all_hosts())
            router = config.router
            self.proxy = Proxy(
                self.routes,
                listen or router.listen,
                retry_on_5xx=router.retry_on_5xx,
                connect_timeout=router.connect_timeout,
                response_timeout=router.first_byte_timeout,
                idle_timeout=router.idle_timeout,
                head_timeout=router.head_timeout,
                body_timeout=router.body_timeout,
                max_connections=router.max_connections or None,
                max_head=router.max_head,
                trusted_proxies=router.trusted_proxies,
                tls_cert=router.tls_cert,
                tls_key=router.tls_key,
                ws_drain=router.ws_drain,
                on_passive_down=self._passive_down,
                # Floods of bad clients are counted, one line per kind per minute at most.
                on_error=lambda kind, count, detail: self.log.warning(
                    "proxy_errors", kind=kind, count=count, detail=detail
                ),
            )
        self.health = HealthChecker(config)
        self.active: ActiveState | None = None
        """The control plane's active state as last seen (None before the first answer)."""
        self.serving: Colour = Colour.BLUE
        """The colour traffic goes to; stays put while the control plane is unreachable."""
        self.armed = False
        """Whether automatic failover is armed; off until the control plane says so."""
        self.leader = False
        self.control_error: str | None = None
        """Why the last control-plane operation failed; None while it answers (any loop's
        success clears it, any loop's failure sets it)."""
        self.control_ok_at: float | None = None
        """Control-plane time of the last successful read of the live colour."""
        self.max_epoch = 0
        """The highest epoch seen: a control plane showing a lower one lost its data."""
        self.armed_choice: bool | None = None
        """The armed flag as last read from the control plane (the operator's choice)."""
        self.snapshot: HealthSnapshot | None = None
        self.decisions = 0
        self._last_failover_from: Colour | None = None
        self._router: Router | None = None
        self._started = False
        self._deciding = asyncio.Lock()
        self._beat_now = asyncio.Event()
        self._last_held: str | None = None
        self._restart_started: float | None = None
        self._live_deploy: bool = False
        self._drift: str | None = None
        self._stats_logged = time.monotonic()
        self.metrics = AgentMetrics(self)
        self.metrics_server: MetricsServer | None = None
        if config.agent.metrics_listen:
            self.metrics_server = MetricsServer(self.metrics.registry, config.agent.metrics_listen)
        # Webhooks ([[notify]]): the leader follows the event stream in its own task, so a
        # slow receiver never delays a decision.
        self.notifier = Notifier(
            config,
            self.control,
            is_leader=lambda: self.leader and not self.degraded,
            log=lambda event, fields: self.log.warning(event, **fields),
        )

    @property
    def degraded(self) -> bool:
        """True while the control plane is unreachable (fail static)."""
        return self.control_error is not None

    @property
    def address(self) -> str | None:
        """Where the proxy listens (None for non-builtin routers)."""
        return self.proxy.address if self.proxy is not None else None

    async def start(self) -> None:
        """Bind the proxy and learn the active colour once (fail static if unreachable).

        Raises:
            ConsoleError: the proxy cannot listen on ``[router] listen``.
        """
        if self._started:
            return
        self._started = True
        try:
            await self._refresh_active()
            await self._read_armed()
        except ControlPlaneUnavailable as e:
            self._fail_static(e)
        if self.proxy is not None:
            try:
                await self.proxy.start()
            except OSError as e:
                raise ConsoleError(
                    f"router.listen {self.config.router.listen}: cannot listen: {e.strerror or e}"
                ) from e
        if self.metrics_server is not None:
            try:
                await self.metrics_server.start()
            except OSError as e:
                raise ConsoleError(
                    f"agent.metrics_listen {self.metrics_server.listen}: cannot listen: "
                    f"{e.strerror or e}"
                ) from e
        self.log.info(
            "started",
            actor=self.actor,
            router=self.config.router.kind,
            listen=self.address,
            serving=self.serving.value,
            control=self.control.url,
            pid=os.getpid(),
        )

    async def run(self) -> None:
        """Run until cancelled, then shut down cleanly."""
        try:
            await self.start()
            async with asyncio.TaskGroup() as group:
                group.create_task(self.health.run(self._on_snapshot))
                group.create_task(self._follow_control_plane())
                group.create_task(self._heartbeat_loop())
                group.create_task(self.notifier.run())
                if not self.builtin:
                    group.create_task(self._reconcile_loop())
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the proxy (with the grace period), the health client and the control plane."""
        if self.proxy is not None:
            await self.proxy.close(self.grace)
        if self.metrics_server is not None:
            await self.metrics_server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.health.aclose()
        # Each close is bounded: shutdown must finish even if a backend hangs.
        if self._router is not None:
            with contextlib.suppress(ConsoleError, OSError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._router.aclose()
        # Hand leadership over now rather than when the lease runs out; best effort, the
        # lease expiring is the fallback when the control plane is unreachable.
        with contextlib.suppress(ConsoleError, OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.control.resign(self.actor)
        if self._own_control:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.control.aclose()
        stats = self.proxy.stats() if self.proxy is not None else None
        self.log.info(
            "stopped",
            actor=self.actor,
            requests=sum(stats.requests.values()) if stats else None,
            errors=sum(stats.errors.values()) if stats else None,
        )

    # -- following the control plane ----------------------------------------------------

    def _apply(self, state: ActiveState, *, authoritative: bool = False) -> None:
        """Adopt the control plane's state unless a notification is older than what we have.

        A read of the active state (``authoritative``) always wins over notifications; an
        epoch lower than one already seen never reaches here (it is re-seeded first).
        """
        if not authoritative and self.active is not None and state.epoch < self.active.epoch:
            return
        previous = self.serving
        self.active = state
        self.max_epoch = max(self.max_epoch, state.epoch)
        self.serving = state.colour
        if self.routes is not None:
            self.routes.set_live(state.colour)
        if previous is not state.colour:
            # Tell consoles at once: the builtin router's state is read from heartbeats,
            # so a switch is confirmed as soon as this beat lands.
            self._beat_now.set()
            self.metrics.on_route(state.colour)
            self.log.info(
                "route",
                serving=state.colour.value,
                previous=previous.value,
                epoch=state.epoch,
                actor=state.actor,
                reason=state.reason,
            )

    async def _refresh_active(self) -> None:
        """Read the live colour; re-seed the control plane if it lost its state."""
        state = await self.control.active()
        if state is None or state.epoch < self.max_epoch:
            await self._reseed(state)
        else:
            self._apply(state, authoritative=True)
        # Only a read of the live colour counts as "the agent sees the control plane":
        # an agent that can write heartbeats but not follow the colour is blind.
        self.control_ok_at = self.control.clock_now()
        self._control_ok()

    async def _reseed(self, found: ActiveState | None) -> None:
        """The control plane has no live colour, or one with an epoch that went backwards.

        A control plane we never saw with no history at all is a new installation: it
        gets the colour we serve at epoch 1. Otherwise its data was lost: the colour the
        router really serves goes back in with an epoch above every one we saw, and the
        loss is recorded, so nothing moves and nobody is told a lower epoch.
        """
        if self.max_epoch == 0 and found is None and not await self.control.events(1):
            self._apply(await self.control.ensure_active(self.serving), authoritative=True)
            return
        colour, source = await self._router_colour()
        what = "missing" if found is None else f"at epoch {found.epoch} < {self.max_epoch} seen"
        reason = f"control plane state lost (live colour {what}); re-seeded from {source}"
        state, changed = await self.control.seed(colour, self.max_epoch, reason)
        self._apply(state, authoritative=True)
        if not changed:
            return  # another agent re-seeded first and recorded it
        summary = (
            f"control plane state lost; re-seeded {state.colour.value.upper()} from {source} "
            f"(epoch {state.epoch})"
        )
        self.log.error("control_plane_state_lost", message=summary, epoch=state.epoch)
        with contextlib.suppress(ConsoleError):
            await self.control.record(
                "control",
                summary,
                after=state.colour.value,
                reason=reason,
                outcome="lost",
                actor=self.actor,
                details={"highest_epoch_seen": str(self.max_epoch), "found": what},
            )

    async def _router_colour(self) -> tuple[Colour, str]:
        """What traffic really goes to, and where that was read."""
        if self.builtin:
            return self.serving, "the router (builtin proxy)"
        try:
            async with asyncio.timeout(5.0):
                live = (await self._get_router().state()).live
        except (ConsoleError, TimeoutError):
            live = None
        if live is None:
            return self.serving, "the agent's last known colour (router unreadable)"
        return live, f"the router ({self.config.router.kind})"

    async def _read_armed(self) -> None:
        """Read the armed flag; restore it (or disarm loudly) if the control plane lost it."""
        armed = await self.control.armed_state()
        if armed is None:
            armed = await self._restore_armed()
        self.armed_choice = armed
        if armed != self.armed:
            self.armed = armed
            self.log.info("armed" if armed else "disarmed")

    async def _restore_armed(self) -> bool:
        """The armed record is gone: put back the operator's last choice if we know it."""
        known = self.armed_choice
        value = known if known is not None else False
        if not await self.control.restore_armed(value):
            armed = await self.control.armed_state()
            return bool(armed)
        if known is None:
            summary = (
                "control plane state lost: whether failover was armed is unknown; DISARMED "
                "until an operator decides (bgconsole failover arm)"
            )
        else:
            state = "armed" if known else "disarmed"
            summary = f"control plane state lost: failover {state} again, as last chosen"
        self.log.error("armed_state_lost", message=summary, armed=value)
        with contextlib.suppress(ConsoleError):
            await self.control.record(
                "armed",
                summary,
                before="unknown",
                after="armed" if value else "disarmed",
                reason="control plane state lost",
                outcome="lost",
                actor=self.actor,
            )
        return value

    def _control_ok(self) -> None:
        self.metrics.on_control(True)
        if self.control_error is not None:
            self.control_error = None
            self.notifier.direct(
                f"control plane available again ({self.actor} routes to {self.serving})",
                actor=self.actor,
                outcome="recovered",
            )
            self.log.info(
                "control_plane_available",
                serving=self.serving.value,
                control=redact_url(self.control.url),
            )

    def _fail_static(self, error: ConsoleError) -> None:
        self.leader = False
        self.metrics.on_control(False)
        if self.control_error is None:
            self.notifier.direct(
                f"control plane unavailable: {self.actor} routes to {self.serving} "
                "(fail static); no failover until it answers",
                actor=self.actor,
                outcome="lost",
                details={"error": str(error)},
            )
            self.log.warning(
                "control_plane_unavailable",
                message=f"control plane unavailable, routing to {self.serving} (fail static)",
                serving=self.serving.value,
                error=str(error),
            )
        self.control_error = str(error)

    async def _follow_control_plane(self) -> None:
        """Stay in step with the control plane forever; back off while it is down."""
        backoff = _BACKOFF_START
        while True:
            try:
                await self._refresh_active()
                backoff = _BACKOFF_START
                await self._listen_and_poll()
            except ControlPlaneUnavailable as e:
                self._fail_static(e)
            _reraise_cancel()
            # Full jitter keeps many agents from reconnecting in lockstep.
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, _BACKOFF_CAP)

    async def _listen_and_poll(self) -> None:
        """Follow notifications and poll until either fails.

        Plain tasks rather than a TaskGroup: on 3.11 a TaskGroup whose child failed leaves
        the parent looking cancelled, and redis-py can turn a real cancel into a connection
        error; separate tasks keep "control plane down" and "agent stopping" apart.
        """
        tasks = {asyncio.create_task(self._listen()), asyncio.create_task(self._poll())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        async for note in self.control.notifications():
            self._on_notification(note)

    def _on_notification(self, note: Notification) -> None:
        if note.kind in _SWITCH_KINDS:
            try:
                colour = Colour(str(note.data["colour"]))
                epoch = int(note.data["epoch"])
            except (KeyError, ValueError, TypeError):
                return
            actor = str(note.data.get("actor", ""))
            self._apply(ActiveState(colour, epoch, time.time(), actor, "", kind=note.kind))
        elif note.kind == "armed":
            armed = bool(note.data.get("armed", True))
            self.armed_choice = armed
            if armed != self.armed:
                self.armed = armed
                self.log.info("armed" if armed else "disarmed")

    async def _poll(self) -> None:
        # Pub/sub is at-most-once: a message sent while we reconnect is lost. The poll
        # bounds how long such a loss can leave us on the wrong colour.
        while True:
            _reraise_cancel()
            await asyncio.sleep(_POLL_INTERVAL)
            await self._refresh_active()

    # -- heartbeat and leadership ---------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.config.agent.heartbeat_interval
        lease = self.config.agent.leader_lease
        while True:
            try:
                await self._beat(lease, interval)
            except ControlPlaneUnavailable as e:
                self._fail_static(e)
            _reraise_cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._beat_now.wait()
            self._beat_now.clear()

    async def _beat(self, lease: float, interval: float) -> None:
        # Armed first: a new leader must never decide on a stale armed flag.
        await self.control.clock()  # keeps the control-plane clock offset fresh
        await self._read_armed()
        await self._read_deploys()
        was_leader = self.leader
        self.leader = await self.control.claim_leadership(self.actor, lease)
        if self.leader != was_leader:
            self.log.info("leader" if self.leader else "follower", actor=self.actor)
        health = {c.value: (self.snapshot.verdict(c).value if self.snapshot else "unknown")
                  for c in Colour}  # fmt: skip
        beat = AgentHeartbeat(
            at=self.control.clock_now(),
            actor=self.actor,
            pid=os.getpid(),
            armed=self.armed and self.config.failover.enabled,
            leader=self.leader,
            router_kind=self.config.router.kind,
            serving=self.serving.value,
            health=health,
            proxy=self._proxy_counters(),
            control_ok_at=self.control_ok_at,
            deciding=self.leader and self.armed and self.config.failover.enabled,
            drift=self._drift or "",
        )
        await self.control.heartbeat(beat, ttl=max(3 * interval, lease))
        self._control_ok()
        self._log_stats()

    async def _read_deploys(self) -> None:
        """Whether a deploy holds the live colour's lock (it may restart the app)."""
        live = self.active.colour if self.active is not None else self.serving
        self._live_deploy = await self.control.lock_info(f"deploy:{live}") is not None

    def _proxy_counters(self) -> dict[str, int]:
        """The proxy's counters flattened for the heartbeat (``requests.blue``, ...)."""
        if self.proxy is None:
            return {}
        stats = self.proxy.stats()
        counters = {
            "connections": stats.open_connections,
            "unroutable": stats.unroutable,
            # WebSocket/Upgrade tunnels still open (pinned to the colour they began on),
            # connections refused at the cap and idle ones closed to make room.
            "upgraded": stats.upgraded,
            "rejected": stats.rejected,
            "evicted": stats.evicted,
        }
        for name, counts in (("requests", stats.requests), ("errors", stats.errors),
                             ("retries", stats.retries)):  # fmt: skip
            for colour, count in counts.items():
                counters[f"{name}.{colour}"] = count
        return counters

    def _log_stats(self) -> None:
        """Every minute, the proxy's counters as one log line (for log-based metrics)."""
        now = time.monotonic()
        if self.proxy is None or now - self._stats_logged < _STATS_EVERY:
            return
        self._stats_logged = now
        self.log.info("stats", **self._proxy_counters())

    # -- health and failover ----------------------------------------------------------------

    def _passive_down(self, upstream: Upstream, reason: str) -> None:
        # The proxy saw a connection fail: probe now instead of at the next interval.
        self.health.poke()
        self.log.warning(
            "upstream_down",
            colour=upstream.colour.value,
            host=upstream.name,
            address=upstream.address,
            reason=reason,
        )

    async def _on_snapshot(self, snapshot: HealthSnapshot) -> None:
        _reraise_cancel()
        previous = self.snapshot
        self.snapshot = snapshot
        self.metrics.on_snapshot(snapshot)
        if self.routes is not None:
            self.routes.apply_health(snapshot)
        for colour in Colour:
            verdict = snapshot.verdict(colour)
            if previous is None or previous.verdict(colour) is not verdict:
                self.log.info("health", colour=colour.value, verdict=verdict.value)
        if self.leader and not self.degraded and self.active is not None:
            async with self._deciding:
                await self._decide(snapshot, self.active)

    async def _restart_grace_left(self, snapshot: HealthSnapshot, live: Colour) -> float:
        """Seconds of ``restart_grace`` left for a live colour a deploy is restarting.

        Asked only while every live host refuses connections; the deploy lock is read
        then and there (a deploy may have taken it since the last heartbeat).
        """
        grace = self.config.failover.restart_grace
        if grace <= 0 or not refusing_only(snapshot.envs.get(live)):
            self._restart_started = None
            return 0.0
        with contextlib.suppress(ControlPlaneUnavailable):
            self._live_deploy = await self.control.lock_info(f"deploy:{live}") is not None
        if not self._live_deploy:
            self._restart_started = None
            return 0.0
        now = time.monotonic()
        if self._restart_started is None:
            self._restart_started = now
            self.log.info("restart_grace", live=live.value, grace=grace)
        return max(0.0, grace - (now - self._restart_started))

    async def _decide(self, snapshot: HealthSnapshot, active: ActiveState) -> None:
        now = self.control.clock_now()
        decision = decide(
            snapshot=snapshot,
            active=active,
            armed=self.armed,
            policy=self.config.failover,
            now=now,
            last_switch_at=last_switch_at(active),
            last_failover_from=self._last_failover_from,
            restart_grace_left=await self._restart_grace_left(snapshot, active.colour),
        )
        if not decision.switches or decision.to is None:
            await self._record_held(snapshot, active, decision)
            return
        self._last_held = None
        self.decisions += 1
        fields: dict[str, Any] = {f"evidence.{k}": v for k, v in decision.evidence.items()}
        try:
            state = await self.control.switch(
                decision.to,
                expected_epoch=active.epoch,
                reason=decision.reason,
                kind=decision.action,
                actor=self.actor,
                # The emergency path never waits for gates; the event says they were skipped.
                details={**decision.evidence, **failover_gates_note(self.config)},
                # A failover that cannot commit within a second is stale: the next
                # round decides again on fresh health.
                deadline=now + self.control.timeout,
            )
        except ConflictError as e:
            self.log.warning(decision.action, outcome="conflict", error=str(e))
            with contextlib.suppress(ControlPlaneUnavailable):
                await self._refresh_active()
            return
        except ControlPlaneUnavailable as e:
            self.log.error(decision.action, outcome="unavailable", error=str(e))
            self._fail_static(e)
            return
        self._last_failover_from = active.colour if decision.action == "failover" else None
        self.metrics.on_decision(decision.action, decision.to)
        self._apply(state)
        self.log.warning(
            decision.action,
            **{"from": active.colour.value, "to": decision.to.value},
            reason=decision.reason,
            epoch=state.epoch,
            **fields,
        )
        if not self.builtin:
            await self._tell_router(f"{decision.action} to {decision.to}", decision.to)

    async def _record_held(
        self, snapshot: HealthSnapshot, active: ActiveState, decision: FailoverDecision
    ) -> None:
        """Record why the agent did NOT fail over while the live colour is down.

        An operator reading the events after an outage must see that the agent saw it
        and why it held (stand-by unhealthy, in dwell, disarmed). Recorded once per
        cause (the decision's code, not its text: a dwell countdown changes every
        probe), not every probe round.
        """
        if snapshot.verdict(active.colour) is not Verdict.DOWN:
            self._last_held = None
            return
        if decision.code == self._last_held:
            return
        self._last_held = decision.code
        self.metrics.on_held(decision.code)
        self.log.warning("failover_held", reason=decision.reason, live=active.colour.value)
        with contextlib.suppress(ConsoleError):
            await self.control.record(
                "failover",
                f"failover held: {decision.reason}",
                before=active.colour.value,
                after=active.colour.value,
                reason=decision.reason,
                outcome="held",
                actor=self.actor,
                details={"code": decision.code, **decision.evidence},
            )

    # -- non-builtin routers: failover and drift repair ------------------------------------

    def _get_router(self) -> Router:
        if self._router is None:
            from console.core.router.factory import build_router

            self._router = build_router(self.config, self.control)
        return self._router

    async def _tell_router(self, purpose: str, fallback: Colour) -> bool:
        """Apply the control plane's colour on the router (fenced); False if it failed.

        A failure is logged and recorded; the reconcile loop retries every interval, so
        a router that was down during a failover is brought in line when it returns.
        """
        from console.core.router_sync import apply_live

        try:
            async with asyncio.timeout(self.config.router.confirm_timeout + 5.0):
                applied = await apply_live(
                    self.control,
                    self._get_router(),
                    purpose=f"{purpose} by {self.actor}",
                    wait=self.config.router.confirm_timeout,
                    fallback=fallback,
                )
        except (ConsoleError, TimeoutError) as e:
            error = str(e) or "timed out"
            self.log.error("router_switch_failed", to=fallback.value, error=error)
            with contextlib.suppress(ConsoleError):
                await self.control.record(
                    "failover",
                    f"router did not switch to {fallback}: {error}; retrying every interval",
                    after=fallback.value,
                    outcome="failed",
                    actor=self.actor,
                )
            return False
        live = applied.router.live
        self.log.info(
            "router_switched",
            to=live.value if live else "",
            router=self.config.router.kind,
            fenced=applied.fenced,
        )
        return True

    async def _reconcile_loop(self) -> None:
        """The leader keeps a non-builtin router on the control plane's colour.

        Drift (someone reloaded HAProxy without its state file, a router was down during
        a switch or failover) is repaired once and recorded once per episode; while a
        switch holds the router lock the loop leaves the router alone, so it never
        fights a switch in progress.
        """
        from console.core.router_sync import ROUTER_LOCK

        interval = max(self.config.failover.interval, 0.5)
        while True:
            _reraise_cancel()
            await asyncio.sleep(interval)
            if not self.leader or self.degraded or self.active is None:
                continue
            try:
                async with asyncio.timeout(5.0):
                    actual = (await self._get_router().state()).live
                if actual is self.active.colour:
                    if self._drift is not None:
                        self.log.info("router_in_line", live=actual.value)
                    self._drift = None
                    self.metrics.on_drift(None)
                    continue
                if await self._switch_in_progress(ROUTER_LOCK):
                    continue  # a writer is at work; look again next round
            except (ConsoleError, TimeoutError) as e:
                self._note_drift(f"router unreadable: {e or 'timed out'}")
                continue
            seen = actual.value if actual else "no single colour"
            await self._repair_drift(seen, self.active)

    async def _switch_in_progress(self, router_lock: str) -> bool:
        """An operator's switch (between its compare-and-set and its router write) or a
        router write is under way: what looks like drift is the switch itself."""
        from console.core.switching import SWITCH_LOCK

        for name in (SWITCH_LOCK, router_lock):
            if await self.control.lock_info(name) is not None:
                return True
        return False

    def _note_drift(self, what: str) -> None:
        if what != self._drift:
            self.log.warning("router_drift", drift=what)
        self._drift = what
        self.metrics.on_drift(what)

    async def _repair_drift(self, seen: str, active: ActiveState) -> None:
        what = f"router serves {seen}, control plane says {active.colour} (epoch {active.epoch})"
        first = self._drift != what
        self._note_drift(what)
        if not await self._tell_router(f"drift repair to {active.colour}", active.colour):
            return
        if first:
            with contextlib.suppress(ConsoleError):
                await self.control.record(
                    "switch",
                    f"router drift repaired by the agent: {what}",
                    before=seen,
                    after=active.colour.value,
                    reason="router drift",
                    actor=self.actor,
                )
        self._drift = None
        self.metrics.on_drift(None)


def _reraise_cancel() -> None:
    """Re-raise a cancel that a client library swallowed.

    redis-py may answer a cancel mid-command by dropping the connection and retrying, or
    by raising a connection error (ControlPlaneUnavailable here); either way the
    CancelledError never reaches our loop, and a loop that goes on to sleep would never
    stop. The task still counts the cancel request, so every loop looks before sleeping.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
