"""The command palette's operator commands: the same actions as the keys."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode


@dataclass(frozen=True, slots=True)
class OpsCommand:
    """One palette entry: its title, help text, action, and who owns the action."""

    title: str
    help: str
    action: str
    on_screen: bool
    """True: an action of the current screen (offered only where it exists)."""


OPS_COMMANDS: tuple[OpsCommand, ...] = (
    OpsCommand(
        "Switch traffic to the stand-by", "confirm, switch, verify (s)", "switch_traffic", True
    ),
    OpsCommand(
        "Deploy a release", "colour and ref; the live colour asks twice (d)", "deploy", True
    ),
    OpsCommand(
        "Migrate data between the colours",
        "rows, snapshot or Redis keys; dry run first (m)",
        "migrate",
        True,
    ),
    OpsCommand("Arm / disarm automatic failover", "for every agent (a)", "toggle_armed", True),
    OpsCommand("Refresh now", "probe and read everything (r)", "refresh", True),
    OpsCommand("Feature flags", "flags x colours; toggle a cell (f)", "open_flags", False),
    OpsCommand("Logs", "follow the hosts' logs over SSH (l)", "open_logs", False),
    OpsCommand("Events", "the full audit trail, live (e)", "open_events", False),
    OpsCommand("Dashboard", "back to the dashboard", "open_dashboard", False),
    OpsCommand(
        "Toggle light / dark theme", "bgconsole-dark <-> bgconsole-light", "toggle_theme", False
    ),
    OpsCommand("Help", "show the keys (?)", "toggle_help", False),
    OpsCommand("Quit", "leave the console; production is not touched (q)", "quit", False),
)


class OpsCommands(Provider):
    """Offers :data:`OPS_COMMANDS` that make sense on the current screen."""

    def _available(self) -> list[tuple[OpsCommand, DOMNode]]:
        found: list[tuple[OpsCommand, DOMNode]] = []
        for command in OPS_COMMANDS:
            owner: DOMNode = self.screen if command.on_screen else self.app
            if hasattr(owner, f"action_{command.action}"):
                found.append((command, owner))
        return found

    async def discover(self) -> Hits:
        """Every available command, for an empty query."""
        for command, owner in self._available():
            yield DiscoveryHit(
                command.title,
                partial(self.app.run_action, command.action, owner),
                help=command.help,
            )

    async def search(self, query: str) -> Hits:
        """The available commands matching ``query``, best first."""
        matcher = self.matcher(query)
        for command, owner in self._available():
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(command.title),
                    partial(self.app.run_action, command.action, owner),
                    help=command.help,
                )
