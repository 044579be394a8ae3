"""MigrationProgress: one line and progress bar per migrated item (table or key pattern)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Label, ProgressBar

from console.core.migrate.plan import Progress
from console.core.text import printable


class ItemProgress(Horizontal):
    """The latest phase of one item: ``apply  3/10 rows  host:db table`` and its bar."""

    DEFAULT_CSS = """
    ItemProgress { height: 1; }
    ItemProgress ProgressBar { width: 40; }
    ItemProgress Label { width: 1fr; padding-left: 2; }
    """

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        """The latest report for this item."""

    def compose(self) -> ComposeResult:
        yield ProgressBar(show_eta=False)
        yield Label()

    def on_mount(self) -> None:
        self.show(self.progress)

    def show(self, progress: Progress) -> None:
        """Draw ``progress`` (a new phase restarts the bar with its own total)."""
        self.progress = progress
        # An unknown total (0) draws an indeterminate bar rather than a full one.
        total = progress.total or None
        self.query_one(ProgressBar).update(total=total, progress=progress.done)
        # Table names come from the hosts' databases: escaped.
        text = f"{progress.phase:<8} {progress.amount():>16}  {printable(progress.item)}"
        self.query_one(Label).update(Content(text))  # Content: item names are not markup


class MigrationProgress(VerticalScroll):
    """Progress of a running migration, one row per item in the order they first report."""

    DEFAULT_CSS = """
    MigrationProgress { height: auto; max-height: 12; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: dict[str, ItemProgress] = {}

    def report(self, progress: Progress) -> None:
        """Show one progress report (the runner's ``on_progress`` callback)."""
        row = self._rows.get(progress.item)
        if row is None:
            row = self._rows[progress.item] = ItemProgress(progress)
            self.mount(row)
        elif row.is_mounted:
            row.show(progress)
        else:
            row.progress = progress  # drawn when it mounts

    def clear(self) -> None:
        """Forget every row (before running again)."""
        self._rows.clear()
        self.remove_children()

    @property
    def items(self) -> list[Progress]:
        """The latest report of every item, in display order."""
        return [row.progress for row in self._rows.values()]
