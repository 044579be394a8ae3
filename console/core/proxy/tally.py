"""Repeated errors reported once with a count, never one log line per connection.

A flood (a thousand slow clients, a scanner sending garbage) must not turn into a flood of
log lines: the first error of a kind is reported at once, later ones are counted and
reported together at most once per ``every`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

ErrorReport = Callable[[str, int, str], None]
"""Called with (kind, count since the last report, the latest detail)."""


class ErrorTally:
    __slots__ = ("_counts", "_detail", "_last", "every", "report", "totals")

    def __init__(self, report: ErrorReport | None, every: float = 60.0) -> None:
        self.report = report
        self.every = every
        self._counts: dict[str, int] = {}
        self._detail: dict[str, str] = {}
        self._last: dict[str, float] = {}
        self.totals: dict[str, int] = {}
        """Every error counted since the start, by kind."""

    def note(self, kind: str, detail: str = "") -> None:
        self.totals[kind] = self.totals.get(kind, 0) + 1
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._detail[kind] = detail
        now = time.monotonic()
        last = self._last.get(kind)
        if last is None or now - last >= self.every:
            self.flush(kind, now)

    def flush(self, kind: str | None = None, now: float | None = None) -> None:
        """Report what is counted (of one kind, or all) and start counting again."""
        now = time.monotonic() if now is None else now
        for k in [kind] if kind is not None else list(self._counts):
            count = self._counts.pop(k, 0)
            if count and self.report is not None:
                self.report(k, count, self._detail.get(k, ""))
            self._last[k] = now
