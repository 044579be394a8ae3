"""Structured agent log lines: logfmt quoting, JSON, and no secrets."""

from __future__ import annotations

import io
import json

from console.core.agent_log import AgentLog


def test_logfmt_quotes_values_and_hides_passwords() -> None:
    out = io.StringIO()
    AgentLog("logfmt", out).warning(
        "failover", to="green", reason='live "blue" is down', control="redis://u:s3cret@h:6379/0"
    )
    line = out.getvalue()
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert " level=warning event=failover to=green " in line
    assert 'reason="live \\"blue\\" is down"' in line
    assert "s3cret" not in line
    assert "control=redis://u:***@h:6379/0" in line


def test_json_lines_parse() -> None:
    out = io.StringIO()
    AgentLog("json", out).info("route", serving="blue", epoch=3)
    record = json.loads(out.getvalue())
    assert record["event"] == "route"
    assert record["epoch"] == 3
    assert record["ts"].endswith("Z")
