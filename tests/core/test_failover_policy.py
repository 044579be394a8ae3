"""Unit tests of the failover policy: pure health in, decision out (fakes are fine here)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from console.core.config import FailoverConfig
from console.core.failover import FailoverDecision, decide, describe_host, last_switch_at
from console.core.models import (
    ActiveState,
    Colour,
    EnvHealth,
    HealthSnapshot,
    HostHealth,
    Probe,
    Verdict,
)

NOW = 1_000_000.0
POLICY = FailoverConfig(min_dwell=30.0, fall=2, rise=2)
BLUE_LIVE = ActiveState(Colour.BLUE, epoch=3, updated_at=NOW - 600, actor="op@jump", reason="")


def host(
    colour: Colour,
    name: str,
    *,
    up: bool,
    failures: int = 0,
    ok: bool | None = None,
    successes: int = 5,
    error: str = "connect refused",
) -> HostHealth:
    """A host whose last probe is ok unless it has failures (or ``ok`` says otherwise)."""
    last_ok = failures == 0 if ok is None else ok
    probe = Probe(
        at=NOW - 0.5,
        ok=last_ok,
        status=200 if last_ok else None,
        latency_ms=3.0 if last_ok else None,
        error=None if last_ok else error,
    )
    return HostHealth(
        colour=colour,
        host=name,
        url=f"http://127.0.0.1/{name}",
        up=up,
        last=probe,
        consecutive_failures=failures,
        consecutive_successes=0 if failures else successes,
    )


def env(colour: Colour, *hosts: HostHealth) -> EnvHealth:
    up = sum(h.up for h in hosts)
    verdict = Verdict.HEALTHY if up == len(hosts) else Verdict.DOWN if up == 0 else Verdict.DEGRADED
    return EnvHealth(colour, verdict, hosts)


def healthy(colour: Colour, n: int = 1) -> EnvHealth:
    return env(colour, *(host(colour, f"{colour}{i}", up=True) for i in range(n)))


def down(colour: Colour, n: int = 1, failures: int = 3) -> EnvHealth:
    return env(
        colour, *(host(colour, f"{colour}{i}", up=False, failures=failures) for i in range(n))
    )


def snap(*envs: EnvHealth) -> HealthSnapshot:
    return HealthSnapshot(at=NOW, envs={e.colour: e for e in envs})


def run(
    snapshot: HealthSnapshot,
    *,
    armed: bool = True,
    policy: FailoverConfig = POLICY,
    active: ActiveState = BLUE_LIVE,
    last_failover_from: Colour | None = None,
) -> FailoverDecision:
    return decide(
        snapshot=snapshot,
        active=active,
        armed=armed,
        policy=policy,
        now=NOW,
        last_switch_at=active.updated_at,
        last_failover_from=last_failover_from,
    )


def test_live_down_and_standby_healthy_fails_over() -> None:
    decision = run(snap(down(Colour.BLUE), healthy(Colour.GREEN)))
    assert decision.action == "failover"
    assert decision.to is Colour.GREEN
    assert decision.switches
    assert "blue is down" in decision.reason
    assert decision.evidence["blue/blue0"] == "3 failures: connect refused"
    assert decision.evidence["green"] == "healthy 1/1 hosts up"


def test_disarmed_stays_but_shows_evidence() -> None:
    decision = run(snap(down(Colour.BLUE), healthy(Colour.GREEN)), armed=False)
    assert decision.action == "stay"
    assert decision.to is None
    assert "disarmed" in decision.reason
    assert "3 failures" in decision.evidence["blue/blue0"]


def test_disabled_in_config_stays() -> None:
    decision = run(
        snap(down(Colour.BLUE), healthy(Colour.GREEN)), policy=replace(POLICY, enabled=False)
    )
    assert decision.action == "stay"
    assert "disabled" in decision.reason


def test_standby_down_stays() -> None:
    decision = run(snap(down(Colour.BLUE), down(Colour.GREEN)))
    assert decision.action == "stay"
    assert "not healthy" in decision.reason
    assert decision.evidence["green"] == "down 0/1 hosts up"


def test_standby_missing_stays() -> None:
    decision = run(snap(down(Colour.BLUE)))
    assert decision.action == "stay"
    assert decision.evidence["green"] == "unknown: not probed"


def test_standby_up_host_failing_now_is_not_trusted() -> None:
    # Up after hysteresis but its latest probe failed: on its way down.
    wobbly = env(Colour.GREEN, host(Colour.GREEN, "g0", up=True, failures=1))
    decision = run(snap(down(Colour.BLUE), wobbly))
    assert decision.action == "stay"
    assert "1 failure (still up)" in decision.evidence["green/g0"]


def test_standby_degraded_with_one_good_host_is_usable() -> None:
    mixed = env(
        Colour.GREEN,
        host(Colour.GREEN, "g0", up=True),
        host(Colour.GREEN, "g1", up=False, failures=4),
    )
    decision = run(snap(down(Colour.BLUE), mixed))
    assert decision.action == "failover"
    assert decision.to is Colour.GREEN


def test_within_dwell_stays() -> None:
    recent = replace(BLUE_LIVE, updated_at=NOW - 10)
    decision = run(snap(down(Colour.BLUE), healthy(Colour.GREEN)), active=recent)
    assert decision.action == "stay"
    assert "in dwell" in decision.reason
    assert "20.0 s left" in decision.reason


def test_dwell_elapsed_fails_over() -> None:
    just_over = replace(BLUE_LIVE, updated_at=NOW - 30.01)
    decision = run(snap(down(Colour.BLUE), healthy(Colour.GREEN)), active=just_over)
    assert decision.action == "failover"


def test_zero_dwell_fails_over_immediately() -> None:
    recent = replace(BLUE_LIVE, updated_at=NOW)
    decision = run(
        snap(down(Colour.BLUE), healthy(Colour.GREEN)),
        active=recent,
        policy=replace(POLICY, min_dwell=0.0),
    )
    assert decision.action == "failover"


def test_live_degraded_stays() -> None:
    mixed = env(
        Colour.BLUE,
        host(Colour.BLUE, "b0", up=True),
        host(Colour.BLUE, "b1", up=False, failures=5),
    )
    decision = run(snap(mixed, healthy(Colour.GREEN)))
    assert decision.action == "stay"
    assert "degraded" in decision.reason
    assert decision.evidence["blue/b1"] == "5 failures: connect refused"


def test_fall_not_reached_stays() -> None:
    # One failed probe with fall = 2: the host is still up after hysteresis.
    first_failure = env(Colour.BLUE, host(Colour.BLUE, "b0", up=True, failures=1))
    decision = run(snap(first_failure, healthy(Colour.GREEN)))
    assert decision.action == "stay"
    assert decision.evidence["blue/b0"].startswith("1 failure (still up)")


def test_unknown_live_health_stays() -> None:
    unprobed = EnvHealth(
        Colour.BLUE,
        Verdict.UNKNOWN,
        (
            HostHealth(
                Colour.BLUE,
                "b0",
                "http://x",
                up=False,
                last=None,
                consecutive_failures=0,
                consecutive_successes=0,
            ),
        ),
    )
    decision = run(snap(unprobed, healthy(Colour.GREEN)))
    assert decision.action == "stay"
    assert "unknown" in decision.reason
    assert decision.evidence["blue/b0"] == "not probed yet"


def test_empty_snapshot_stays() -> None:
    decision = run(HealthSnapshot(at=NOW))
    assert decision.action == "stay"
    assert "unknown" in decision.reason


def test_healthy_live_stays() -> None:
    decision = run(snap(healthy(Colour.BLUE, 2), healthy(Colour.GREEN)))
    assert decision.action == "stay"
    assert decision.reason == "live blue is healthy"
    assert decision.evidence["blue"] == "healthy 2/2 hosts up"


def test_green_live_fails_over_to_blue() -> None:
    green_live = replace(BLUE_LIVE, colour=Colour.GREEN)
    decision = run(snap(healthy(Colour.BLUE), down(Colour.GREEN, 3)), active=green_live)
    assert decision.action == "failover"
    assert decision.to is Colour.BLUE
    assert "3/3 hosts down" in decision.reason


GREEN_AFTER_FAILOVER = ActiveState(Colour.GREEN, 4, NOW - 120, "agent:r1:1", "blue down")


def test_failback_off_by_default_stays_and_says_how() -> None:
    decision = run(
        snap(healthy(Colour.BLUE), healthy(Colour.GREEN)),
        active=GREEN_AFTER_FAILOVER,
        last_failover_from=Colour.BLUE,
    )
    assert decision.action == "stay"
    assert "failback is off" in decision.reason
    assert "bgconsole switch blue" in decision.reason


def test_failback_on_moves_back() -> None:
    decision = run(
        snap(healthy(Colour.BLUE), healthy(Colour.GREEN)),
        active=GREEN_AFTER_FAILOVER,
        last_failover_from=Colour.BLUE,
        policy=replace(POLICY, failback=True),
    )
    assert decision.action == "failback"
    assert decision.to is Colour.BLUE


def test_failback_waits_for_rise() -> None:
    rising = env(Colour.BLUE, host(Colour.BLUE, "b0", up=True, successes=1))
    decision = run(
        snap(rising, healthy(Colour.GREEN)),
        active=GREEN_AFTER_FAILOVER,
        last_failover_from=Colour.BLUE,
        policy=replace(POLICY, failback=True, rise=3),
    )
    assert decision.action == "stay"


def test_failback_respects_dwell() -> None:
    recent = replace(GREEN_AFTER_FAILOVER, updated_at=NOW - 5)
    decision = run(
        snap(healthy(Colour.BLUE), healthy(Colour.GREEN)),
        active=recent,
        last_failover_from=Colour.BLUE,
        policy=replace(POLICY, failback=True),
    )
    assert decision.action == "stay"
    assert "dwell" in decision.reason


def test_failback_needs_a_previous_failover() -> None:
    decision = run(
        snap(healthy(Colour.BLUE), healthy(Colour.GREEN)),
        active=GREEN_AFTER_FAILOVER,
        policy=replace(POLICY, failback=True),
    )
    assert decision.action == "stay"


@pytest.mark.parametrize(
    ("error", "expected"),
    [("connect refused", "2 failures: connect refused"), (None, "2 failures: status 500")],
)
def test_describe_host_names_the_failure(error: str | None, expected: str) -> None:
    base = host(Colour.BLUE, "b0", up=False, failures=2)
    assert base.last is not None
    probe = replace(base.last, error=error, status=None if error else 500)
    assert describe_host(replace(base, last=probe)) == expected


def test_the_first_colour_is_not_a_switch_for_dwell() -> None:
    first = ActiveState(Colour.BLUE, 1, NOW - 1, "agent:x:1", "initial colour", kind="init")
    assert last_switch_at(first) == 0.0
    switched = ActiveState(Colour.GREEN, 2, NOW - 1, "op@jump", "", kind="switch")
    assert last_switch_at(switched) == NOW - 1
