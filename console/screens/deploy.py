"""DeployScreen: the small form asking which colour and which ref to deploy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

from console.core.models import Colour
from console.widgets.form_scroll import FormScroll


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """What the operator asked to deploy."""

    colour: Colour
    ref: str | None


def traffic_hint(colour: Colour, live: Colour | None) -> str:
    """What deploying to ``colour`` does to traffic, shown under the colour choice."""
    if live is None:
        return f"The live colour is unknown: {colour} may be serving users."
    if colour is live:
        return (
            f"{colour} is LIVE: its users are served by it while it deploys; if it breaks, "
            f"the agent fails over to {colour.other} (when armed)."
        )
    return f"{colour} is the stand-by: traffic stays on {live}."


class DeployScreen(ModalScreen[DeployRequest | None]):
    """Colour (defaults to the stand-by) and ref; Enter deploys, Escape cancels."""

    DEFAULT_CSS = """
    DeployScreen { align: center middle; }
    DeployScreen > FormScroll {
        width: 100%; max-width: 64; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 2;
    }
    DeployScreen Label { margin-top: 1; }
    DeployScreen RadioSet { layout: horizontal; width: auto; }
    DeployScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    DeployScreen Button { margin-left: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        # Enter deploys what the form says from any field (space picks a colour), so the
        # ref typed is never lost to a focused button or radio set.
        Binding("enter", "submit", "Deploy", priority=True),
    ]

    def __init__(self, default: Colour, live: Colour | None) -> None:
        super().__init__()
        self.default = default
        self.live = live

    def compose(self) -> ComposeResult:
        with FormScroll():
            yield Label("[b]Deploy a release[/b]")
            yield Label("Colour")
            with RadioSet(id="colour"):
                for colour in Colour:
                    label = colour.value + (" (LIVE)" if colour is self.live else "")
                    yield RadioButton(label, value=colour is self.default, name=colour.value)
            yield Label(traffic_hint(self.default, self.live), id="traffic-hint")
            yield Label("Ref (version, tag or commit; empty: the hosts' default)")
            yield Input(placeholder="e.g. v2", id="ref", select_on_focus=False)
            with Horizontal():
                yield Button("Deploy", variant="warning", id="deploy")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#ref", Input).focus()

    def _request(self) -> DeployRequest:
        pressed = self.query_one(RadioSet).pressed_button
        colour = Colour(pressed.name) if pressed and pressed.name else self.default
        ref = self.query_one("#ref", Input).value.strip() or None
        return DeployRequest(colour, ref)

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self.query_one("#traffic-hint", Label).update(
            traffic_hint(self._request().colour, self.live)
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(self._request())

    def on_key(self, event: events.Key) -> None:
        # Typing anywhere in the form types the ref: Tab then "good" must not vanish
        # into a button or the colour choice.
        ref = self.query_one("#ref", Input)
        if self.focused is ref or not event.is_printable or event.character in (None, " "):
            return
        event.stop()
        event.prevent_default()
        ref.focus()
        ref.insert_text_at_cursor(event.character)

    def action_submit(self) -> None:
        """Deploy what the form says (Enter on Cancel cancels)."""
        focused = self.focused
        if isinstance(focused, Button) and focused.id == "cancel":
            self.dismiss(None)
        else:
            self.dismiss(self._request())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(self._request() if event.button.id == "deploy" else None)

    def action_cancel(self) -> None:
        """Close without deploying."""
        self.dismiss(None)
