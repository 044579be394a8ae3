"""StatusHeader: the dashboard's top lines: live colour, control plane, agent, router."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from console import __version__
from console.core.models import Colour
from console.core.status import StatusReport
from console.core.text import printable
from console.widgets.formatting import ago, colour_name

Part = str | Content | tuple[str, str]
COMPACT_BELOW = 110
"""Terminal widths below which the header uses its short forms."""


def live_line(
    app_name: str,
    report: StatusReport | None,
    last_live: tuple[Colour, float] | None = None,
) -> Content:
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
        serving = report.router.live if report.router is not None else None
        if serving is not None:
            # What the router really does is the truth users see; say where it comes from.
            parts.append(colour_name(serving))
            why = "control plane unreadable" if report.control_error else "not set yet"
            parts.append((f" (per the router; {why})", "bold $status-degraded"))
        elif report.control_error and last_live is not None:
            # Fail static: the agent keeps routing to the colour it last knew.
            colour, seen = last_live
            parts.append(colour_name(colour))
            parts.append(
                (
                    f"? (last seen {ago(seen, report.at)} ago; control plane unreadable)",
                    "bold $status-degraded",
                )
            )
        else:
            unknown = (
                "unknown (control plane unreadable)" if report.control_error else "not set yet"
            )
            parts.append((unknown, "bold $status-degraded"))
        return Content.assemble(*parts, *_lock_parts(report))
    parts += [
        ("LIVE ", "bold"),
        colour_name(active.colour),
        (f"  epoch {active.epoch}", "bold"),
        (f" · by {printable(active.actor)} {ago(active.updated_at, report.at)} ago", "$text-muted"),
    ]
    # Deploys in progress before the reason: the reason is what the ellipsis may cut.
    parts += _lock_parts(report)
    if active.reason:
        # Someone else's text: escaped, so it cannot add a line or drive the terminal.
        parts.append((f' · "{printable(active.reason)}"', "italic $text-muted"))
    return Content.assemble(*parts)


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


def plane_line(
    report: StatusReport | None,
    failover_enabled: bool,
    router_kind: str,
    *,
    compact: bool = False,
) -> Content:
    """``control plane ok 0.4 ms │ router builtin → BLUE │ agent … ♥ 0.8s ago  failover active``.

    The parts of fixed length come first and the ones that can run long (an error, the
    alarm's reason) last, so cutting the line at the terminal's edge with an ellipsis
    never hides the router's state. ``compact`` (narrow terminals) drops the agent's name
    and the router kind.
    """
    if report is None:
        return Content("")
    sep = (" │ ", "$text-muted")
    parts: list[Part] = [("cp " if compact else "control plane ", "$text-muted")]
    if report.control_error:
        # The CLI's word for it: the console and `bgconsole status` must agree.
        parts.append(("UNAVAILABLE", "bold reverse $status-down"))
    else:
        parts.append(("ok", "bold $status-ok"))
        if not compact:
            parts.append((f" {report.control_latency_ms or 0:.1f} ms", "$text-muted"))
    parts.append(sep)
    parts.append(("router " if compact else f"router {router_kind} ", "$text-muted"))
    if report.router_error:
        parts.append(("ERROR", "bold $status-down"))
    elif report.router is not None:
        parts.append(("→ ", "$text-muted"))
        live = report.router.live
        parts.append(colour_name(live) if live else ("no single colour", "bold $warning"))
        if report.router.kind == "multi":
            # Several routers ([[router]]): each one's state, so a lagging one is named.
            style = "$text-muted" if live else "$warning"
            parts.append((f" ({printable(report.router.detail)})", style))
    else:
        parts.append(("unknown", "bold $status-degraded"))
    if report.drift:
        parts.append(sep)
        parts.append(("DRIFT", "bold reverse $warning"))
    parts.append(sep)
    parts += _agent_parts(report, failover_enabled, compact=compact)
    if report.mirror:
        # A data mirror between the colours: behind means a flip now leaves rows behind.
        parts.append(sep)
        if report.mirror_behind:
            parts.append(("MIRROR BEHIND", "bold $warning"))
        else:
            parts.append(("mirror ok", "$text-muted"))
    if report.control_error:
        # The error text starts with "control plane ...", which this line already says.
        detail = printable(report.control_error.removeprefix("control plane "))
        parts.append(sep)
        parts.append((detail, "$status-down"))
    if report.router_error:
        parts.append(sep)
        parts.append((f"router: {printable(report.router_error)}", "$status-down"))
    return Content.assemble(*parts)


def _agent_parts(
    report: StatusReport, failover_enabled: bool, *, compact: bool = False
) -> list[Part]:
    if report.control_error:
        # Heartbeats live in the control plane: unreadable is not "no agent".
        return [
            ("agent ? ", "$text-muted"),
            ("failover ", "$text-muted"),
            ("unknown", "bold $status-degraded"),
        ]
    leaders = [a for a in report.agents if a.leader]
    parts: list[Part] = []
    if leaders:
        agent = leaders[0]
        name = "" if compact else f"{printable(agent.actor)} "
        parts.append((f"agent {name}♥ {ago(agent.at, report.at)} ago", "$text-muted"))
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
    last_live: tuple[Colour, float] | None = None
    """The live colour last read and when (shown while the control plane is unreadable)."""

    def __init__(self, app_name: str, failover_enabled: bool, router_kind: str) -> None:
        super().__init__()
        self.app_name = app_name
        self.failover_enabled = failover_enabled
        self.router_kind = router_kind

    def render(self) -> Content:
        # One line each, cut with an ellipsis: a long reason must never wrap and push the
        # control-plane/router line out of the header (i shows everything in full).
        width = self.size.width or 200
        compact = width < COMPACT_BELOW
        lines = [
            live_line(self.app_name, self.report, self.last_live),
            plane_line(self.report, self.failover_enabled, self.router_kind, compact=compact),
        ]
        return Content("\n").join(line.truncate(width, ellipsis=True) for line in lines)
