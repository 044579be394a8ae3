"""HostTable: one row per host of an environment, laid out to fit the panel's width."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from console.core.models import HostHealth, Probe
from console.core.text import printable
from console.widgets.formatting import ago

COLUMNS: tuple[tuple[str, str], ...] = (
    ("host", "HOST"),
    ("status", "STATUS"),
    ("latency", "LATENCY"),
    ("version", "VERSION"),
    ("error", "ERROR"),
)
"""(key, label) of each column, left to right."""
DROP_ORDER: tuple[str, ...] = ("latency",)
"""Columns given up first when the panel is narrow (the sparkline label has the latency)."""
GAP = 2
MIN_ERROR = 10
"""The ERROR column's narrowest useful width; below it, columns in DROP_ORDER go."""


@dataclass(frozen=True, slots=True)
class VersionSeen:
    """What a host's version is known to be, and whether it is still current."""

    version: str | None
    at: float | None
    current: bool
    """True when no failed probe came after the one that reported ``version``."""


def version_seen(host: HostHealth) -> VersionSeen:
    """The host's version from its probes, newest first; stale once a probe failed since.

    A host that answered 1.0.0, then broke, is not "on 1.0.0" any more: whatever it runs
    now did not say. Probes of a ``path:`` version source ask only now and then, so a
    healthy host whose newest probe carries no version keeps the one seen before.
    """
    failed_since = False
    for probe in reversed(host.history or ((host.last,) if host.last else ())):
        if probe.version is not None:
            return VersionSeen(probe.version, probe.at, not failed_since)
        if not probe.ok:
            failed_since = True
    return VersionSeen(None, None, False)


def latency_text(probe: Probe | None) -> str:
    """``5.4ms`` (never split from its unit), ``1234ms``, or ``-``."""
    if probe is None or probe.latency_ms is None:
        return "-"
    ms = probe.latency_ms
    return f"{ms:.1f}ms" if ms < 1000 else f"{ms:.0f}ms"


def host_cells(host: HostHealth, *, wide_version: bool = True) -> dict[str, Content]:
    """The cells of one host's row, keyed by column.

    Args:
        host: the host's health.
        wide_version: room for ``last seen 1.0.0`` when the version is stale (else ``-``).
    """
    last = host.last
    if last is None:
        status = Content.styled("waiting", "$text-muted")
    elif host.up:
        status = Content.styled(f"up {last.status or ''}".strip(), "bold $status-ok")
    else:
        status = Content.styled(
            f"DOWN {last.status}" if last.status else "DOWN", "bold $status-down"
        )
        if last.ok:
            # Hysteresis still holds it down while probes have started passing again.
            status = Content.styled("rising", "bold $status-degraded")
    # Errors and versions come from the hosts' answers: escaped, one line each.
    error = printable(last.error or "") if last is not None else ""
    seen = version_seen(host)
    if seen.version is None:
        version = Content.styled("-", "$text-muted")
    elif seen.current:
        version = Content(printable(seen.version))
    elif wide_version:
        version = Content.styled(f"last seen {printable(seen.version)}", "dim italic")
    else:
        version = Content.styled("-", "$text-muted")
    return {
        "host": Content(printable(host.host)),
        "status": status,
        "latency": Content(latency_text(last)),
        "version": version,
        "error": Content.styled(error, "$status-down") if error else Content(""),
    }


def version_detail(host: HostHealth, now: float) -> str:
    """``1.0.0 (3.2s ago)`` / ``last seen 1.0.0, 2m ago (probes failed since)`` / ``unknown``."""
    seen = version_seen(host)
    if seen.version is None:
        return "unknown (no probe reported one)"
    age = f"{ago(seen.at, now)} ago" if seen.at is not None else "age unknown"
    if seen.current:
        return f"{printable(seen.version)} (reported {age})"
    return f"unknown now; last seen {printable(seen.version)}, {age} (probes failed since)"


def layout(width: int, cells: list[dict[str, Content]]) -> list[tuple[str, int]]:
    """The columns shown in ``width`` cells and their widths (ERROR takes the rest)."""
    shown = [key for key, _ in COLUMNS]
    labels = dict(COLUMNS)

    def natural(key: str) -> int:
        return max([len(labels[key])] + [row[key].cell_length for row in cells])

    widths = {key: natural(key) for key in shown if key != "error"}
    widths["host"] = min(widths["host"], 16)
    widths["version"] = min(widths["version"], 18)

    def rest() -> int:
        fixed = sum(widths[k] for k in shown if k != "error")
        return width - fixed - GAP * (len(shown) - 1)

    for key in DROP_ORDER:
        if rest() >= MIN_ERROR:
            break
        shown.remove(key)
    if rest() < MIN_ERROR:
        # Still narrow: squeeze the host names and versions (cut with an ellipsis).
        widths["host"] = min(widths["host"], 8)
        widths["version"] = min(widths["version"], 8)
    return [(key, widths[key] if key != "error" else max(rest(), 5)) for key in shown]


class HostTable(Widget):
    """The hosts of one colour, a header and a row each; columns fit the width.

    At panel widths where every column does not fit, LATENCY goes first (the sparkline
    label says it), then host names and versions are cut with an ellipsis: VERSION and
    ERROR always stay.
    """

    DEFAULT_CSS = """
    HostTable {
        height: auto;
        max-height: 12;
        background: $surface;
    }
    """

    hosts: reactive[tuple[HostHealth, ...]] = reactive((), layout=True)
    """The hosts shown, in config order."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)

    def show_hosts(self, hosts: tuple[HostHealth, ...]) -> None:
        """Bring the table up to date with ``hosts``."""
        self.hosts = hosts

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 1 + len(self.hosts)

    def render(self) -> Content:
        width = max(self.size.width, 20)
        wide_version = width >= 56
        rows = [host_cells(h, wide_version=wide_version) for h in self.hosts]
        columns = layout(width, rows)
        labels = dict(COLUMNS)

        def line(cells: dict[str, Content]) -> Content:
            parts: list[Content] = []
            for i, (key, w) in enumerate(columns):
                cell = cells[key]
                last = i == len(columns) - 1
                if key == "latency":
                    cell = cell.right(w, ellipsis=True)
                else:
                    cell = cell.truncate(w, ellipsis=True, pad=not last)
                parts.append(cell)
            return Content(" " * GAP).join(parts)

        header = line({key: Content(labels[key]) for key, _ in COLUMNS})
        header = header.truncate(width, pad=True).stylize("bold $foreground on $panel")
        return Content("\n").join([header, *(line(r) for r in rows)])
