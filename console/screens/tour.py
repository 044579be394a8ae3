"""TourScreen: the demo sandbox explained inside the console (key ``t``).

What a newcomer needs while the console covers the terminal: where the sandbox's config
is, the command prefix for a second terminal, and the tour's steps, each with the keys to
press, what to look at, and the same step as a command.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Static

from console.demo.tour import MORE_KEYS, TOUR_STEPS, SandboxInfo


def intro(info: SandboxInfo) -> Content:
    """The sandbox's whereabouts: config, CLI prefix, router and apps."""
    label = "bold $text-muted"
    lines = [
        Content.assemble(
            "A sandbox on this machine: two hosts (blue, green), each a sample web app with "
            "its own SSH server, SQLite database and flags Redis; the control plane; the "
            "agent with its router; a trickle of traffic. Quitting (q) stops all of it"
            + (
                f" (its files stay in {info.directory})."
                if info.keep
                else " and removes its files."
            )
        ),
        Content(""),
        Content.assemble(("config   ", label), (str(info.config_path), "bold")),
        Content.assemble(("cli      ", label), (info.cli_prefix, "bold $accent")),
        Content.assemble(
            ("         ", label),
            ("from another terminal, e.g. ", "$text-muted"),
            (f"{info.cli_prefix} status", "$text-muted"),
            ("  (c copies the prefix)", "$text-muted"),
        ),
    ]
    if info.router_url:
        lines.append(Content.assemble(("router   ", label), info.router_url))
    for colour, url in info.app_urls.items():
        lines.append(
            Content.assemble(
                (f"{colour:<9}", f"bold $env-{colour}"),
                url,
                ("  the app's page (recent uploads, banner)", "$text-muted"),
            )
        )
    return Content("\n").join(lines)


def steps() -> Content:
    """Every step: title, keys, what to look at, and the command (after ``$c``)."""
    lines: list[Content] = []
    for number, step in enumerate(TOUR_STEPS, 1):
        lines.append(Content.assemble((f"{number}. {step.title}", "bold $primary")))
        lines.append(Content.assemble(("   keys  ", "bold"), (step.keys, "bold $accent")))
        lines.append(Content.assemble(("   look  ", "bold"), step.look))
        lines.append(
            Content.assemble(("   cli   ", "bold"), (step.command.format(c="$c"), "$text-muted"))
        )
        lines.append(Content(""))
    lines.append(Content.assemble(("More keys  ", "bold"), MORE_KEYS))
    lines.append(Content.assemble(("$c         ", "bold"), ("the cli prefix above", "$text-muted")))
    return Content("\n").join(lines)


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
    TourScreen #tour-intro {
        margin: 1 0;
        padding: 0 1;
        border-left: thick $accent;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "copy_cli", "Copy the cli prefix"),
    ]

    def __init__(self, info: SandboxInfo) -> None:
        super().__init__()
        self.info = info

    def compose(self) -> ComposeResult:
        yield Static("Tour of the demo sandbox · Escape goes back", classes="screen-title")
        with VerticalScroll():
            yield Static(intro(self.info), id="tour-intro")
            yield Static(steps(), id="tour-steps")
        yield Footer()

    def action_copy_cli(self) -> None:
        """Put the CLI prefix on the clipboard (terminals with OSC 52 support)."""
        self.app.copy_to_clipboard(self.info.cli_prefix)
        self.notify(f"copied: {self.info.cli_prefix}", timeout=4)
