"""TourScreen: the demo sandbox explained inside the console (key ``t``).

What a newcomer needs while the console covers the terminal: where the sandbox's config
is, the command prefix for a second terminal, and the tour's steps, each with the keys to
press, what to look at, and the same step as a command.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Static

from console.demo.tour import MORE_KEYS, TOUR_STEPS, SandboxInfo

Row = tuple[str, str | Content]
"""A label (the left column) and its text (wrapped with a hanging indent)."""


def sandbox_rows(info: SandboxInfo) -> list[Row]:
    """The sandbox's whereabouts: config, CLI prefix, router and app pages."""
    rows: list[Row] = [
        ("config", Content.styled(str(info.config_path), "bold")),
        ("cli", Content.styled(info.cli_prefix, "bold $accent")),
        (
            "",
            Content.styled(
                "from another terminal: the prefix, then a verb such as status "
                "(c copies the prefix)",
                "$text-muted",
            ),
        ),
    ]
    if info.router_url:
        rows.append(("router", f"{info.router_url}  (where the traffic goes)"))
    for colour, url in info.app_urls.items():
        rows.append((colour, f"{url}  (its page: version, recent uploads, banner)"))
    return rows


def about(info: SandboxInfo) -> str:
    """One paragraph: what runs, and what quitting does."""
    ending = f"its files stay in {info.directory}" if info.keep else "and removes its files"
    return (
        "A sandbox on this machine: two hosts (blue, green), each a sample web app with its "
        "own SSH server, SQLite database and flags Redis; the control plane; the agent with "
        f"its router; a trickle of traffic. Quitting (q) stops all of it {ending}."
    )


def step_rows(number: int) -> list[Row]:
    """Keys, what to look at, and the command of step ``number`` (1-based)."""
    step = TOUR_STEPS[number - 1]
    return [
        ("keys", Content.styled(step.keys, "bold $accent")),
        ("look", step.look),
        ("cli", Content.styled(step.command.format(c="$c"), "$text-muted")),
    ]


class TourScreen(Screen[None]):
    """The sandbox and its guided tour; Escape (or t) goes back to the dashboard."""

    DEFAULT_CSS = """
    TourScreen .screen-title {
        height: 1;
        padding: 0 1;
        background: $panel;
        text-style: bold;
    }
    TourScreen VerticalScroll { padding: 0 1; }
    TourScreen .about { margin-top: 1; color: $text-muted; }
    TourScreen #sandbox { height: auto; margin: 1 0; border-left: thick $accent; padding-left: 1; }
    TourScreen .step-title { margin-top: 1; text-style: bold; color: $primary; }
    TourScreen .row { height: auto; }
    TourScreen .row > .label { width: 9; padding-left: 3; text-style: bold; }
    TourScreen #sandbox .row > .label { width: 7; padding-left: 0; color: $text-muted; }
    TourScreen .row > .text { width: 1fr; }
    TourScreen .more { margin-top: 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "copy_cli", "Copy prefix"),
    ]

    def __init__(self, info: SandboxInfo) -> None:
        super().__init__()
        self.info = info

    def compose(self) -> ComposeResult:
        yield Static("Tour of the demo sandbox · Escape goes back", classes="screen-title")
        with VerticalScroll():
            yield Static(about(self.info), classes="about")
            with Vertical(id="sandbox"):
                yield from _rows(sandbox_rows(self.info))
            for number, step in enumerate(TOUR_STEPS, 1):
                yield Static(f"{number}. {step.title}", classes="step-title")
                yield from _rows(step_rows(number))
            yield Static(
                Content.assemble(("More keys  ", "bold"), MORE_KEYS, "\n", ("$c", "bold"),
                                 ("         the cli prefix above", "$text-muted")),
                classes="more",
            )  # fmt: skip
        yield Footer()

    def action_copy_cli(self) -> None:
        """Put the CLI prefix on the clipboard (terminals with OSC 52 support)."""
        self.app.copy_to_clipboard(self.info.cli_prefix)
        self.notify(f"copied: {self.info.cli_prefix}", timeout=4)


def _rows(rows: list[Row]) -> Iterator[Horizontal]:
    for label, text in rows:
        yield Horizontal(
            Static(label, classes="label"), Static(text, classes="text"), classes="row"
        )
