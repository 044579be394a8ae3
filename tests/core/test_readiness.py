"""Whether automatic failover would act: pure rules over what status gathers."""

from __future__ import annotations

from console.core.config import AgentConfig, FailoverConfig
from console.core.models import (
    ActiveState,
    AgentHeartbeat,
    Colour,
    EnvHealth,
    HealthSnapshot,
    Verdict,
)
from console.core.readiness import readiness

NOW = 1_000_000.0
POLICY = FailoverConfig(min_dwell=30.0)
AGENT = AgentConfig(heartbeat_interval=1.0, leader_lease=5.0)
ACTIVE = ActiveState(Colour.BLUE, 4, NOW - 3600, "alice@j1", "")


def beat(age: float = 0.5, control_age: float | None = 0.5, **kw: object) -> AgentHeartbeat:
    fields: dict[str, object] = {
        "at": NOW - age,
        "actor": "agent@router",
        "pid": 1,
        "armed": True,
        "leader": True,
        "router_kind": "builtin",
        "serving": "blue",
        "control_ok_at": None if control_age is None else NOW - control_age,
        "deciding": True,
        **kw,
    }
    return AgentHeartbeat(**fields)  # type: ignore[arg-type]


def health(blue: Verdict, green: Verdict) -> HealthSnapshot:
    return HealthSnapshot(
        NOW,
        {
            Colour.BLUE: EnvHealth(Colour.BLUE, blue, ()),
            Colour.GREEN: EnvHealth(Colour.GREEN, green, ()),
        },
    )


def judge(**kw: object) -> tuple[bool, str | None, str | None]:
    args: dict[str, object] = {
        "now": NOW,
        "active": ACTIVE,
        "armed": True,
        "agents": [beat()],
        "health": health(Verdict.HEALTHY, Verdict.HEALTHY),
        "policy": POLICY,
        "agent_config": AGENT,
        **kw,
    }
    result = readiness(**args)  # type: ignore[arg-type]
    return result.active, result.why_not, result.alarm


def test_active_with_a_fresh_leader_that_reads_the_control_plane() -> None:
    assert judge() == (True, None, None)


def test_not_active_for_each_reason_and_an_alarm_when_live_is_down() -> None:
    cases: dict[str, dict[str, object]] = {
        "disarmed": {"armed": False},
        "armed state unknown": {"armed": None},
        "no agent leads": {"agents": []},
        "heartbeat is 30 s old": {"agents": [beat(age=30.0)]},
        "cannot read the control plane": {"agents": [beat(control_age=60.0)]},
        "does not decide": {"agents": [beat(deciding=False)]},
        "control plane cannot be read": {"control_error": "down"},
    }
    for want, change in cases.items():
        active, why, alarm = judge(**change)
        assert not active, want
        assert why is not None
        assert want in why, (want, why)
        assert alarm is None
        _, _, alarm = judge(health=health(Verdict.DOWN, Verdict.HEALTHY), **change)
        assert alarm is not None
        assert alarm.startswith("live blue is DOWN and nothing will fail over: "), alarm


def test_alarm_when_the_standby_is_down_too_or_in_dwell() -> None:
    _, _, alarm = judge(health=health(Verdict.DOWN, Verdict.DOWN))
    assert alarm is not None
    assert "stand-by green is down too" in alarm
    recent = ActiveState(Colour.BLUE, 4, NOW - 10, "alice@j1", "")
    _, _, alarm = judge(active=recent, health=health(Verdict.DOWN, Verdict.HEALTHY))
    assert alarm is not None
    assert "in dwell for 20 s more" in alarm


def test_no_alarm_when_failover_will_act_and_the_agents_view_counts() -> None:
    assert judge(health=health(Verdict.DOWN, Verdict.HEALTHY))[2] is None
    seen = beat(health={"blue": "down", "green": "down"})
    _, _, alarm = judge(agents=[seen])
    assert alarm is not None
    assert "stand-by green is down too" in alarm
