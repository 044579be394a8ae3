"""HelpScreen: the keys of the screen below, each with a sentence on what it does."""

from __future__ import annotations

import inspect
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

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
        if not enabled or binding.action in ("command_palette", "app.command_palette"):
            continue
        key = screen.app.get_key_display(binding)
        sentence = _sentence(node, binding.action, binding.description)
        keys, _ = rows.setdefault(binding.action, ([], sentence))
        if key not in keys:
            keys.append(key)
    return [(" ".join(keys), sentence) for keys, sentence in rows.values()] + list(EXTRA)


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
        width = max((len(k) for k, _ in self.rows), default=4) + 2
        lines = [
            Content.assemble((f"{keys:<{width}}", "bold $accent"), sentence)
            for keys, sentence in self.rows
        ]
        with VerticalScroll() as scroll:
            scroll.border_title = f"{self.title_text} (Escape closes)"
            yield Static(Content("\n").join(lines), id="help-keys")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        """Close the key list."""
        self.dismiss(None)
