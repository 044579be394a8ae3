"""Traffic at a glance: requests/s and errors/s per colour from the proxy's counters."""

from __future__ import annotations

from dataclasses import replace

from ui_support import fixed_report

from console.core.models import AgentHeartbeat, Colour
from console.core.status import StatusReport
from console.widgets.traffic import TrafficRates, spark, traffic_line


def _report(at: float, blue: int, errors: int) -> StatusReport:
    agent = AgentHeartbeat(at, "agent@r", 1, True, True, "builtin", "blue")
    agent = replace(agent, proxy={"requests.blue": blue, "errors.blue": errors})
    return replace(fixed_report(), agents=(agent,))


def test_rates_come_from_counter_differences() -> None:
    rates = TrafficRates()
    assert not rates.observe(_report(100.0, 1000, 0))
    assert rates.observe(_report(102.0, 1010, 2))
    assert rates.requests[Colour.BLUE] == [5.0]
    assert rates.errors[Colour.BLUE] == [1.0]
    assert rates.requests[Colour.GREEN] == [0.0]
    # An agent restart resets its counters: no negative rate.
    assert rates.observe(_report(103.0, 3, 0))
    assert rates.requests[Colour.BLUE][-1] == 0.0
    line = traffic_line(rates, Colour.BLUE).plain
    assert line.startswith("traffic 0.0 req/s · 0.0 err/s ")


def test_spark_scales_to_its_maximum() -> None:
    assert spark([0.0, 5.0, 10.0], 3) == "▁▅█"
    assert spark([0.0, 0.0], 5) == "▁▁"
