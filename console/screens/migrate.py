"""MigrateScreen: the small form asking what to migrate where, and the live-colour check."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, RadioButton, RadioSet, Static

from console.core.migrate.plan import MigrationRequest, Strategy
from console.core.models import Colour
from console.screens.confirm import ConfirmScreen
from console.widgets.choice_set import ChoiceSet
from console.widgets.form_scroll import FormScroll

if TYPE_CHECKING:
    from textual.app import App

FORM_STRATEGIES: tuple[tuple[Strategy, str], ...] = (
    ("rows", "rows: copy the rows the target lacks (short transactions), verify"),
    ("snapshot", "snapshot: replace the target database with a copy (old file kept)"),
    ("redis", "redis: copy the keys matching data.redis_keys, with their TTLs"),
    ("mirror", "mirror: copy the rows, then keep applying changes until stopped"),
)
"""The strategies the form offers (the CLI's, with mirror's change capture always on)."""
REASON = "from the console"


class MigrateScreen(ModalScreen[MigrationRequest | None]):
    """From (default the live colour), to (the other), strategy, dry run (default on)."""

    DEFAULT_CSS = """
    MigrateScreen { align: center middle; }
    MigrateScreen > FormScroll {
        width: 100%; max-width: 84; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 2;
    }
    MigrateScreen Label { margin-top: 1; }
    MigrateScreen #source { layout: horizontal; width: auto; }
    MigrateScreen .note { color: $text-muted; }
    MigrateScreen Checkbox { margin-top: 1; }
    MigrateScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    MigrateScreen Button { margin-left: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        # Enter starts what the form says from any field; space and the arrows choose.
        Binding("enter", "submit", "Start", priority=True),
    ]

    def __init__(self, default: Colour, live: Colour | None) -> None:
        """Args:
        default: the colour to migrate from (the live one: where new data is written).
        live: the live colour, marked in the form; None when unknown.
        """
        super().__init__()
        self.default = default
        self.live = live

    def compose(self) -> ComposeResult:
        with FormScroll():
            yield Label("[b]Migrate data between the colours[/b]")
            yield Label("From")
            with ChoiceSet(id="source"):
                for colour in Colour:
                    yield RadioButton(
                        self._label(colour),
                        value=colour is self.default,
                        name=colour.value,
                        id=f"source-{colour.value}",
                    )
            yield Static(self._to_text(self.default), id="target")
            yield Label("Strategy")
            with ChoiceSet(id="strategy"):
                for i, (strategy, text) in enumerate(FORM_STRATEGIES):
                    yield RadioButton(text, value=i == 0, name=strategy, id=f"strategy-{strategy}")
            yield Static(
                "mirror installs change capture on the source (updates and deletes follow "
                "too); s stops it, t removes the capture.",
                classes="note",
            )
            yield Checkbox("Dry run: plan only, write nothing", value=True, id="dry-run")
            with Horizontal():
                yield Button("Start", variant="warning", id="start")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#source", RadioSet).focus()

    def _label(self, colour: Colour) -> str:
        return colour.value + (" (LIVE)" if colour is self.live else "")

    def _to_text(self, source: Colour) -> Content:
        target = source.other
        return Content.assemble(
            "To  ",
            (self._label(target).upper(), f"bold $env-{target.value}"),
            ("   (the other colour)", "$text-muted"),
        )

    def _source(self) -> Colour:
        pressed = self.query_one("#source", RadioSet).pressed_button
        return Colour(pressed.name) if pressed and pressed.name else self.default

    def _request(self) -> MigrationRequest:
        source = self._source()
        pressed = self.query_one("#strategy", RadioSet).pressed_button
        strategy = next(
            (s for s, _ in FORM_STRATEGIES if pressed and pressed.name == s), FORM_STRATEGIES[0][0]
        )
        dry_run = self.query_one("#dry-run", Checkbox).value
        return MigrationRequest(source, source.other, strategy, dry_run=dry_run, reason=REASON)

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        if event.radio_set.id == "source":
            self.query_one("#target", Static).update(self._to_text(self._source()))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(self._request() if event.button.id == "start" else None)

    def action_submit(self) -> None:
        """Start what the form says (Enter on Cancel cancels)."""
        focused = self.focused
        if isinstance(focused, Button) and focused.id == "cancel":
            self.dismiss(None)
        else:
            self.dismiss(self._request())

    def action_cancel(self) -> None:
        """Close without migrating."""
        self.dismiss(None)


async def confirm_target(
    app: App[object], request: MigrationRequest, live: Colour | None
) -> MigrationRequest | None:
    """Ask before writing into the live colour (or an unknown one); call from a worker.

    Returns:
        The request, with ``live_ok`` set when the operator agreed to write into the live
        colour; None when they declined. Dry runs write nothing and are never asked about.
    """
    if request.dry_run or (live is not None and request.target is not live):
        return request
    why = "is LIVE" if live else "may be live (live colour unknown)"
    if not await app.push_screen_wait(
        ConfirmScreen(
            Content(f"{request.target.value.upper()} {why}. Migrate into it anyway?"),
            Content(
                "The application is reading and writing this colour's data while the "
                f"migration writes into it ({request.strategy} from {request.source}). "
                "Migrating into the stand-by, then switching, is the safe way."
            ),
            yes_label="Migrate into live",
        )
    ):
        return None
    return replace(request, live_ok=True)
