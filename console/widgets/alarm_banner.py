"""AlarmBanner: one line across the dashboard when something needs a human now."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from console.core.status import StatusReport
from console.core.text import printable


def alarm_text(report: StatusReport | None) -> str | None:
    """The most urgent thing wrong, in one sentence with what to do; None when all is well.

    In order: the live colour down with nothing to fail over, the control plane
    unreachable, the router disagreeing with the control plane.
    """
    if report is None:
        return None
    if report.failover.alarm:
        return f"ALARM: {printable(report.failover.alarm)} (i: evidence, l: logs, s: switch)"
    if report.control_error:
        serving = report.router.live if report.router is not None else None
        where = (
            f"the router keeps sending traffic to {serving}"
            if serving
            else "the agent keeps routing to its last colour"
        )
        # What to do first; the error itself last (i shows it whole).
        error = printable(report.control_error.removeprefix("control plane "))
        return (
            f"Control plane UNAVAILABLE: {where} (fail static); no failover or switch until "
            f"its Redis is back. i: details. ({error})"
        )
    if report.drift:
        return (
            f"DRIFT: {printable(report.drift)}. The agent repairs it; s to the live colour "
            "re-applies now; i for details."
        )
    return None


class AlarmBanner(Widget):
    """Hidden while nothing is wrong; the screen sets ``report``."""

    DEFAULT_CSS = """
    AlarmBanner {
        height: 1;
        padding: 0 1;
        background: $error;
        color: $text;
        text-style: bold;
        display: none;
    }
    AlarmBanner.-shown { display: block; }
    """

    report: reactive[StatusReport | None] = reactive(None)
    """The latest status."""

    def watch_report(self, report: StatusReport | None) -> None:
        self.set_class(alarm_text(report) is not None, "-shown")

    def render(self) -> Content:
        text = alarm_text(self.report) or ""
        return Content(text).truncate(max(self.size.width, 1), ellipsis=True)
