"""The dashboard's latency sparkline: a robust 0-based scale, one column per probe."""

from __future__ import annotations

from textual.app import App, ComposeResult

from console.widgets.latency_sparkline import LatencySparkline, bar_heights, latency_ceiling

COLD_THEN_STEADY = [240.0] + [5.0 + (i % 5 - 2) * 0.15 for i in range(40)]
"""A cold first probe, then a steady 5 ms service with ±0.3 ms of jitter."""


def test_cold_first_probe_does_not_set_the_scale() -> None:
    assert 9.5 < latency_ceiling(COLD_THEN_STEADY) < 10.5
    heights = bar_heights(COLD_THEN_STEADY, height=2)
    assert heights[0] == 16  # the cold probe: a full bar, clipped
    steady = set(heights[1:])
    assert max(steady) - min(steady) <= 1, steady  # steady looks steady (half height)
    assert 7 <= min(steady) <= 9


def test_failed_probes_are_gaps_and_a_real_slowdown_shows() -> None:
    series = [5.0] * 20 + [0.0] * 3 + [50.0] * 10
    heights = bar_heights(series, height=2)
    assert heights[20:23] == [0, 0, 0]
    assert heights[-1] == 16
    assert heights[0] < 4
    assert latency_ceiling([]) == 1.0
    assert bar_heights([0.001], height=1) == [4]  # a lone probe: half height


class _Spark(App[None]):
    def compose(self) -> ComposeResult:
        yield LatencySparkline(COLD_THEN_STEADY[:10])


async def test_newest_probe_is_drawn_rightmost_one_column_each() -> None:
    app = _Spark()
    async with app.run_test(size=(30, 4)) as pilot:
        spark = app.query_one(LatencySparkline)
        spark.styles.height = 2
        await pilot.pause()
        lines = str(spark.render()).split("\n")
        assert len(lines) == 2
        assert all(len(line) == 30 for line in lines)
        # 10 probes in 30 columns: 20 empty columns on the left, the cold probe first.
        assert lines[1][:20].strip() == ""
        assert lines[0][20] == "█"
        assert lines[1][20] == "█"
        assert set(lines[1][21:]) == {"█"}
        assert lines[0][21:].strip() == ""
