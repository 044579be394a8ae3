"""LatencySparkline: probe latencies on a robust scale, one column per probe, newest right.

Textual's Sparkline scales from the series' minimum to its maximum and stretches a short
series over the whole width. For latencies that misleads twice: the first probe of a
fresh console is cold (connection set-up, often 50-300 ms against a steady 5 ms), so it
becomes the maximum and flattens everything after it; and min-to-max scaling turns the
±0.3 ms jitter of a steady service into full-height waves. Here the scale starts at 0
and tops at a robust ceiling (see :func:`latency_ceiling`), values above it are drawn as
full bars (the spike stays visible without setting the scale), and each probe is one
column, so a young history fills from the right instead of smearing.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.widgets import Sparkline

BARS = "▁▂▃▄▅▆▇█"
"""One row's eighths, lowest first."""


def latency_ceiling(series: Sequence[float]) -> float:
    """The value drawn as a full bar: the larger of the 90th percentile and twice the
    (lower) median of the answered probes.

    The percentile ignores a few outliers (the cold first probe, a one-off spike); twice
    the median puts a steady service at half height, so its jitter stays small. Failed
    probes (0) take no part. Never below 0.001 ms, so an empty series scales.
    """
    answered = sorted(v for v in series if v > 0)
    if not answered:
        return 1.0
    last = len(answered) - 1
    p90 = answered[int(0.9 * last)]
    median = answered[last // 2]
    return max(p90, 2 * median, 0.001)


def bar_heights(series: Sequence[float], height: int) -> list[int]:
    """Each value's bar height in eighths of a row (0 to ``8 * height``).

    A failed probe (0) is an empty column; any answered one shows at least one eighth.
    """
    top = latency_ceiling(series)
    full = len(BARS) * height
    heights = []
    for value in series:
        if value <= 0:
            heights.append(0)
        else:
            heights.append(max(1, min(full, round(value / top * full))))
    return heights


class LatencySparkline(Sparkline):
    """A Sparkline (same CSS component classes) with the latency scale described above."""

    def render(self) -> RenderResult:
        width = self.size.width
        height = max(1, self.size.height)
        data = list(self.data or [])
        heights = bar_heights(data, height)[-width:] if width else []
        _, base = self.background_colors
        low = base + self.get_component_styles("sparkline--min-color").color
        high = base + self.get_component_styles("sparkline--max-color").color
        full = len(BARS) * height
        styles = [Style(color=low.blend(high, h / full).rich_color) for h in heights]
        pad = " " * (width - len(heights))
        text = Text(no_wrap=True, overflow="crop")
        for row in range(height):
            if row:
                text.append("\n")
            text.append(pad)
            floor = (height - 1 - row) * len(BARS)  # eighths below this row
            for h, style in zip(heights, styles, strict=True):
                eighths = min(len(BARS), h - floor)
                text.append(BARS[eighths - 1] if eighths > 0 else " ", style)
        return text
