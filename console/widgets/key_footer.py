"""KeyFooter: a Footer that drops its least important keys first when the terminal is narrow."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

KEEP: frozenset[str] = frozenset(
    {
        "toggle_help",
        "app.toggle_help",
        "quit",
        "app.quit",
        "back",
        "app.back",
        "app.pop_screen",
        "clear_or_back",
        "close",
        "cancel",
    }
)
"""Actions never dropped: help (which lists every key) and quit/back."""
DROP_ORDER: tuple[str, ...] = (
    "app.command_palette",
    "open_tour",
    "app.open_tour",
    "toggle_theme",
    "refresh",
    "toggle_armed",
    "details",
    "select",
    "migrate",
    "open_flags",
    "app.open_flags",
    "deploy",
)
"""Actions dropped first, in this order; others next, right to left; KEEP never."""


def key_width(key: FooterKey) -> int:
    """Cells a non-compact FooterKey takes: `` k `` plus ``Description ``."""
    if key.has_class("-command-palette"):
        return len(key.key_display) + len(key.description) + 5
    return len(key.key_display) + 2 + (len(key.description) + 1 if key.description else 0)


def fit(keys: list[FooterKey], width: int) -> list[FooterKey]:
    """The keys to show in ``width`` cells, in their order, dropping by priority."""
    shown = list(keys)

    def rank(key: FooterKey) -> tuple[int, int]:
        if key.action in DROP_ORDER:
            return (0, DROP_ORDER.index(key.action))
        return (1, -shown.index(key))

    while shown and sum(key_width(k) for k in shown) > width:
        candidates = [k for k in shown if k.action not in KEEP]
        if not candidates:
            break
        shown.remove(min(candidates, key=rank))
    return shown


class KeyFooter(Footer):
    """The app's keys; on a narrow terminal `?` and `q` stay and the least used go
    (`?` lists them all)."""

    def __init__(self) -> None:
        super().__init__()
        self._width = 0
        self._keys: tuple[object, ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        # A screen coming back and focus moves republish the same keys: recomposing for
        # nothing was half the cost of going back to a screen (l from flags to logs).
        keys = tuple(
            (b.key, b.action, b.description, b.show, enabled, tooltip)
            for _node, b, enabled, tooltip in screen.active_bindings.values()
        )
        if self._bindings_ready and keys == self._keys:
            return
        super().bindings_changed(screen)
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._keys = keys

    def compose(self) -> ComposeResult:
        widgets: list[Widget] = list(super().compose())
        keys = [w for w in widgets if isinstance(w, FooterKey)]
        width = self.size.width or self.app.size.width
        kept = set(map(id, fit(keys, width)))
        for widget in widgets:
            if not isinstance(widget, FooterKey) or id(widget) in kept:
                yield widget

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self.refresh(recompose=True)
