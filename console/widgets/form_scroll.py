"""FormScroll: a dialog's body that scrolls on a short terminal but never takes the focus."""

from __future__ import annotations

from textual.containers import VerticalScroll


class FormScroll(VerticalScroll, can_focus=False):
    """Tab goes field to field (each scrolls into view), not to the container itself."""
