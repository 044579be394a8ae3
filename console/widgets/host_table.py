"""HostTable: one row per host of an environment, laid out to fit the panel's width."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from console.core.fleet import FleetSummary, name_list
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
SHORT_TERMINAL = 32
"""Terminals less tall than this (80x24) get fewer host rows in a collapsed fleet."""
FLEET_ROWS = (3, 8)
"""Host rows of a collapsed fleet (the problem hosts first): short terminal, others."""


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


def fleet_order(hosts: tuple[HostHealth, ...]) -> list[HostHealth]:
    """The problem hosts first (down, rising, not yet probed), then the rest; each part in
    config order."""
    return [h for h in hosts if not h.up] + [h for h in hosts if h.up]


def fleet_lines(summary: FleetSummary, width: int) -> list[Content]:
    """``20 hosts: 18 up, 2 DOWN (g-07, g-12) · version 1.1.0``, fitted to ``width``.

    Too wide, the down hosts' names go first (their rows come next, problem hosts first),
    then the versions move to a line of their own: a mixed fleet (a rollout half done)
    is never hidden behind an ellipsis.
    """
    counts: list[str | tuple[str, str]] = [
        f"{summary.total} hosts: ",
        (f"{summary.up} up", "bold $status-ok" if summary.up else "$text-muted"),
    ]
    names: list[str | tuple[str, str]] = []
    if summary.down:
        counts += [", ", (f"{len(summary.down)} DOWN", "bold $status-down")]
        names.append(f" ({name_list([printable(host) for host, _ in summary.down], 4)})")
    versions: list[str | tuple[str, str]] = []
    if len(summary.versions) == 1:
        versions.append(f"version {printable(summary.versions[0][0])}")
    elif summary.versions:
        mix = ", ".join(f"{printable(v)} ({n})" for v, n in summary.versions[:3])
        more = f", {len(summary.versions) - 3} more" if len(summary.versions) > 3 else ""
        versions.append((f"versions {mix}{more}", "bold $status-degraded"))
    dot: list[str | tuple[str, str]] = [" · "] if versions else []
    for parts in ([*counts, *names, *dot, *versions], [*counts, *dot, *versions]):
        line = Content.assemble(*parts)
        if line.cell_length <= width:
            return [line]
    head = Content.assemble(*counts, *names)
    if head.cell_length > width:
        head = Content.assemble(*counts)
    lines = [head.truncate(width, ellipsis=True)]
    if versions:
        lines.append(Content.assemble(*versions).truncate(width, ellipsis=True))
    return lines


def hidden_line(hidden: list[HostHealth]) -> Content:
    """``… 14 more: all up`` / ``… 4 more: 3 up, 1 down`` for rows the table leaves out."""
    down = sum(not h.up for h in hidden)
    what = "all up" if not down else f"{len(hidden) - down} up, {down} down"
    return Content.styled(f"… {len(hidden)} more: {what} (Enter: every host)", "$text-muted")


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
    ERROR always stay. A fleet (``show_hosts`` with a summary) is collapsed: one line
    counting up/down hosts and versions, then the problem hosts first, as many rows as the
    terminal leaves room for, and a line saying how many more there are.
    """

    DEFAULT_CSS = """
    HostTable {
        height: auto;
        max-height: 12;
        text-wrap: nowrap;
        background: $surface;
    }
    """

    hosts: reactive[tuple[HostHealth, ...]] = reactive((), layout=True)
    """The hosts shown, in config order."""
    summary: reactive[FleetSummary | None] = reactive(None, layout=True)
    """Set for a fleet too big for a row each: a summary line, the problem hosts first,
    as many rows as fit, and a line counting the rest."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._rows_fit = FLEET_ROWS[1]
        self._width = 80

    def show_hosts(
        self, hosts: tuple[HostHealth, ...], summary: FleetSummary | None = None
    ) -> None:
        """Bring the table up to date with ``hosts`` (collapsed with a ``summary``)."""
        self.hosts = hosts
        self.summary = summary

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if self.summary is None:
            return 1 + len(self.hosts)
        self._rows_fit = FLEET_ROWS[0] if viewport.height < SHORT_TERMINAL else FLEET_ROWS[1]
        self._width = width
        return len(self._collapsed_lines())

    def _collapsed_lines(self) -> list[HostHealth | str]:
        """The lines of a collapsed fleet: "summary", "header", hosts, then "hidden"."""
        order = fleet_order(self.hosts)
        if len(order) > self._rows_fit:
            shown = order[: self._rows_fit - 1]
            return [*self._summary_lines(), "header", *shown, "hidden"]
        return [*self._summary_lines(), "header", *order]

    def _summary_lines(self) -> list[str]:
        if self.summary is None:
            return []
        return ["summary"] * len(fleet_lines(self.summary, self._width))

    def render(self) -> Content:
        width = max(self.size.width, 20)
        wide_version = width >= 56
        self._width = width
        summary_lines = fleet_lines(self.summary, width) if self.summary is not None else []
        if self.summary is None:
            hosts = list(self.hosts)
            plan: list[HostHealth | str] = ["header", *hosts]
        else:
            plan = self._collapsed_lines()
            hosts = [h for h in plan if isinstance(h, HostHealth)]
        rows = {h.host: host_cells(h, wide_version=wide_version) for h in hosts}
        columns = layout(width, list(rows.values()))
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

        lines: list[Content] = []
        for item in plan:
            if isinstance(item, HostHealth):
                lines.append(line(rows[item.host]))
            elif item == "header":
                header = line({key: Content(labels[key]) for key, _ in COLUMNS})
                lines.append(header.truncate(width, pad=True).stylize("bold $foreground on $panel"))
            elif item == "summary" and summary_lines:
                lines.append(summary_lines.pop(0))
            elif item == "hidden":
                shown = {h.host for h in hosts}
                rest = [h for h in self.hosts if h.host not in shown]
                lines.append(hidden_line(rest).truncate(width, ellipsis=True))
        return Content("\n").join(lines)
