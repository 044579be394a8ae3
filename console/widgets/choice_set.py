"""ChoiceSet: a RadioSet whose keyboard highlight starts on the chosen button."""

from __future__ import annotations

from textual.widgets import RadioSet


class ChoiceSet(RadioSet):
    """Textual's RadioSet highlights its first button when mounted, whatever is pressed:
    Tab into the deploy form's colour (green chosen) then space chose blue. Here the
    highlight starts on the pressed button, so space keeps what the form shows."""

    def on_mount(self) -> None:
        # Subclass handlers run before RadioSet._on_mount, which moves the highlight to
        # the first button: correct it once that has happened.
        self.call_after_refresh(self._highlight_pressed)

    def _highlight_pressed(self) -> None:
        if self.pressed_index >= 0:
            self._selected = self.pressed_index
