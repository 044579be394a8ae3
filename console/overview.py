"""The overview of many apps: one row each, refreshed every second; Enter opens one.

``bgconsole --apps DIR`` (or no config but an apps directory) opens it. Enter leaves the
overview with the chosen app's config; the caller runs that app's console, whose Escape
(or q) comes back here. The rows come from :mod:`console.core.apps`, which reads each
app's control plane and leader agent (no probes), so fifty apps refresh within a second.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from console.core.apps import AppEntry, AppSummary, summarize_all
from console.core.text import printable

COLUMNS = ("APP", "LIVE", "EPOCH", "BLUE", "GREEN", "FAILOVER", "IN PROGRESS", "PROBLEM")


class OverviewApp(App[Path | None]):
    """Every app of the apps directory; returns the config path of the one chosen."""

    TITLE = "bgconsole — apps"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("q", "quit_overview", "Quit"),
    ]
    DEFAULT_CSS = """
    #summary { height: 1; padding: 0 1; }
    DataTable { height: 1fr; }
    """

    def __init__(self, entries: list[AppEntry], refresh_every: float = 1.0) -> None:
        super().__init__()
        self.entries = entries
        self.refresh_every = refresh_every
        self.summaries: list[AppSummary] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary")
        table: DataTable[str | Text] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        for entry in self.entries:
            table.add_row(*self._cells(AppSummary(entry.name, entry.path)), key=str(entry.path))
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.poll()

    @work(exclusive=True, group="overview", exit_on_error=False)
    async def poll(self) -> None:
        """Summaries of every app, every ``refresh_every`` seconds, until the app ends."""
        while True:
            self.summaries = await summarize_all(self.entries)
            self._show(self.summaries)
            await asyncio.sleep(self.refresh_every)

    def _show(self, summaries: list[AppSummary]) -> None:
        table = self.query_one(DataTable)
        with self.batch_update():
            for summary in summaries:
                key = str(summary.path)
                for column, cell in zip(table.columns, self._cells(summary), strict=True):
                    table.update_cell(key, column, cell, update_width=True)
        trouble = sum(s.trouble for s in summaries)
        text = f"{len(summaries)} apps"
        text += f" · {trouble} need attention" if trouble else " · all quiet"
        self.query_one("#summary", Static).update(Text(text, style="bold red" if trouble else ""))

    @staticmethod
    def _cells(summary: AppSummary) -> list[str | Text]:
        problem = summary.error or summary.alarm or ""
        live = summary.live.value.upper() if summary.live else "-"
        return [
            printable(summary.name),
            Text(live, style=f"bold {summary.live.value}" if summary.live else ""),
            str(summary.epoch) if summary.epoch is not None else "-",
            summary.verdicts.get("blue", "-"),
            summary.verdicts.get("green", "-"),
            # The short form: the reason up to its hint ("disarmed", "no agent leads").
            printable(summary.failover.split(" (")[0] or "-"),
            printable("; ".join(summary.in_progress) or "-"),
            Text(printable(problem), style="bold red" if problem else ""),
        ]

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.exit(Path(str(event.row_key.value)))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            self.exit(Path(str(key.value)))

    def action_quit_overview(self) -> None:
        self.exit(None)
