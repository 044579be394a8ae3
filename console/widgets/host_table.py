"""HostTable: one row per host of an environment, updated cell by cell (no flicker)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import DataTable

from console.core.models import HostHealth
from console.core.text import printable

COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("host", "HOST", 12),
    ("status", "STATUS", 9),
    ("latency", "LATENCY", 9),
    ("version", "VERSION", 8),
    ("error", "ERROR", 40),
)
"""(key, label, width) of each column."""


def host_cells(host: HostHealth) -> dict[str, Content]:
    """The cells of one host's row, keyed by column."""
    last = host.last
    if last is None:
        status = Content.styled("waiting", "$text-muted")
    elif host.up:
        status = Content.styled(f"up {last.status or ''}".strip(), "bold $status-ok")
    else:
        label = str(last.status) if last.status else "down"
        status = Content.styled(f"DOWN {label}" if last.status else "DOWN", "bold $status-down")
        if last.ok:
            # Hysteresis still holds it down while probes have started passing again.
            status = Content.styled("rising", "bold $status-degraded")
    latency = "-"
    if last is not None and last.latency_ms is not None:
        latency = f"{last.latency_ms:.1f} ms"
    # Errors and versions come from the hosts' answers: escaped, one line each.
    error = printable(last.error or "") if last is not None else ""
    return {
        "host": Content(printable(host.host)),
        "status": status,
        "latency": Content(latency.rjust(8)),
        "version": Content(printable(host.version or "-")),
        "error": Content.styled(error, "$status-down") if error else Content(""),
    }


class HostTable(DataTable[Content]):
    """The hosts of one colour: row key = host name; only changed cells are rewritten."""

    DEFAULT_CSS = """
    HostTable {
        height: auto;
        max-height: 12;
        background: $surface;
        /* Long errors are cut at the panel edge rather than adding a scrollbar row. */
        overflow-x: hidden;
        scrollbar-size-horizontal: 0;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(
            id=id, classes=classes, cursor_type="none", zebra_stripes=False, show_cursor=False
        )
        self._shown: dict[str, dict[str, Content]] = {}

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def show_hosts(self, hosts: tuple[HostHealth, ...]) -> None:
        """Bring the table up to date with ``hosts`` (rows added, updated or removed)."""
        wanted = {h.host: host_cells(h) for h in hosts}
        for name in [n for n in self._shown if n not in wanted]:
            self.remove_row(name)
            del self._shown[name]
        for name, cells in wanted.items():
            shown = self._shown.get(name)
            if shown is None:
                self.add_row(*(cells[key] for key, _, _ in COLUMNS), key=name)
            else:
                for key, value in cells.items():
                    if shown[key] != value:
                        self.update_cell(name, key, value)
            self._shown[name] = cells
