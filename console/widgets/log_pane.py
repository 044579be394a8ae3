"""LogPane: a bounded, tailing log view; scrolling up pauses the tail, ``t``/End resumes."""

from __future__ import annotations

import re
from collections import deque
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Log, Static

from console.core.logs import LogLine
from console.core.text import printable
from console.widgets.log_highlighter import LogHighlighter


def format_log_line(line: LogLine) -> str:
    """``blue/app1:access | text``; marker lines as ``-- blue/app1: text --``.

    Log lines are the hosts' text (an access log holds whatever clients sent): escaped,
    so an ESC sequence in a User-Agent cannot drive the operator's terminal. Tabs are
    expanded first, as the Log widget would.
    """
    text = printable(line.text.expandtabs())
    if line.marker:
        return f"-- {line.source}:{line.log}: {text} --"
    return f"{line.source}:{line.log} | {text}"


class LogPane(Vertical):
    """A ``Log`` with at most ``max_lines`` lines and a tail/paused status line."""

    DEFAULT_CSS = """
    LogPane { height: 1fr; }
    LogPane Log { height: 1fr; background: $surface; }
    LogPane .tail-status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    LogPane.-paused .tail-status { color: $warning; text-style: bold; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "resume_tail", "Tail"),
        Binding("end,G", "resume_tail", "Tail", show=False),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up (pauses)", show=False),
        # Not g: on the logs screen g picks green.
        Binding("home", "scroll('top')", "Oldest line (pauses)", show=False),
    ]

    tail: reactive[bool] = reactive(True)
    """Following new lines; False while the operator reads further up."""
    pending: reactive[int] = reactive(0)
    """Lines that arrived while paused."""

    def __init__(self, max_lines: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_lines = max_lines
        self.markers = 0
        """Marker lines seen (disconnects, failures): the screen may surface them."""
        self._all: deque[str] = deque(maxlen=max_lines)
        self.filter = ""
        """Only lines holding this text (any case) are shown; empty: all."""

    def compose(self) -> ComposeResult:
        yield Log(max_lines=self.max_lines, auto_scroll=True)
        yield Static(classes="tail-status")

    def on_mount(self) -> None:
        log = self.query_one(Log)
        log.can_focus = True
        # Lines tagged and coloured by source; 5xx answers and ERROR lines stand out.
        log.highlighter = LogHighlighter(self.app.get_css_variables())
        log.highlight = True
        # Reading further up (wheel, keys, scrollbar) pauses the tail; Textual has no
        # "user scrolled" event, so watch the offset and compare with the end.
        self.watch(log, "scroll_y", self._scrolled, init=False)
        self._show_status()

    def on_resize(self) -> None:
        # Log scrolls to its end on a write, not on a resize: while following, put the
        # newest line back in view once the new size is laid out.
        if self.tail:
            self.call_after_refresh(self._to_end)

    def _to_end(self) -> None:
        if self.tail:
            self.query_one(Log).scroll_end(animate=False, immediate=True)

    def _scrolled(self, _old: float, new: float) -> None:
        log = self.query_one(Log)
        if self.tail and new < log.max_scroll_y - 0.5:
            self.tail = False
        elif not self.tail and new >= log.max_scroll_y and log.max_scroll_y > 0:
            self.tail = True

    def write(self, line: LogLine) -> None:
        """Append one line (dropping the oldest beyond ``max_lines``)."""
        if line.marker:
            self.markers += 1
        text = format_log_line(line)
        self._all.append(text)
        if self.filter and self.filter.lower() not in text.lower():
            return
        if not self.tail:
            self.pending += 1
        self.query_one(Log).write_line(text, scroll_end=self.tail)

    def write_many(self, lines: list[LogLine]) -> None:
        """Append a batch with one update of the view (a flood of lines stays cheap)."""
        texts = []
        for line in lines:
            if line.marker:
                self.markers += 1
            text = format_log_line(line)
            self._all.append(text)
            if not self.filter or self.filter.lower() in text.lower():
                texts.append(text)
        if not texts:
            return
        if not self.tail:
            self.pending += len(texts)
        self.query_one(Log).write_lines(texts, scroll_end=self.tail)

    def set_filter(self, text: str) -> None:
        """Show only the lines holding ``text`` (highlighted), from those kept; "" shows all."""
        self.filter = text
        log = self.query_one(Log)
        highlighter = log.highlighter
        if isinstance(highlighter, LogHighlighter):
            highlighter.search = re.compile(re.escape(text), re.IGNORECASE) if text else None
        log.clear()
        shown = [t for t in self._all if text.lower() in t.lower()] if text else list(self._all)
        log.write_lines(shown, scroll_end=True)
        self.tail = True
        self._show_status()

    def clear(self) -> None:
        """Drop every line and follow again."""
        self.query_one(Log).clear()
        self._all.clear()
        self.pending = 0
        self.tail = True

    @property
    def lines(self) -> list[str]:
        """The lines currently held."""
        return list(self.query_one(Log).lines)

    def action_scroll(self, where: str) -> None:
        """Move through the lines: j/k a line, Home the oldest (pauses the tail)."""
        log = self.query_one(Log)
        if where == "down":
            log.scroll_down(animate=False)
        elif where == "up":
            log.scroll_up(animate=False)
        else:
            log.scroll_home(animate=False)

    def action_resume_tail(self) -> None:
        """Jump to the newest line and follow again."""
        self.tail = True
        self.query_one(Log).scroll_end(animate=False, immediate=True)

    def watch_tail(self, tail: bool) -> None:
        self.set_class(not tail, "-paused")
        if tail:
            self.pending = 0
        self._show_status()

    def watch_pending(self, _pending: int) -> None:
        self._show_status()

    def _show_status(self) -> None:
        if not self.is_mounted:
            return
        shown = (
            f" · showing lines with {self.filter!r} (/ changes, Escape clears)"
            if self.filter
            else ""
        )
        if self.tail:
            text = Content(f"following (last {self.max_lines} lines kept){shown}")
        else:
            text = Content(f"PAUSED: {self.pending} new lines below; t or End resumes")
        self.query_one(".tail-status", Static).update(text)
