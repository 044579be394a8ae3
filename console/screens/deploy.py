"""DeployScreen: the small form asking what to deploy where (ref, colour, git, batch size)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

from console.core.config import Config
from console.core.deploy import DEFAULT_PARALLEL, DeployMethod
from console.core.models import Colour
from console.widgets.choice_set import ChoiceSet
from console.widgets.form_scroll import FormScroll


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """What the operator asked to deploy."""

    colour: Colour
    ref: str | None
    method: DeployMethod | None = None
    """``git``: push with the git pipeline (the CLI's ``--git``); None: as configured."""
    repo: Path | None = None
    """The local repository a git push goes from (``--repo``; None: the current directory)."""
    parallel: int | None = None
    """Hosts per batch after the canary (``--parallel``; None: the default)."""


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


def batch_hint(hosts: int, parallel: int) -> str:
    """``20 hosts: the canary alone, then 5 at a time (5 batches)``."""
    if hosts <= 1:
        return "one host"
    rest = hosts - 1
    batches = 1 + -(-rest // max(1, parallel))
    return f"{hosts} hosts: the canary alone, then {parallel} at a time ({batches} batches)"


class DeployScreen(ModalScreen[DeployRequest | None]):
    """Ref first (focus starts there), colour (defaults to the stand-by), the git
    pipeline (``--git``/``--repo``) and, for a fleet, hosts per batch; Enter deploys,
    Escape cancels."""

    DEFAULT_CSS = """
    DeployScreen { align: center middle; }
    DeployScreen > FormScroll {
        width: 100%; max-width: 64; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 2;
    }
    DeployScreen Label { margin-top: 1; }
    DeployScreen RadioSet { layout: horizontal; width: auto; }
    DeployScreen .git-only { display: none; }
    DeployScreen.-git .git-only { display: block; }
    DeployScreen .fleet-only { display: none; }
    DeployScreen.-fleet .fleet-only { display: block; }
    DeployScreen #form-error { color: $error; display: none; }
    DeployScreen #form-error.-shown { display: block; }
    DeployScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    DeployScreen Button { margin-left: 2; }
    DeployScreen #batch-row { align-horizontal: left; margin-top: 0; }
    DeployScreen #parallel { width: 12; }
    DeployScreen #batch-hint { width: 1fr; margin: 0 0 0 1; height: 3; content-align: left middle; }
    DeployScreen.-short Label { margin-top: 0; }
    """

    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]  # noqa: RUF012 (Textual's type)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        # Enter deploys what the form says from any field (space picks a colour), so the
        # ref typed is never lost to a focused button or radio set.
        Binding("enter", "submit", "Deploy", priority=True),
    ]

    def __init__(self, default: Colour, live: Colour | None, config: Config | None = None) -> None:
        """Args:
        default: the colour chosen at first (the stand-by).
        live: the live colour, if known.
        config: for each colour's host count (the batch size field) and git table;
            None: the app's services' config, if it has one.
        """
        super().__init__()
        self.default = default
        self.live = live
        self._config = config

    @property
    def config(self) -> Config | None:
        if self._config is not None:
            return self._config
        services = getattr(self.app, "services", None)
        config = getattr(services, "config", None)
        return config if isinstance(config, Config) else None

    def _hosts(self, colour: Colour) -> int:
        config = self.config
        return len(config.env(colour).hosts) if config is not None else 1

    def compose(self) -> ComposeResult:
        with FormScroll():
            yield Label("[b]Deploy a release[/b]", id="title")
            yield Label("Ref (version, tag or commit; empty: the default)")
            yield Input(placeholder="e.g. v2", id="ref", select_on_focus=False)
            yield Label("Colour")
            with ChoiceSet(id="colour"):
                for colour in Colour:
                    label = colour.value + (" (LIVE)" if colour is self.live else "")
                    yield RadioButton(label, value=colour is self.default, name=colour.value)
            yield Label(traffic_hint(self.default, self.live), id="traffic-hint")
            yield Label("Method")
            with ChoiceSet(id="method"):
                yield RadioButton("as configured", value=True, name="default", id="method-default")
                yield RadioButton("git push (--git)", name="git", id="method-git")
            yield Label(
                "Local repository to push from (empty: the console's directory)",
                classes="git-only",
            )
            yield Input(placeholder=str(Path.cwd()), id="repo", classes="git-only")
            yield Label("Hosts per batch after the canary", classes="fleet-only")
            with Horizontal(id="batch-row", classes="fleet-only"):
                yield Input(
                    str(DEFAULT_PARALLEL), type="integer", id="parallel", select_on_focus=False
                )
                yield Label("", id="batch-hint")
            yield Label("", id="form-error")
            with Horizontal():
                yield Button("Deploy", variant="warning", id="deploy")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self._show_choices()
        self.query_one("#ref", Input).focus()

    def _colour(self) -> Colour:
        pressed = self.query_one("#colour", RadioSet).pressed_button
        return Colour(pressed.name) if pressed and pressed.name else self.default

    def _method(self) -> DeployMethod | None:
        pressed = self.query_one("#method", RadioSet).pressed_button
        return "git" if pressed is not None and pressed.name == "git" else None

    def _parallel(self) -> int | None:
        """Hosts per batch typed (None: the default, or a single host)."""
        if self._hosts(self._colour()) <= 1:
            return None
        text = self.query_one("#parallel", Input).value.strip()
        if not text:
            return None
        value = int(text)
        if value < 1:
            raise ValueError("hosts per batch: at least 1")
        return value

    def _show_choices(self) -> None:
        colour = self._colour()
        hosts = self._hosts(colour)
        # The git choice only where the colour has a git pipeline ([env.COLOUR.git]).
        config = self.config
        no_git = config is not None and config.env(colour).git is None
        git = self.query_one("#method-git", RadioButton)
        if no_git and git.value:
            self.query_one("#method-default", RadioButton).value = True
        git.disabled = no_git
        git.label = "git push (not set up)" if no_git else "git push (--git)"
        self.set_class(self._method() == "git", "-git")
        self.set_class(hosts > 1, "-fleet")
        self.query_one("#traffic-hint", Label).update(traffic_hint(colour, self.live))
        try:
            parallel = self._parallel() or DEFAULT_PARALLEL
        except ValueError:
            parallel = DEFAULT_PARALLEL
        self.query_one("#batch-hint", Label).update(batch_hint(hosts, parallel))

    def _request(self) -> DeployRequest:
        """What the form says.

        Raises:
            ValueError: the batch size is not a number of at least 1.
        """
        ref = self.query_one("#ref", Input).value.strip() or None
        method = self._method()
        repo_text = self.query_one("#repo", Input).value.strip()
        repo = Path(repo_text).expanduser() if method == "git" and repo_text else None
        return DeployRequest(self._colour(), ref, method, repo, self._parallel())

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self._show_choices()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "parallel":
            self.query_one("#form-error", Label).remove_class("-shown")
            self._show_choices()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_key(self, event: events.Key) -> None:
        # Typing anywhere but a text field types the ref: Tab then "good" must not vanish
        # into a button or the colour choice.
        ref = self.query_one("#ref", Input)
        if isinstance(self.focused, Input) or not event.is_printable:
            return
        if event.character in (None, " "):
            return
        event.stop()
        event.prevent_default()
        ref.focus()
        ref.insert_text_at_cursor(event.character)

    def _submit(self) -> None:
        try:
            request = self._request()
        except ValueError as e:
            error = self.query_one("#form-error", Label)
            error.update(f"{e}" if "batch" in str(e) else "hosts per batch: a whole number")
            error.add_class("-shown")
            self.query_one("#parallel", Input).focus()
            return
        self.dismiss(request)

    def action_submit(self) -> None:
        """Deploy what the form says (Enter on Cancel cancels)."""
        focused = self.focused
        if isinstance(focused, Button) and focused.id == "cancel":
            self.dismiss(None)
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "deploy":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        """Close without deploying."""
        self.dismiss(None)
