"""``bgconsole status``: which colour is live, health of both, router, agent, control plane."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from console.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    SubParsers,
    add_config_option,
    add_json_option,
    ago,
    config_from,
    print_json,
    table,
)
from console.core.config import Config, redact_url
from console.core.control import ControlPlane
from console.core.fleet import COLLAPSE_ABOVE, collapses, summarize
from console.core.health import HealthChecker
from console.core.migrate.runner import MigrationRunner
from console.core.models import Colour
from console.core.ssh import SshPool
from console.core.status import StatusReport, gather_status
from console.core.text import printable


def register(subparsers: SubParsers) -> None:
    """Add the ``status`` verb."""
    parser = subparsers.add_parser(
        "status",
        help="live colour, health of both environments, router, agent",
        description="Show the live colour and epoch, each host's health and version, what the "
        "router actually does (drift), the agent's heartbeat and the control plane. Exits 1 "
        "when the control plane or the router cannot be read, they disagree, or the live "
        "colour is down and nothing will fail over (ALARM). With --all: one line per app "
        "of the apps directory.",
    )
    parser.add_argument(
        "--all", action="store_true", help="every app of the apps directory, one line each"
    )
    parser.add_argument(
        "--apps",
        metavar="DIR",
        default=None,
        help="apps directory (default: ~/.config/bgconsole/apps); one *.toml per app",
    )
    add_config_option(parser)
    add_json_option(parser)
    parser.add_argument(
        "--hosts",
        "--wide",
        dest="wide",
        action="store_true",
        help=f"a row for every host (a colour of more than {COLLAPSE_ABOVE} hosts is "
        "otherwise one summary line)",
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Gather and print the status."""
    # Imported here: the router adapters are only needed once a verb runs.
    from console.core.router.factory import build_router

    if args.all or args.apps:
        return await _run_all(args)
    config = config_from(args)
    control = ControlPlane.from_config(config.control, config.console.name)
    health = HealthChecker(config, hysteresis=False)
    router = build_router(config, control)
    pool = SshPool(config.ssh)  # only used when a mirror is set up (its lag is measured)
    try:
        lag = MigrationRunner(config, control, pool).mirror_lag
        report = await gather_status(config, control, health, router, mirror_lag=lag)
    finally:
        await router.aclose()
        await health.aclose()
        await pool.aclose()
        await control.aclose()
    if args.json:
        print_json(as_json(config, report))
    else:
        print(render(config, report, wide=args.wide))
    trouble = report.control_error or report.router_error or report.drift
    return EXIT_FAILED if trouble or report.failover.alarm else EXIT_OK


def as_json(config: Config, report: StatusReport) -> dict[str, Any]:
    """The report as plain JSON data."""
    active = report.active
    return {
        "app": config.console.name,
        "at": report.at,
        "control": {
            "url": redact_url(config.control.redis),
            "ok": report.control_error is None,
            "latency_ms": report.control_latency_ms,
            "error": report.control_error,
            "persistence_warning": report.persistence,
            "mirror": report.mirror,
            "mirror_behind": report.mirror_behind,
        },
        "notify_failures": [dataclasses.asdict(f) for f in report.notify_failures],
        "active": None
        if active is None
        else {
            "colour": active.colour.value,
            "epoch": active.epoch,
            "updated_at": active.updated_at,
            "actor": active.actor,
            "reason": active.reason,
        },
        "router": {
            "kind": config.router.kind,
            "live": report.router.live.value if report.router and report.router.live else None,
            "detail": report.router.detail if report.router else None,
            "error": report.router_error,
            "drift": report.drift,
        },
        "failover": {
            "enabled": config.failover.enabled,
            "armed": report.armed,
            "active": report.failover.active,
            "why_not": report.failover.why_not,
            "alarm": report.failover.alarm,
            "agents": [
                {
                    "actor": a.actor,
                    "leader": a.leader,
                    "age_s": round(max(0.0, report.at - a.at), 3),
                    "control_ok_age_s": None
                    if a.control_ok_at is None
                    else round(max(0.0, report.at - a.control_ok_at), 3),
                    "drift": a.drift or None,
                    "serving": a.serving,
                    "proxy": a.proxy,
                }
                for a in report.agents
            ],
        },
        "locks": [
            {"name": lock.name, "holder": lock.holder, "purpose": lock.purpose, "since": lock.since}
            for lock in report.locks
        ],
        "envs": {
            colour.value: {
                "verdict": report.health.verdict(colour).value,
                "live": active is not None and active.colour is colour,
                "hosts": [
                    {
                        "name": h.host,
                        "url": h.url,
                        "up": h.up,
                        "status": h.last.status if h.last else None,
                        "latency_ms": h.last.latency_ms if h.last else None,
                        "version": h.version,
                        "error": h.last.error if h.last else None,
                    }
                    for h in report.health.envs[colour].hosts
                ],
            }
            for colour in Colour
        },
    }


def render(config: Config, report: StatusReport, *, wide: bool = False) -> str:
    """The report as text for a terminal (``wide``: a row per host even for a fleet)."""
    lines: list[str] = []
    if report.control_error:
        lines.append(f"control plane: UNAVAILABLE: {printable(report.control_error)}")
    else:
        lines.append(
            f"control plane: ok ({redact_url(config.control.redis)}, "
            f"{report.control_latency_ms or 0:.1f} ms)"
        )
    active = report.active
    if active is not None:
        # Actor and reason are other people's text: escaped, so they cannot forge lines.
        why = f', "{printable(active.reason)}"' if active.reason else ""
        lines.append(
            f"live: {active.colour} (epoch {active.epoch}, by {printable(active.actor)} "
            f"{ago(active.updated_at, report.at)} ago{why})"
        )
    elif not report.control_error:
        lines.append("live: not set yet (the agent sets blue on first start, or run switch)")
    if report.router_error:
        lines.append(f"router {config.router.kind}: ERROR: {printable(report.router_error)}")
    elif report.router is not None:
        serving = report.router.live.value if report.router.live else "no single colour"
        detail = f" ({printable(report.router.detail)})" if report.router.detail else ""
        lines.append(f"router {config.router.kind}: sends traffic to {serving}{detail}")
    lines += _warnings(config, report)
    traffic = _traffic_line(report)
    if traffic:
        lines.append(traffic)
    for lock in report.locks:
        lines.append(
            f"in progress: {printable(lock.purpose)} ({printable(lock.name)}) "
            f"by {printable(lock.holder)}, "
            f"{ago(lock.since, report.at)} ago"
        )
    lines.append("")
    lines += _host_table(report, wide)
    return "\n".join(lines)


def _host_table(report: StatusReport, wide: bool) -> list[str]:
    """A row per host; a colour of many hosts (a fleet) as one summary line unless ``wide``."""
    active = report.active
    rows: list[list[str]] = []
    fleets: list[str] = []
    for colour in Colour:
        env = report.health.envs[colour]
        mark = "*" if active is not None and active.colour is colour else ""
        if not wide and collapses(env):
            # Tens of hosts: one line per colour (who is down and why); --hosts for rows.
            fleets.append(f"{colour}{mark}  {env.verdict.value}  {summarize(env).line()}")
            continue
        for i, host in enumerate(env.hosts):
            last = host.last
            rows.append(
                [
                    f"{colour}{mark}" if i == 0 else "",
                    env.verdict.value if i == 0 else "",
                    host.host,
                    str(last.status) if last and last.status else "-",
                    f"{last.latency_ms:.1f}ms" if last and last.latency_ms is not None else "-",
                    host.version or "-",
                    (last.error or "") if last else "",
                ]
            )
    lines: list[str] = []
    if rows:
        header = ["ENV", "VERDICT", "HOST", "STATUS", "LATENCY", "VERSION", "ERROR"]
        lines.append(table(rows, header))
    if fleets:
        lines += fleets
        lines.append("(bgconsole status --hosts: a row for every host)")
    return lines


def _traffic_line(report: StatusReport) -> str | None:
    """What the builtin proxy carried since its agent started, per colour."""
    counters = next((a.proxy for a in report.agents if a.leader and a.proxy), None)
    if not counters:
        return None
    parts = []
    for colour in Colour:
        requests = counters.get(f"requests.{colour}", 0)
        errors = counters.get(f"errors.{colour}", 0)
        retries = counters.get(f"retries.{colour}", 0)
        parts.append(f"{colour} {requests} requests, {errors} errors, {retries} retried")
    line = "traffic since the agent started: " + "; ".join(parts)
    line += f"; {counters.get('connections', 0)} connections open"
    if counters.get("upgraded"):
        line += f", {counters['upgraded']} WebSocket/Upgrade tunnels"
    if counters.get("rejected"):
        line += f", {counters['rejected']} refused at the connection cap"
    return line


def _warnings(config: Config, report: StatusReport) -> list[str]:
    """Drift, the failover line, the alarm and the persistence warning."""
    lines = [f"DRIFT: {printable(report.drift)}"] if report.drift else []
    lines.append(_failover_line(config, report))
    if report.mirror:
        mark = "MIRROR BEHIND: " if report.mirror_behind else "mirror: "
        lines.append(mark + printable(report.mirror.removeprefix("mirror: ")))
    if report.failover.alarm:
        lines.append(f"ALARM: {printable(report.failover.alarm)}")
    if report.persistence:
        lines.append(f"warning: {report.persistence}")
    lines += [
        f"notify: {printable(f.describe(report.at))}" for f in report.notify_failures if f.failing
    ]
    return lines


def _failover_line(config: Config, report: StatusReport) -> str:
    """Armed or not, and whether that means anything: who would act, and if not, why."""
    armed = {True: "armed", False: "DISARMED", None: "armed state UNKNOWN"}[report.armed]
    if not config.failover.enabled:
        armed = "disabled in the configuration"
    leaders = [a for a in report.agents if a.leader]
    agent = ""
    if leaders:
        agent = (
            f"; agent {printable(leaders[0].actor)} heartbeat {ago(leaders[0].at, report.at)} ago"
        )
    readiness = report.failover
    if readiness.active:
        return f"failover: ACTIVE ({armed}{agent})"
    return f"failover: NOT ACTIVE: {printable(readiness.why_not or '')} ({armed}{agent})"


async def _run_all(args: argparse.Namespace) -> int:
    """``status --all``: one line per app; exit 1 when any app needs an operator."""
    from console.core.apps import apps_dir, load_apps, summarize_all

    summaries = await summarize_all(load_apps(apps_dir(args.apps)))
    if args.json:
        print_json(
            [
                {
                    "app": s.name,
                    "config": str(s.path),
                    "live": s.live.value if s.live else None,
                    "epoch": s.epoch,
                    "health": s.verdicts,
                    "failover": s.failover,
                    "alarm": s.alarm,
                    "in_progress": list(s.in_progress),
                    "error": s.error,
                }
                for s in summaries
            ]
        )
    else:
        rows = [
            [
                printable(s.name),
                s.live.value if s.live else "-",
                str(s.epoch) if s.epoch is not None else "-",
                s.verdicts.get("blue", "-"),
                s.verdicts.get("green", "-"),
                printable(s.failover or "-"),
                printable("; ".join(s.in_progress) or "-"),
                printable(s.error or s.alarm or ""),
            ]
            for s in summaries
        ]
        headers = ["APP", "LIVE", "EPOCH", "BLUE", "GREEN", "FAILOVER", "IN PROGRESS", "PROBLEM"]
        print(table(rows, headers))
    return EXIT_FAILED if any(s.trouble for s in summaries) else EXIT_OK
