"""Log lines are coloured by source; 5xx answers and ERROR lines stand out."""

from __future__ import annotations

from rich.text import Text

from console.theming import DOMAIN_VARIABLES
from console.widgets.log_highlighter import LogHighlighter


def _styled(line: str) -> dict[str, str]:
    text = Text(line)
    LogHighlighter({**DOMAIN_VARIABLES, "warning": "#F5A623"}).highlight(text)
    return {
        line[span.start : span.end]: str(span.style.color.name)  # type: ignore[union-attr]
        for span in text.spans
        if span.style.color is not None  # type: ignore[union-attr]
    }


def test_source_and_5xx_are_coloured() -> None:
    line = 'green/green:access | 127.0.0.1 - - [x] "GET / HTTP/1.1" 500 42 3.1ms v=1.2.0'
    styled = _styled(line)
    assert styled["green/green:access"] == DOMAIN_VARIABLES["env-green"].lower()
    assert styled['" 500 '] == DOMAIN_VARIABLES["status-down"].lower()


def test_errors_stand_out_and_2xx_does_not() -> None:
    assert "ERROR" in _styled("blue/app1:app | 12:00 ERROR database is locked")
    styled = _styled('blue/app1:access | "GET / HTTP/1.1" 200 42')
    assert list(styled) == ["blue/app1:access"]
