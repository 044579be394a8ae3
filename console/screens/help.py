"""HelpScreen: the keys of the screen below, each with a sentence on what it does."""

from __future__ import annotations

import inspect
import textwrap
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.dom import DOMNode
from textual.geometry import Size
from textual.screen import ModalScreen, Screen
from textual.widget import Widget

TEXTUAL_ACTIONS = frozenset(
    {"command_palette", "focus_next", "focus_previous", "copy_text", "quit", "maximize"}
)
"""Textual's built-in actions: said once in EXTRA (ctrl+q would list a second way out)."""
EXTRA: tuple[tuple[str, str], ...] = (
    ("ctrl+p", "Command palette: every action by name."),
    ("tab / shift+tab", "Move the focus (the focused part is highlighted)."),
    ("↑ ↓ j k, g G", "Move in lists and tables; top and bottom."),
)


def _sentence(node: DOMNode, action: str, fallback: str) -> str:
    """The first line of the action's docstring, else the binding's description."""
    name = action.split("(", 1)[0].split(".")[-1]
    target: object = node.app if action.startswith("app.") else node
    method = getattr(target, f"action_{name}", None)
    doc = inspect.getdoc(method) if method is not None else None
    return doc.splitlines()[0] if doc else fallback


def key_rows(screen: Screen[object]) -> list[tuple[str, str]]:
    """(keys, sentence) for every binding active on ``screen``, shown or not, once each."""
    rows: dict[str, tuple[list[str], str]] = {}
    for node, binding, enabled, _tooltip in screen.active_bindings.values():
        # Textual's own keys (Tab, copy, ctrl+q) are summed up in EXTRA, in our words.
        action = binding.action.split(".")[-1]
        if not enabled or binding.system or action in TEXTUAL_ACTIONS:
            continue
        key = screen.app.get_key_display(binding)
        sentence = _sentence(node, binding.action, binding.description)
        keys, _ = rows.setdefault(binding.action, ([], sentence))
        if key not in keys:
            keys.append(key)
    return [(" ".join(keys), sentence) for keys, sentence in rows.values()] + list(EXTRA)


class KeyList(Widget):
    """Keys in a column, sentences beside them with a hanging indent at any width."""

    DEFAULT_CSS = "KeyList { height: auto; }"

    def __init__(self, rows: list[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows = rows
        self.key_width = self._key_width(rows)

    @staticmethod
    def _key_width(rows: list[tuple[str, str]]) -> int:
        return max((len(k) for k, _ in rows), default=4) + 2

    def set_rows(self, rows: list[tuple[str, str]]) -> None:
        """Show other rows (a kept help screen opened over another screen)."""
        if rows != self.rows:
            self.rows = rows
            self.key_width = self._key_width(rows)
            self.refresh(layout=True)

    def _lines(self, width: int) -> list[Content]:
        room = max(width - self.key_width, 20)
        lines: list[Content] = []
        for keys, sentence in self.rows:
            wrapped = textwrap.wrap(sentence, room) or [""]
            lines.append(
                Content.assemble((f"{keys:<{self.key_width}}", "bold $accent"), wrapped[0])
            )
            lines += [Content(" " * self.key_width + more) for more in wrapped[1:]]
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines(width))

    def render(self) -> Content:
        return Content("\n").join(self._lines(self.size.width))


class HelpScreen(ModalScreen[None]):
    """The keys of the screen it was opened on; Escape, ? or q closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100%; max-width: 90; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, rows: list[tuple[str, str]], title: str = "keys") -> None:
        super().__init__()
        self.rows = rows
        self.title_text = title

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = f"{self.title_text} (Escape closes)"
            yield KeyList(self.rows, id="help-keys")

    def set_rows(self, rows: list[tuple[str, str]]) -> None:
        """List ``rows``: the app keeps one help screen and sets the keys of the screen
        below each time it opens it."""
        self.rows = rows
        if self.is_mounted:
            self.query_one(KeyList).set_rows(rows)
            self.query_one(VerticalScroll).scroll_home(animate=False)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        """Close the key list."""
        self.dismiss(None)
