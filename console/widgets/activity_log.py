"""ActivityLog: the dashboard's time-stamped lines; the newest always in view."""

from __future__ import annotations

from textual import events
from textual.widgets import Log


class ActivityLog(Log):
    """A ``Log`` that keeps its newest line in view after a resize, too.

    ``Log`` scrolls to the end when a line is written, not when the terminal changes
    size: after a resize the pane showed older lines and the newest fell below. Nobody
    scrolls this one (it takes no focus), so it always sits on its end.
    """

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self.scroll_end, animate=False, immediate=True)
