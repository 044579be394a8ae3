"""EnvPanel: one environment (verdict, hosts, latency sparkline, flags), LIVE when it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from console.core.flags import FlagTable
from console.core.fleet import collapses, summarize
from console.core.models import Colour, EnvHealth, HostHealth
from console.widgets.flag_list import FlagList
from console.widgets.formatting import verdict_text
from console.widgets.host_table import HostTable
from console.widgets.latency_sparkline import LatencySparkline
from console.widgets.traffic import TrafficRates, traffic_line

SPARK_POINTS = 60
"""Probes shown in the sparkline (the newest ones)."""


def latency_series(hosts: tuple[HostHealth, ...]) -> list[float]:
    """The worst latency across hosts per probe round, newest last (failed probes count 0).

    A failed probe has no latency; drawing it as 0 makes an outage a visible gap at the
    bottom of the line instead of silently vanishing.
    """
    length = max((len(h.history) for h in hosts), default=0)
    series: list[float] = []
    for i in range(max(0, length - SPARK_POINTS), length):
        values = [
            h.history[i].latency_ms or 0.0 for h in hosts if i < len(h.history) and h.history[i].ok
        ]
        series.append(max(values, default=0.0))
    return series


def verdict_line(env: EnvHealth | None, live: bool) -> Content:
    """``healthy · 2/2 hosts up · serving traffic`` for the panel's first line."""
    if env is None:
        return Content.styled("waiting for the first probe…", "$text-muted")
    up = len(env.healthy_hosts)
    role = ("serving traffic", "bold") if live else ("stand-by", "$text-muted")
    return Content.assemble(
        verdict_text(env.verdict), f" · {up}/{len(env.hosts)} hosts up · ", role
    )


class EnvPanel(Vertical, can_focus=True):
    """One colour's panel; the screen sets ``env``, ``live`` and ``flags``.

    Focusable (Tab moves between the colours); Enter drills into its hosts.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select", "Hosts")]

    @dataclass
    class Selected(Message):
        """Enter on a colour's panel: show its hosts in detail."""

        colour: Colour

    DEFAULT_CSS = """
    EnvPanel {
        height: auto;
        border: round $panel-lighten-2;
        border-title-align: left;
        padding: 0 1;
    }
    EnvPanel.-blue { border-title-color: $env-blue; }
    EnvPanel.-green { border-title-color: $env-green; }
    EnvPanel.-live.-blue { border: heavy $env-blue; }
    EnvPanel.-live.-green { border: heavy $env-green; }
    EnvPanel:focus { background: $boost; }
    EnvPanel:focus .verdict { text-style: underline; }
    EnvPanel .verdict { height: 1; margin-bottom: 1; }
    EnvPanel .spark-label {
        height: 1; color: $text-muted; margin-top: 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    EnvPanel Sparkline { height: 2; }
    EnvPanel .traffic { height: 1; margin-bottom: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    EnvPanel.-blue Sparkline > .sparkline--max-color { color: $env-blue; }
    EnvPanel.-blue Sparkline > .sparkline--min-color { color: $env-blue 40%; }
    EnvPanel.-green Sparkline > .sparkline--max-color { color: $env-green; }
    EnvPanel.-green Sparkline > .sparkline--min-color { color: $env-green 40%; }
    """

    env: reactive[EnvHealth | None] = reactive(None)
    """This colour's health, or None before the first round of probes."""
    live: reactive[bool] = reactive(False)
    """Whether the control plane says this colour is live."""
    flags: reactive[FlagTable | None] = reactive(None)
    """Both colours' flags (this panel shows its own column)."""
    traffic: reactive[TrafficRates | None] = reactive(None, always_update=True)
    """Requests/s and errors/s through the builtin proxy (None: no counters)."""

    def __init__(self, colour: Colour, *, id: str | None = None) -> None:
        super().__init__(id=id, classes=f"-{colour.value}")
        self.colour = colour
        self.border_title = colour.value.upper()

    def compose(self) -> ComposeResult:
        yield Static(verdict_line(None, False), classes="verdict")
        yield HostTable()
        yield Static("latency", classes="spark-label")
        yield LatencySparkline([])
        yield Static(traffic_line(None, self.colour), classes="traffic")
        yield FlagList(self.colour)

    def action_select(self) -> None:
        """Drill into this colour's hosts: probe history, versions, errors, logs."""
        self.post_message(self.Selected(self.colour))

    def watch_live(self, live: bool) -> None:
        self.set_class(live, "-live")
        name = self.colour.value.upper()
        self.border_title = f"{name} ━ LIVE" if live else name
        self._show_verdict()

    def watch_env(self, env: EnvHealth | None) -> None:
        self._show_verdict()
        if env is None or not self.is_mounted:
            return
        # Tens of hosts: a summary line and the problem hosts first, as the CLI's status.
        self.query_one(HostTable).show_hosts(env.hosts, summarize(env) if collapses(env) else None)
        hosts = env.hosts
        series = latency_series(hosts)
        self.query_one(LatencySparkline).data = series
        latest = [h.last.latency_ms for h in hosts if h.last and h.last.latency_ms is not None]
        label = "latency (worst host per probe)"
        if series:
            # A host that does not answer has no latency: say so rather than "0.0 ms".
            now = f"{max(latest):.1f}ms" if latest else "no answer"
            peak = f"{max(series):.1f}ms" if max(series) > 0 else "-"
            label = f"latency now {now} · peak {peak} · {len(series)} probes"
        self.query_one(".spark-label", Static).update(label)

    def watch_traffic(self, traffic: TrafficRates | None) -> None:
        if self.is_mounted:
            self.query_one(".traffic", Static).update(traffic_line(traffic, self.colour))

    def watch_flags(self, flags: FlagTable | None) -> None:
        if self.is_mounted:
            self.query_one(FlagList).table = flags

    def _show_verdict(self) -> None:
        if self.is_mounted:
            self.query_one(".verdict", Static).update(verdict_line(self.env, self.live))
