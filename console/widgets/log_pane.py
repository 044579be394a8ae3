"""LogPane: a bounded, tailing log view that can be paused, scrolled back and resumed.

Space pauses (and resumes); scrolling up pauses too; End, ``G`` or ``t`` resume. While
paused the view holds still: new lines wait (at most ``max_lines`` of them, the newest)
with a "paused, N new lines" status, and are shown when following resumes.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Log, Static

from console.core.logs import LogBatch, LogLine
from console.core.text import printable
from console.widgets.log_highlighter import LogHighlighter


def _clean(text: str) -> str:
    # The common case (plain ASCII) costs two C calls and no copy.
    return text if text.isascii() and text.isprintable() else printable(text.expandtabs())


def format_log_line(line: LogLine) -> str:
    """``blue/app1:access | text``; marker lines as ``-- blue/app1:access: text --``.

    Log lines are the hosts' text (an access log holds whatever clients sent): escaped,
    so an ESC sequence in a User-Agent cannot drive the operator's terminal. Tabs are
    expanded first, as the Log widget would.
    """
    text = _clean(line.text)
    if line.marker:
        return f"-- {line.source}:{line.log}: {text} --"
    return f"{line.source}:{line.log} | {text}"


def format_batch(batch: LogBatch, lines: Iterable[str] | None = None) -> list[str]:
    """``format_log_line`` for each line of ``batch`` (or ``lines`` of it), prefix built once."""
    texts = batch.lines if lines is None else lines
    if batch.marker:
        return [f"-- {batch.source}:{batch.log}: {_clean(t)} --" for t in texts]
    prefix = f"{batch.source}:{batch.log} | "
    return [prefix + _clean(t) for t in texts]


class LogView(Log):
    """``Log`` that measures new lines' width in place.

    Textual's ``Log`` starts a thread worker per write to measure the lines; at 20 writes
    a second under a flood those threads fight the UI for the GIL. The lines here are
    already escaped, so measuring is a cheap pass.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # The Log's own End only scrolls; here it also resumes following.
        Binding("end", "follow", "Follow", show=False),
    ]

    def _update_size(self, updates: int, lines: list[str]) -> None:  # type: ignore[override]
        if lines:
            # Plain ASCII (nearly every log line) is as wide as it is long: C-speed passes.
            ascii_only = all(map(str.isascii, lines))
            width = max(map(len if ascii_only else cell_len, lines))
            self._update_maximum_width(updates, width)

    def action_follow(self) -> None:
        """Show the lines that waited, jump to the newest line and follow again."""
        if isinstance(self.parent, LogPane):
            self.parent.action_resume_tail()


class LogPane(Vertical):
    """A log view with at most ``max_lines`` lines and a following/paused status line."""

    DEFAULT_CSS = """
    LogPane { height: 1fr; }
    LogPane Log { height: 1fr; background: $surface; }
    LogPane .tail-status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    LogPane.-paused .tail-status { color: $warning; text-style: bold; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_pause", "Pause"),
        Binding("end,G,t", "resume_tail", "Follow", show=False),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up (pauses)", show=False),
        # Not g: on the logs screen g picks green.
        Binding("home", "scroll('top')", "Oldest line (pauses)", show=False),
    ]

    tail: reactive[bool] = reactive(True)
    """Following new lines; False while paused (space) or reading further up."""
    pending: reactive[int] = reactive(0)
    """Lines that arrived while paused (some may have been dropped: see ``held``)."""

    def __init__(self, max_lines: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_lines = max_lines
        self.markers = 0
        """Marker lines seen (disconnects, failures): the screen may surface them."""
        self._all: deque[str] = deque(maxlen=max_lines)
        self._held: deque[str] = deque(maxlen=max_lines)
        """Lines that arrived while paused, shown on resume (the newest ``max_lines``)."""
        self._by_scroll = False
        """Paused by scrolling up (so scrolling back to the end resumes), not by space."""
        self.filter = ""
        """Only lines holding this text (any case) are shown; empty: all."""

    def compose(self) -> ComposeResult:
        yield LogView(max_lines=self.max_lines, auto_scroll=True)
        yield Static(classes="tail-status")

    @property
    def log_view(self) -> Log:
        """The Log widget itself."""
        return self.query_one(Log)

    def on_mount(self) -> None:
        log = self.log_view
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
            self.log_view.scroll_end(animate=False, immediate=True)

    def _scrolled(self, _old: float, new: float) -> None:
        log = self.log_view
        if self.tail and new < log.max_scroll_y - 0.5:
            self._by_scroll = True
            self.tail = False
        elif not self.tail and self._by_scroll and new >= log.max_scroll_y > 0:
            # Not from inside the watcher: resuming writes and scrolls, which would stop
            # the very scroll animation that is calling this (Textual then trips on it).
            self.call_later(self._resume_at_end)

    def _resume_at_end(self) -> None:
        log = self.log_view
        if not self.tail and self._by_scroll and log.scroll_y >= log.max_scroll_y:
            self.tail = True

    def write(self, line: LogLine) -> None:
        """Append one line (dropping the oldest beyond ``max_lines``)."""
        self.write_texts([format_log_line(line)], markers=int(line.marker))

    def write_many(self, lines: list[LogLine]) -> None:
        """Append a batch with one update of the view (a flood of lines stays cheap)."""
        self.write_texts(
            [format_log_line(line) for line in lines], markers=sum(line.marker for line in lines)
        )

    def write_texts(self, texts: Sequence[str], markers: int = 0) -> None:
        """Append formatted lines (``format_batch``) with one update of the view.

        While paused they wait (the newest ``max_lines``) and the status counts them.
        """
        self.markers += markers
        if len(texts) > self.max_lines:
            texts = texts[-self.max_lines :]
        self._all.extend(texts)
        if self.filter:
            needle = self.filter.lower()
            texts = [t for t in texts if needle in t.lower()]
            if not texts:
                return
        if not self.tail:
            self._held.extend(texts)
            self.pending += len(texts)
            return
        self.log_view.write_lines(texts, scroll_end=True)

    def set_filter(self, text: str) -> None:
        """Show only the lines holding ``text`` (highlighted), from those kept; "" shows all."""
        self.filter = text
        log = self.log_view
        highlighter = log.highlighter
        if isinstance(highlighter, LogHighlighter):
            highlighter.search = re.compile(re.escape(text), re.IGNORECASE) if text else None
        log.clear()
        self._held.clear()
        needle = text.lower()
        shown = [t for t in self._all if needle in t.lower()] if text else list(self._all)
        log.write_lines(shown, scroll_end=True)
        self.tail = True
        self._show_status()

    def clear(self) -> None:
        """Drop every line and follow again."""
        self.log_view.clear()
        self._all.clear()
        self._held.clear()
        self.pending = 0
        self.tail = True

    @property
    def lines(self) -> list[str]:
        """The lines the view holds now (not those waiting while paused)."""
        return list(self.log_view.lines)

    @property
    def held(self) -> int:
        """Lines waiting to be shown when following resumes."""
        return len(self._held)

    def action_scroll(self, where: str) -> None:
        """Move through the lines: j/k a line, Home the oldest (pauses the tail)."""
        log = self.log_view
        if where == "down":
            log.scroll_down(animate=False)
        elif where == "up":
            log.scroll_up(animate=False)
        else:
            log.scroll_home(animate=False)

    def action_toggle_pause(self) -> None:
        """Pause following (new lines wait, counted), or resume at the newest line."""
        if self.tail:
            self._by_scroll = False
            self.tail = False
        else:
            self.action_resume_tail()

    def action_resume_tail(self) -> None:
        """Show the lines that waited, jump to the newest line and follow again."""
        self.tail = True
        self.log_view.scroll_end(animate=False, immediate=True)

    def watch_tail(self, tail: bool) -> None:
        self.set_class(not tail, "-paused")
        if tail:
            self._by_scroll = False
            if self._held:
                held = list(self._held)
                self._held.clear()
                self.log_view.write_lines(held, scroll_end=True)
            self.pending = 0
        self._show_status()

    def watch_pending(self, _pending: int) -> None:
        self._show_status()

    def _show_status(self) -> None:
        # Not ``is_mounted``: that is still False in on_mount, which left the line empty.
        statuses = self.query(".tail-status").results(Static)
        status = next(statuses, None)
        if status is None:
            return
        shown = (
            f" · showing lines with {self.filter!r} (/ changes, Escape clears)"
            if self.filter
            else ""
        )
        if self.tail:
            text = Content(f"following (last {self.max_lines:,} lines kept){shown}")
        else:
            dropped = self.pending - len(self._held)
            more = f" ({dropped:,} oldest dropped)" if dropped > 0 else ""
            text = Content(f"PAUSED, {self.pending:,} new lines{more}; space or End resumes{shown}")
        status.update(text)
