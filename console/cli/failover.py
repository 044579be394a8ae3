"""``bgconsole failover arm|disarm|status``: the automatic-failover switch and who acts on it."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.common import (
    EXIT_OK,
    SubParsers,
    add_config_option,
    add_json_option,
    ago,
    config_from,
    print_json,
)
from console.core.config import Config
from console.core.control import ControlPlane
from console.core.failover import last_switch_at
from console.core.readiness import readiness
from console.core.text import printable


def register(subparsers: SubParsers) -> None:
    """Add the ``failover`` verb."""
    parser = subparsers.add_parser(
        "failover",
        help="arm or disarm automatic failover, or show whether it is active",
        description=(
            "arm / disarm: turn the agent's automatic failover on or off for everyone (an "
            "event is recorded). status: armed or not, the leader agent and its heartbeat."
        ),
    )
    parser.add_argument("action", choices=("arm", "disarm", "status"), help="what to do")
    parser.add_argument("--reason", default="", metavar="TEXT", help="recorded with the event")
    add_config_option(parser)
    add_json_option(parser)
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Arm, disarm, or report."""
    config = config_from(args)
    control = ControlPlane.from_config(config.control, config.console.name)
    try:
        if args.action == "status":
            status = await _status(config, control)
        else:
            before = await control.armed_state()
            await control.set_armed(args.action == "arm", reason=args.reason)
            status = await _status(config, control)
            status["was_armed"] = before
    finally:
        await control.aclose()
    if args.json:
        print_json(status)
        return EXIT_OK
    if args.action != "status":
        state = "armed" if status["armed"] else "disarmed"
        was = {True: "armed", False: "disarmed", None: "unknown"}[status["was_armed"]]
        print(f"automatic failover {state} (was {was})")
    for line in _describe(status):
        print(line)
    return EXIT_OK


async def _status(config: Config, control: ControlPlane) -> dict[str, Any]:
    now = await control.server_time()
    armed = await control.armed_state()
    active = await control.active()
    leader = await control.leader()
    agents = await control.agents()
    policy = config.failover
    dwell_left = 0.0
    if active is not None:
        dwell_left = max(0.0, policy.min_dwell - (now - last_switch_at(active)))
    # "Armed" is only a wish: active means a fresh leader that reads the control plane.
    judged = readiness(
        now=now,
        active=active,
        armed=armed,
        agents=agents,
        health=None,
        policy=policy,
        agent_config=config.agent,
    )
    return {
        "armed": armed,
        "enabled": policy.enabled,
        "effective": judged.active,
        "why_not": judged.why_not,
        "live": active.colour.value if active else None,
        "epoch": active.epoch if active else None,
        "dwell_left_s": round(dwell_left, 1),
        "leader": leader,
        "agents": [
            {
                "actor": a.actor,
                "leader": a.leader,
                "heartbeat_age_s": round(max(0.0, now - a.at), 2),
                "at": a.at,
                "serving": a.serving,
                "armed": a.armed,
                "health": dict(a.health),
            }
            for a in agents
        ],
        "policy": {
            "interval": policy.interval,
            "fall": policy.fall,
            "rise": policy.rise,
            "min_dwell": policy.min_dwell,
            "failback": policy.failback,
        },
    }


def _describe(status: dict[str, Any]) -> list[str]:
    policy = status["policy"]
    lines = [
        "armed:    "
        + {True: "yes", False: "no (bgconsole failover arm)", None: "UNKNOWN (no record)"}[
            status["armed"]
        ],
        f"config:   {'enabled' if status['enabled'] else 'DISABLED ([failover] enabled = false)'}"
        f", down after {policy['fall']} x {policy['interval']:g} s, "
        f"min_dwell {policy['min_dwell']:g} s, failback {'on' if policy['failback'] else 'off'}",
    ]
    if status["live"] is not None:
        dwell = f", in dwell {status['dwell_left_s']:g} s" if status["dwell_left_s"] else ""
        lines.append(f"live:     {status['live']} (epoch {status['epoch']}{dwell})")
    agents = status["agents"]
    if not agents:
        lines.append("agents:   none running (start one with: bgconsole serve)")
    for agent in agents:
        role = "leader" if agent["leader"] else "standby"
        # Agent names and health come from the control plane (anyone's text): escaped.
        health = printable(" ".join(f"{k}={v}" for k, v in sorted(agent["health"].items())))
        lines.append(
            f"agent:    {printable(agent['actor'])} {role}, heartbeat "
            f"{ago(0.0, agent['heartbeat_age_s'])} ago, "
            f"serving {printable(str(agent['serving']))}" + (f", sees {health}" if health else "")
        )
    if status["effective"]:
        lines.append("automatic failover is ACTIVE")
    else:
        lines.append(f"automatic failover is NOT ACTIVE: {printable(status['why_not'] or '')}")
    return lines
