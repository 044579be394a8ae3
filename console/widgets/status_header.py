"""StatusHeader: the dashboard's top lines: live colour, control plane, agent, router."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from console import __version__
from console.core.status import StatusReport
from console.core.text import printable
from console.widgets.formatting import ago, colour_name

Part = str | Content | tuple[str, str]


def live_line(app_name: str, report: StatusReport | None) -> Content:
    """``bgconsole 0.1.0 · shop   LIVE BLUE  epoch 7 · by alice@jump 3m ago · "reason"``."""
    parts: list[Part] = [
        ("bgconsole", "bold $primary"),
        (f" {__version__}", "$text-muted"),
        (f" · {app_name}   ", "bold"),
    ]
    if report is None:
        parts.append(("connecting…", "$text-muted"))
        return Content.assemble(*parts)
    active = report.active
    if active is None:
        parts.append(("LIVE ", "bold"))
        unknown = "unknown (control plane unreadable)" if report.control_error else "not set yet"
        parts.append((unknown, "bold $status-degraded"))
        return Content.assemble(*parts, *_lock_parts(report))
    parts += [
        ("LIVE ", "bold"),
        colour_name(active.colour),
        (f"  epoch {active.epoch}", "bold"),
        (f" · by {printable(active.actor)} {ago(active.updated_at, report.at)} ago", "$text-muted"),
    ]
    if active.reason:
        # Someone else's text: escaped, so it cannot add a line or drive the terminal.
        parts.append((f' · "{printable(active.reason)}"', "italic $text-muted"))
    return Content.assemble(*parts, *_lock_parts(report))


def _lock_parts(report: StatusReport) -> list[Part]:
    """Deploys and migrations in progress (control-plane locks), with who holds them.

    Whoever looks at the dashboard must see that someone else is changing things now.
    """
    parts: list[Part] = []
    for lock in report.locks:
        parts.append(("   IN PROGRESS ", "bold $warning"))
        who = f"{printable(lock.purpose)} by {printable(lock.holder)}"
        parts.append((f"{who} {ago(lock.since, report.at)}", "$warning"))
    return parts


def plane_line(report: StatusReport | None, failover_enabled: bool, router_kind: str) -> Content:
    """``control plane ok 0.4 ms │ agent …, heartbeat 0.8s ago │ failover armed │ router …``."""
    if report is None:
        return Content("")
    sep = (" │ ", "$text-muted")
    parts: list[Part] = [("control plane ", "$text-muted")]
    if report.control_error:
        parts.append(("DEGRADED", "bold reverse $status-down"))
        # The error text starts with "control plane ...", which this line already says.
        detail = printable(report.control_error.removeprefix("control plane "))
        parts.append((f" {detail}", "$status-down"))
    else:
        parts.append(("ok", "bold $status-ok"))
        parts.append((f" {report.control_latency_ms or 0:.1f} ms", "$text-muted"))
    parts.append(sep)
    parts += _agent_parts(report, failover_enabled)
    parts.append(sep)
    parts.append((f"router {router_kind} ", "$text-muted"))
    if report.router_error:
        parts.append(("ERROR", "bold $status-down"))
        parts.append((f" {printable(report.router_error)}", "$status-down"))
    elif report.router is not None:
        parts.append(("→ ", "$text-muted"))
        live = report.router.live
        parts.append(colour_name(live) if live else ("no single colour", "bold $warning"))
    if report.drift:
        parts.append(sep)
        parts.append((f"DRIFT: {printable(report.drift)}", "bold $warning"))
    return Content.assemble(*parts)


def _agent_parts(report: StatusReport, failover_enabled: bool) -> list[Part]:
    if report.control_error:
        return [("failover ", "$text-muted"), ("unknown", "bold $status-degraded")]
    leaders = [a for a in report.agents if a.leader]
    parts: list[Part] = []
    if leaders:
        agent = leaders[0]
        parts.append(
            (f"agent {printable(agent.actor)} ♥ {ago(agent.at, report.at)} ago", "$text-muted")
        )
    elif report.agents:
        parts.append(("agents: none leads yet", "bold $warning"))
    else:
        parts.append(("NO AGENT", "bold reverse $status-down"))
    parts.append(("  failover ", "$text-muted"))
    readiness = report.failover
    if readiness.alarm:
        # Live is down and nothing will fail over: the one thing the operator must see.
        parts.append((f"ALARM {readiness.alarm}", "bold reverse $status-down"))
    elif readiness.active:
        parts.append(("active", "bold $status-ok"))
    elif not failover_enabled:
        parts.append(("disabled in config", "bold $warning"))
    elif report.armed is False:
        parts.append(("DISARMED", "bold $warning"))
    else:
        parts.append((f"NOT ACTIVE: {readiness.why_not}", "bold $warning"))
    return parts


class StatusHeader(Widget):
    """Two lines at the top of the dashboard; the screen sets ``report``."""

    DEFAULT_CSS = """
    StatusHeader {
        height: 2;
        padding: 0 1;
        background: $panel;
        /* One line each: a long reason (an agent's failover evidence) or a narrow
           terminal wrapped the first line and pushed the second (control plane, agent,
           router) out of the widget. Cut the end instead. */
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    report: reactive[StatusReport | None] = reactive(None)
    """The latest status, None before the first one arrives."""

    def __init__(self, app_name: str, failover_enabled: bool, router_kind: str) -> None:
        super().__init__()
        self.app_name = app_name
        self.failover_enabled = failover_enabled
        self.router_kind = router_kind

    def render(self) -> Content:
        return Content("\n").join(
            [
                live_line(self.app_name, self.report),
                plane_line(self.report, self.failover_enabled, self.router_kind),
            ]
        )
