"""LogHighlighter: log lines coloured by source, with 5xx answers and errors standing out."""

from __future__ import annotations

import re
from collections.abc import Mapping

from rich.highlighter import Highlighter
from rich.style import Style
from rich.text import Text

SOURCE = re.compile(r"^(blue|green)/[^ |:]+(:[^ |]+)?")
STATUS_5XX = re.compile(r'" 5\d\d \b|\bHTTP 5\d\d\b|\bstatus[= ]5\d\d\b')
ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL|Traceback)\b|\blevel=error\b")
WARNING = re.compile(r"\b(WARN|WARNING)\b|\blevel=warning\b")
MARKER = re.compile(r"^-- .* --$")


class LogHighlighter(Highlighter):
    """Colours from the theme's variables (``env-blue``, ``status-down``, ``warning``).

    A Rich highlighter, because ``Log`` renders Rich text; the colours are read from the
    app's resolved theme variables when the pane mounts.
    """

    def __init__(self, variables: Mapping[str, str]) -> None:
        def colour(name: str, fallback: str) -> str:
            value = variables.get(name, fallback)
            return value if value.startswith("#") else fallback

        self.blue = Style(color=colour("env-blue", "#4C8DFF"), bold=True)
        self.green = Style(color=colour("env-green", "#2BB673"), bold=True)
        self.down = Style(color=colour("status-down", "#F0544F"), bold=True)
        self.warning = Style(color=colour("warning", "#F5A623"))
        self.muted = Style(dim=True, italic=True)
        self.found = Style(reverse=True, bold=True)
        self.search: re.Pattern[str] | None = None
        """The logs filter's text, marked wherever it appears."""

    def highlight(self, text: Text) -> None:
        plain = text.plain
        if MARKER.match(plain):
            text.stylize(self.muted)
            return
        source = SOURCE.match(plain)
        if source:
            style = self.blue if source.group(1) == "blue" else self.green
            text.stylize(style, 0, source.end())
        for pattern, style in (
            (STATUS_5XX, self.down),
            (ERROR, self.down),
            (WARNING, self.warning),
        ):
            for match in pattern.finditer(plain):
                text.stylize(style, match.start(), match.end())
        if self.search is not None:
            for match in self.search.finditer(plain):
                text.stylize(self.found, match.start(), match.end())
