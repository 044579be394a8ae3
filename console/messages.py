"""Messages that cross screens (per-widget messages are nested in their widget)."""

from __future__ import annotations

from textual.message import Message


class OperationFinished(Message):
    """A long operation run from a pushed screen (a deploy) ended; the dashboard logs it."""

    def __init__(self, kind: str, ok: bool, summary: str) -> None:
        super().__init__()
        self.kind = kind
        """deploy, switch, ..."""
        self.ok = ok
        self.summary = summary
