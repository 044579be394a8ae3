"""StatusDetailScreen: everything the dashboard header and host rows cut short, in full."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from console.core.models import Colour
from console.core.status import StatusReport
from console.core.text import printable
from console.widgets.formatting import ago, clock
from console.widgets.host_table import latency_text, version_detail


def status_detail(report: StatusReport | None) -> Content:
    """The whole status as text, nothing cut.

    Live colour and why, control plane, router, agents, failover readiness, locks, and
    every host's last probes with their versions and errors.
    """
    if report is None:
        return Content("No status yet: the first round of probes has not finished.")
    out: list[Content] = []
    for title, section in (
        ("Live colour", _live),
        ("Control plane", _control),
        ("Router", _router),
        ("Agents and failover", _agents),
        ("In progress (locks)", _locks),
        ("Data mirror", _mirror),
    ):
        lines = section(report)
        if lines:
            out += [Content.styled(title, "bold $primary"), *lines, Content("")]
    for colour in Colour:
        env = report.health.envs.get(colour)
        out.append(
            Content.styled(
                f"{colour.value.upper()}: {env.verdict.value if env else 'not probed'}",
                "bold $primary",
            )
        )
        out += _hosts(report, colour)
        out.append(Content(""))
    return Content("\n").join(out)


def _live(report: StatusReport) -> list[Content]:
    active = report.active
    if active is None:
        return [Content("intended: unknown (control plane unreadable or not set)")]
    reason = f'"{printable(active.reason)}"' if active.reason else "-"
    return [
        Content(
            f"intended: {active.colour.value.upper()}, epoch {active.epoch}, by "
            f"{printable(active.actor)} {ago(active.updated_at, report.at)} ago ({active.kind})"
        ),
        Content(f"reason:   {reason}"),
    ]


def _control(report: StatusReport) -> list[Content]:
    if report.control_error:
        lines = [
            Content.assemble(
                ("UNAVAILABLE: ", "bold $status-down"), printable(report.control_error)
            )
        ]
    else:
        lines = [
            Content.assemble(
                ("ok", "bold $status-ok"), f", {report.control_latency_ms or 0:.1f} ms"
            )
        ]
    if report.persistence:
        lines.append(
            Content.assemble(("warning: ", "bold $warning"), printable(report.persistence))
        )
    return lines


def _router(report: StatusReport) -> list[Content]:
    lines: list[Content] = []
    if report.router_error:
        lines.append(
            Content.assemble(("ERROR: ", "bold $status-down"), printable(report.router_error))
        )
    if report.router is not None:
        live = report.router.live
        where = live.value.upper() if live else "no single colour"
        lines.append(Content(f"{report.router.kind}: sends traffic to {where}"))
        if report.router.detail:
            lines.append(Content(printable(report.router.detail)))
    if report.drift:
        lines.append(Content.assemble(("DRIFT: ", "bold $warning"), printable(report.drift)))
    return lines


def _agents(report: StatusReport) -> list[Content]:
    lines: list[Content] = []
    for agent in report.agents:
        role = "leader" if agent.leader else "stand-by agent"
        lines.append(
            Content(
                f"{printable(agent.actor)} ({role}, pid {agent.pid}): heartbeat "
                f"{ago(agent.at, report.at)} ago, serves {printable(agent.serving)}, "
                f"{'armed' if agent.armed else 'disarmed'}"
            )
        )
    if not report.agents:
        why = "control plane unreadable" if report.control_error else "no agent heartbeat"
        lines.append(Content.styled(why, "bold $status-down"))
    readiness = report.failover
    if readiness.alarm:
        lines.append(
            Content.assemble(
                ("ALARM:", "bold reverse $status-down"), " ", printable(readiness.alarm)
            )
        )
    if readiness.active:
        lines.append(Content.styled("failover active", "bold $status-ok"))
    else:
        why_not = printable(readiness.why_not or "?")
        lines.append(Content.assemble(("failover NOT active: ", "bold $warning"), why_not))
    return lines


def _mirror(report: StatusReport) -> list[Content]:
    if not report.mirror:
        return []
    style = "bold $warning" if report.mirror_behind else ""
    return [Content.styled(printable(report.mirror), style)]


def _locks(report: StatusReport) -> list[Content]:
    return [
        Content(
            f"{printable(lock.name)}: {printable(lock.purpose)} by {printable(lock.holder)}, "
            f"{ago(lock.since, report.at)}"
        )
        for lock in report.locks
    ]


def _hosts(report: StatusReport, colour: Colour, probes: int = 5) -> list[Content]:
    env = report.health.envs.get(colour)
    lines: list[Content] = []
    for host in env.hosts if env else ():
        state = "up" if host.up else "DOWN"
        lines.append(
            Content.assemble(
                (printable(host.host), "bold"),
                f"  {state}  {printable(host.url)}  version {version_detail(host, report.at)}",
            )
        )
        for probe in list(host.history)[-probes:][::-1]:
            result = f"HTTP {probe.status}" if probe.status else "no answer"
            lines.append(
                Content(
                    f"    {clock(probe.at)}  {'ok  ' if probe.ok else 'FAIL'}  {result:<10} "
                    f"{latency_text(probe):>8}  {printable(probe.version or '-')}  "
                    f"{printable(probe.error or '')}"
                )
            )
    return lines


def colour_detail(report: StatusReport | None, colour: Colour) -> Content:
    """One colour drilled into: each host's state, version with its age, last 20 probes."""
    if report is None:
        return Content("No status yet: the first round of probes has not finished.")
    env = report.health.envs.get(colour)
    title = f"{colour.value.upper()}: {env.verdict.value if env else 'not probed'}"
    live = report.active is not None and report.active.colour is colour
    role = "live (serving traffic)" if live else "stand-by"
    return Content("\n").join(
        [
            Content.assemble((title, "bold $primary"), f"  {role}"),
            *_hosts(report, colour, probes=20),
            Content(""),
            Content.styled("l: this colour's logs · Escape: back", "$text-muted"),
        ]
    )


class StatusDetailScreen(ModalScreen[None]):
    """The full status (or one colour's), scrollable; Escape, i or q closes."""

    DEFAULT_CSS = """
    StatusDetailScreen { align: center middle; }
    StatusDetailScreen > VerticalScroll {
        width: 100%; max-width: 120; height: 100%; max-height: 40;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,i,q", "close", "Close"),
        Binding("l", "logs", "Logs"),
    ]

    def __init__(
        self,
        report: StatusReport | None,
        colour: Colour | None = None,
        *,
        open_logs: Callable[[Colour | None], object] | None = None,
    ) -> None:
        """Args:
        report: the status shown.
        colour: drill into this colour only (its hosts' probe history).
        open_logs: opens the logs of a colour (None: both); key l.
        """
        super().__init__()
        self.report = report
        self.colour = colour
        self.open_logs = open_logs

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            if self.colour is None:
                scroll.border_title = "status in full (Escape closes)"
                yield Static(status_detail(self.report), id="status-detail")
            else:
                scroll.border_title = f"{self.colour.value} hosts (Escape closes)"
                yield Static(colour_detail(self.report, self.colour), id="status-detail")

    def action_logs(self) -> None:
        """Follow this colour's logs (both colours' from the full status)."""
        self.dismiss(None)
        if self.open_logs is not None:
            self.open_logs(self.colour)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        """Back to where it was opened."""
        self.dismiss(None)
