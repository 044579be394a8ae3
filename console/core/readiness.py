"""Whether automatic failover would really happen now, and an alarm when it would not.

"Armed" in the control plane is only a wish. Failover happens when a leader agent is
alive (fresh heartbeat), can read the control plane (it says when it last did), failover
is armed and enabled, and the policy would act: the stand-by is usable and the dwell is
over. Status, ``failover status`` and the console all ask this one function, so they
never disagree about it.
"""

from __future__ import annotations

from dataclasses import dataclass

from console.core.config import AgentConfig, FailoverConfig
from console.core.failover import last_switch_at
from console.core.models import ActiveState, AgentHeartbeat, HealthSnapshot, Verdict


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer: is automatic failover working, and is something wrong right now."""

    active: bool
    """A leader agent with a fresh heartbeat that reads the control plane, armed, enabled."""
    why_not: str | None
    """Why it is not active (None when it is)."""
    alarm: str | None
    """Set when the live colour is down and nothing will fail over: the operator must act."""


def fresh_limit(agent: AgentConfig) -> float:
    """Seconds after which a heartbeat (or the agent's last control-plane read) is stale."""
    return max(3 * agent.heartbeat_interval, agent.leader_lease)


def leader_of(agents: tuple[AgentHeartbeat, ...] | list[AgentHeartbeat]) -> AgentHeartbeat | None:
    """The agent that says it leads, if any."""
    return next((a for a in agents if a.leader), None)


def readiness(
    *,
    now: float,
    active: ActiveState | None,
    armed: bool | None,
    agents: tuple[AgentHeartbeat, ...] | list[AgentHeartbeat],
    health: HealthSnapshot | None,
    policy: FailoverConfig,
    agent_config: AgentConfig,
    control_error: str | None = None,
) -> Readiness:
    """Judge automatic failover from what status gathered (``now`` on the control plane's clock)."""
    why = _why_not(now, armed, agents, policy, agent_config, control_error)
    alarm = None
    if active is not None and health is not None:
        live, standby = active.colour, active.colour.other
        # The leader agent probes fast (fast_interval) and says what it sees in every
        # heartbeat: trust it as soon as it says "down", before our own probes agree.
        leader = leader_of(agents)
        seen_down = leader is not None and leader.health.get(live.value) == Verdict.DOWN.value
        if health.verdict(live) is Verdict.DOWN or seen_down:
            blocker = why
            standby_down = health.verdict(standby) is Verdict.DOWN or (
                leader is not None and leader.health.get(standby.value) == Verdict.DOWN.value
            )
            if blocker is None and standby_down:
                blocker = f"stand-by {standby} is down too"
            if blocker is None:
                dwell_left = policy.min_dwell - (now - last_switch_at(active))
                if dwell_left > 0:
                    blocker = f"in dwell for {dwell_left:.0f} s more (min_dwell)"
            if blocker is not None:
                alarm = f"live {live} is DOWN and nothing will fail over: {blocker}"
    return Readiness(why is None, why, alarm)


def _why_not(
    now: float,
    armed: bool | None,
    agents: tuple[AgentHeartbeat, ...] | list[AgentHeartbeat],
    policy: FailoverConfig,
    agent_config: AgentConfig,
    control_error: str | None,
) -> str | None:
    if not policy.enabled:
        return "disabled in the configuration ([failover] enabled = false)"
    if control_error is not None:
        return "the control plane cannot be read"
    if armed is None:
        return "armed state unknown (the control plane has no record; bgconsole failover arm)"
    if not armed:
        return "disarmed (bgconsole failover arm)"
    leader = leader_of(agents)
    if leader is None:
        return (
            "no agent leads (start one with: bgconsole serve)"
            if not agents
            else ("agents run but none leads yet")
        )
    limit = fresh_limit(agent_config)
    if now - leader.at > limit:
        return f"the leader agent's heartbeat is {now - leader.at:.0f} s old"
    if leader.control_ok_at is None or now - leader.control_ok_at > limit:
        return "the leader agent cannot read the control plane (blind)"
    if not leader.deciding:
        return "the leader agent does not decide (failover disabled in its own configuration)"
    return None
