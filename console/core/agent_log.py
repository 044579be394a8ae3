"""Structured agent logs: one line per event on stderr, logfmt or JSON.

``ts=2026-01-02T03:04:05.678Z level=info event=failover from=blue to=green reason="..."``

Values that look like URLs have their passwords hidden, so a Redis URL with credentials
can be logged safely.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Literal, TextIO

from console.core.config import redact_url
from console.core.text import printable

LogFormat = Literal["logfmt", "json"]
Value = str | int | float | bool | None


def _timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _clean(value: Value) -> Value:
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def _logfmt_value(value: Value) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    shown = printable(text)
    if text and shown == text and not any(c in text for c in ' ="\\'):
        return text
    # Backslashes and quotes first; then every control character (newline, CR, ESC) as a
    # visible escape, so a reason cannot split the line or drive the terminal.
    escaped = printable(text.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{escaped}"'


class AgentLog:
    """Writes one structured line per event.

    Args:
        fmt: ``logfmt`` or ``json``.
        stream: where lines go (stderr by default, which systemd's journal captures).
    """

    def __init__(self, fmt: LogFormat = "logfmt", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream

    def format(self, level: str, event: str, fields: Mapping[str, Value], now: float) -> str:
        """One line, without the newline."""
        record: dict[str, Value] = {"ts": _timestamp(now), "level": level, "event": event}
        for key, value in fields.items():
            record[key] = _clean(value)
        if self.fmt == "json":
            return json.dumps(record, separators=(",", ":"))
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in record.items())

    def log(self, level: str, event: str, **fields: Value) -> None:
        """Write one event; never raises (a closed stderr must not stop the agent)."""
        line = self.format(level, event, fields, time.time())
        stream = self.stream or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass

    def info(self, event: str, **fields: Value) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Value) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Value) -> None:
        self.log("error", event, **fields)
