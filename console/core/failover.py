"""The automatic failover policy: a pure function from health and state to a decision.

The agent calls :func:`decide` after every health round and acts on the result; the
policy itself does no I/O, so every rule is unit-tested without servers.

The rules, in order:

1. ``[failover] enabled = false`` or disarmed in the control plane: stay.
2. The live colour's health is unknown (not probed yet, no hosts): stay.
3. The live colour is DOWN: every one of its hosts is down after hysteresis (``up`` is
   false, which already means ``fall`` consecutive failed probes). DEGRADED (some hosts
   still serve) is not down: stay.
4. The stand-by must be *usable*: at least one host up after hysteresis, and no up host
   failing its latest probe (a host on its way down is not trusted with all traffic).
   Stand-by hosts that are down are tolerated as long as one healthy host remains.
5. Within ``min_dwell`` seconds of the last switch (of any kind): stay, "in dwell".
   This is what prevents flapping between two sick colours.
6. A deploy to the live colour is restarting it (the caller says how much of
   ``restart_grace`` is left: only while the deploy holds its lock and the hosts refuse
   connections, never for 5xx answers or timeouts): stay.
7. Otherwise: fail over to the stand-by.

Every "stay" carries a stable ``code`` (``standby_unhealthy``, ``dwell``, ...) so the
agent records a held failover once per cause, not once per probe while a countdown in
the reason text changes.

Failback (moving traffic back to the colour an automatic failover left) is never
automatic unless ``[failover] failback = true``. Because the policy is memoryless, the
caller passes ``last_failover_from``: the colour the last switch moved away from, when
that switch was an automatic failover. Failback happens when that colour is the
stand-by, it is HEALTHY with every host having passed ``rise`` consecutive probes, the
live colour is not down (that would be an ordinary failover) and ``min_dwell`` elapsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from console.core.config import FailoverConfig
from console.core.models import ActiveState, Colour, EnvHealth, HealthSnapshot, HostHealth

Action = Literal["stay", "failover", "failback"]


@dataclass(frozen=True, slots=True)
class FailoverDecision:
    """What the policy decided, why, and the health evidence it looked at."""

    action: Action
    to: Colour | None
    """The colour to switch to; None when staying."""
    reason: str
    """One line for the operator and the event stream."""
    code: str = ""
    """A stable name for the cause (the reason text may hold changing numbers)."""
    evidence: dict[str, str] = field(default_factory=dict)
    """``<colour>/<host>`` -> last probe of each live host; ``<colour>`` -> an env summary."""

    @property
    def switches(self) -> bool:
        """Whether the decision moves traffic."""
        return self.action != "stay"


def last_switch_at(active: ActiveState) -> float:
    """When the live colour last changed, for ``min_dwell``.

    The first colour ever set (``init``) is not a switch: a fresh installation must be
    able to fail over at once. Nor is a re-seed after the control plane lost its data:
    traffic did not move, and failover must work again as soon as Redis answers.
    """
    return 0.0 if active.kind in ("init", "reseed") else active.updated_at


def decide(
    *,
    snapshot: HealthSnapshot,
    active: ActiveState,
    armed: bool,
    policy: FailoverConfig,
    now: float,
    last_switch_at: float,
    last_failover_from: Colour | None = None,
    restart_grace_left: float = 0.0,
) -> FailoverDecision:
    """Decide whether to stay, fail over, or fail back.

    Args:
        snapshot: the latest health of both colours, after hysteresis.
        active: the control plane's live colour.
        armed: whether automatic failover is armed in the control plane.
        policy: the ``[failover]`` section.
        now: the current wall-clock time (epoch seconds).
        last_switch_at: when the live colour last changed (``ActiveState.updated_at``).
        last_failover_from: the colour an automatic failover moved traffic away from, if
            the last switch was one; enables failback.
        restart_grace_left: seconds a deploy restarting the live colour may still refuse
            connections before it counts as down (0: no such deploy).

    Returns:
        The decision, with the evidence (live hosts one by one, stand-by summarised).
    """
    live = active.colour
    standby = live.other
    live_env = snapshot.envs.get(live)
    standby_env = snapshot.envs.get(standby)
    evidence = _evidence(live, live_env, standby, standby_env)

    def stay(code: str, reason: str) -> FailoverDecision:
        return FailoverDecision("stay", None, reason, code, evidence)

    if not policy.enabled:
        return stay(
            "disabled", "automatic failover is disabled in the configuration ([failover] enabled)"
        )
    if not armed:
        return stay("disarmed", "automatic failover is disarmed (bgconsole failover arm)")
    if live_env is None or not live_env.hosts or any(h.last is None for h in live_env.hosts):
        return stay("unknown", f"health of live {live} is unknown (not probed yet)")

    dwell_left = policy.min_dwell - (now - last_switch_at)
    live_down = all(not h.up for h in live_env.hosts)
    if live_down:
        if not _usable(standby_env):
            return stay(
                "standby_unhealthy",
                f"live {live} is down but stand-by {standby} is not healthy; staying",
            )
        if dwell_left > 0:
            return stay(
                "dwell",
                f"live {live} is down but in dwell: last switch {now - last_switch_at:.1f} s "
                f"ago, min_dwell {policy.min_dwell:g} s ({dwell_left:.1f} s left)",
            )
        if restart_grace_left > 0:
            return stay(
                "restart_grace",
                f"live {live} refuses connections while a deploy restarts it; failing over "
                f"in {restart_grace_left:.1f} s unless it comes back (restart_grace "
                f"{policy.restart_grace:g} s)",
            )
        return FailoverDecision(
            "failover",
            standby,
            f"live {live} is down ({_down_summary(live_env)}); stand-by {standby} is healthy",
            "failover",
            evidence,
        )

    if last_failover_from is not None and last_failover_from == standby:
        back = _failback(standby, standby_env, policy, dwell_left, evidence)
        if back is not None:
            return back
    if live_env.healthy_hosts != live_env.hosts:
        return stay("degraded", f"live {live} is degraded: some hosts still serve")
    return stay("healthy", f"live {live} is healthy")


def _failback(
    original: Colour,
    env: EnvHealth | None,
    policy: FailoverConfig,
    dwell_left: float,
    evidence: dict[str, str],
) -> FailoverDecision | None:
    """The decision about moving back to ``original``; None while it has not recovered."""
    if not _recovered(env, policy.rise):
        return None
    if not policy.failback:
        reason = (
            f"original colour {original} is healthy again; failback is off "
            f"(switch back with: bgconsole switch {original})"
        )
        return FailoverDecision("stay", None, reason, "failback_off", evidence)
    if dwell_left > 0:
        reason = (
            f"original colour {original} is healthy again but in dwell ({dwell_left:.1f} s left)"
        )
        return FailoverDecision("stay", None, reason, "failback_dwell", evidence)
    reason = f"original colour {original} healthy for {policy.rise}+ probes; failing back"
    return FailoverDecision("failback", original, reason, "failback", evidence)


def _usable(env: EnvHealth | None) -> bool:
    """A stand-by that may take all traffic: one host up, no up host failing now."""
    if env is None:
        return False
    up = [h for h in env.hosts if h.up]
    return bool(up) and all(h.last is not None and h.last.ok for h in up)


def _recovered(env: EnvHealth | None, rise: int) -> bool:
    """Every host of a colour up and answering for at least ``rise`` probes in a row."""
    if env is None or not env.hosts:
        return False
    return all(
        h.up and h.last is not None and h.last.ok and h.consecutive_successes >= rise
        for h in env.hosts
    )


def _down_summary(env: EnvHealth) -> str:
    failures = min(h.consecutive_failures for h in env.hosts)
    return f"{len(env.hosts)}/{len(env.hosts)} hosts down, {failures}+ consecutive failures"


def describe_host(host: HostHealth) -> str:
    """One host's last probe in a few words: ``3 failures: connect refused``."""
    probe = host.last
    if probe is None:
        return "not probed yet"
    latency = f" in {probe.latency_ms:.0f} ms" if probe.latency_ms is not None else ""
    if probe.ok:
        state = "up" if host.up else "recovering"
        return f"{state}: {probe.status}{latency}, {host.consecutive_successes} ok in a row"
    what = probe.error or (f"status {probe.status}" if probe.status is not None else "failed")
    count = host.consecutive_failures
    noun = "failure" if count == 1 else "failures"
    state = "" if not host.up else " (still up)"
    return f"{count} {noun}{state}: {what}{latency}"


def describe_env(env: EnvHealth | None) -> str:
    """A colour's health in a few words: ``healthy 2/2 hosts up``."""
    if env is None:
        return "unknown: not probed"
    return f"{env.verdict} {len(env.healthy_hosts)}/{len(env.hosts)} hosts up"


def _evidence(
    live: Colour, live_env: EnvHealth | None, standby: Colour, standby_env: EnvHealth | None
) -> dict[str, str]:
    evidence: dict[str, str] = {"live": str(live), str(live): describe_env(live_env)}
    for host in live_env.hosts if live_env else ():
        evidence[f"{live}/{host.host}"] = describe_host(host)
    evidence[str(standby)] = describe_env(standby_env)
    for host in standby_env.hosts if standby_env else ():
        if not (host.up and host.last is not None and host.last.ok):
            evidence[f"{standby}/{host.host}"] = describe_host(host)
    return evidence


def refusing_only(env: EnvHealth | None) -> bool:
    """Every host of a colour fails by refusing connections (a restart, not a broken app).

    5xx answers, timeouts and resets are real failures and never earn a restart grace.
    """
    if env is None or not env.hosts:
        return False
    return all(
        h.last is not None and not h.last.ok and h.last.error == "connection refused"
        for h in env.hosts
    )
