"""ConfirmScreen: a yes/no question before anything that changes production."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from console.widgets.form_scroll import FormScroll


class ConfirmScreen(ModalScreen[bool]):
    """Asks ``question`` with ``details`` below it; dismisses with True only on yes.

    ``n``, Escape and the No button all answer no; the default focus is No, so a stray
    Enter never changes production.
    """

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > FormScroll {
        width: 100%;
        max-width: 80;
        height: auto;
        max-height: 100%;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    ConfirmScreen .question { text-style: bold; margin-bottom: 1; }
    ConfirmScreen .details { color: $text-muted; margin-bottom: 1; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(
        self, question: str | Content, details: str | Content = "", *, yes_label: str = "Yes"
    ) -> None:
        super().__init__()
        self.question = question
        self.details = details
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with FormScroll():
            yield Static(self.question, classes="question")
            if self.details:
                yield Static(self.details, classes="details")
            with Horizontal():
                yield Button(f"{self.yes_label} (y)", variant="warning", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def update_details(self, details: Content) -> None:
        """Replace the details (a check that finished after the question was asked)."""
        self.details = details
        self.query_one(".details", Static).update(details)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Dismiss with the answer."""
        self.dismiss(yes)
