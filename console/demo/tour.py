"""The guided tour of the sandbox: its steps (console keys, what to look at, the command),
printed by ``--no-console`` and shown on the console's Tour screen (key ``t``)."""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    """Where everything of a running sandbox is."""

    directory: Path
    config_path: Path
    router_url: str | None
    """None when no agent could be started (the apps are still reachable directly)."""
    app_urls: dict[str, str]
    ssh_targets: dict[str, str]
    redis_urls: dict[str, str]
    agent_log: Path | None
    traffic: bool
    keep: bool = False
    """Whether the files stay when the sandbox stops (``--keep``)."""
    command: str = "bgconsole"
    """How to run bgconsole from another terminal (its full path when not on PATH)."""

    @property
    def cli_prefix(self) -> str:
        """``bgconsole -c DIR/bgconsole.toml``: every verb of the tour after it."""
        return f"{self.command} -c {shlex.quote(str(self.config_path))}"


@dataclass(frozen=True, slots=True)
class TourStep:
    """One step of the story, done with console keys or with one command."""

    title: str
    keys: str
    """What to press in the console."""
    look: str
    """What to look at on the screen afterwards."""
    command: str
    """The same step from another terminal, after the CLI prefix (``{c}`` stands for it)."""


TOUR_STEPS: tuple[TourStep, ...] = (
    TourStep(
        "Look around",
        "none: just look at the dashboard",
        "BLUE has the heavy LIVE border, both colours are healthy at 1.0.0; the header "
        "shows the agent's heartbeat (♥), failover, and router builtin → BLUE.",
        "{c} status",
    ),
    TourStep(
        "Deploy the good release to the stand-by",
        "d, type good in Ref (green, the stand-by, is preselected), Enter",
        "the deploy's output streams; then GREEN's VERSION reads 1.1.0. Escape closes it.",
        "{c} deploy green --ref good",
    ),
    TourStep(
        "Switch traffic to green",
        "s, then y",
        "GREEN takes the LIVE border, the header reads LIVE GREEN epoch 2, and the "
        "activity log says 5/5 verification requests served by green.",
        "{c} switch green --yes",
    ),
    TourStep(
        "Deploy the bad release to the live colour, watch the failover",
        "d, shift+tab to Colour, pick green (LIVE) with the arrows and space, type bad, "
        "Enter, y (deploying to the live colour asks first)",
        "green answers 500 on / and /health: within a second the header is back to LIVE "
        "BLUE, a failover event by the agent appears under recent events (its evidence in "
        "e), and the deploy ends saying green never turned healthy.",
        "{c} deploy green --ref bad --live",
    ),
    TourStep(
        "Repair green and flip back",
        "d, type good, Enter (green is the stand-by again); then s, y",
        "GREEN healthy at a new version, then LIVE again.",
        "{c} deploy green --ref good && {c} switch green --yes",
    ),
    TourStep(
        "Turn a feature off without a flip",
        "f, → to GREEN on the uploads row, Enter, y (green is live, so it asks first); Escape",
        "green's flags show ○ uploads; green's page no longer lists recent uploads.",
        "{c} flag set uploads off --env green --yes",
    ),
    TourStep(
        "Carry green's new uploads back to blue",
        "m (from green, the live colour; rows; dry run ticked), Enter; read the plan, "
        "then r runs it for real",
        "rows to copy per table, then the verified result: uploads written while green "
        "was live are now in blue's database too.",
        "{c} migrate --from green --to blue --yes",
    ),
)
"""The tour, in order; every step can be done from the console alone."""

MORE_KEYS = (
    "l logs of both colours over SSH (b, g, m) · e the audit trail · "
    "a arm/disarm failover · ? every key"
)


def cli_command() -> str:
    """How another terminal runs this bgconsole: ``bgconsole`` if PATH finds this very
    install, else the script's full path (a newcomer's shell has no .venv/bin on PATH)."""
    script = Path(sys.executable).parent / "bgconsole"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m console"  # a source checkout, not installed
    found = shutil.which("bgconsole")
    if found is not None and Path(found).resolve() == script.resolve():
        return "bgconsole"
    return shlex.quote(str(script))


def summary(info: SandboxInfo, startup_seconds: float) -> str:
    """Config path and URLs, one per line, greppable (``config: PATH``)."""
    lines = [
        f"bgconsole demo: sandbox ready in {startup_seconds:.1f} s",
        f"  config:  {info.config_path}",
    ]
    if info.router_url:
        lines.append(f"  router:  {info.router_url}  (agent log: {info.agent_log})")
    else:
        lines.append("  router:  not running (this build has no agent; use the app URLs)")
    for colour, url in info.app_urls.items():
        lines.append(f"  {colour + ':':<8} {url}  (ssh {info.ssh_targets[colour]})")
    for name, url in info.redis_urls.items():
        lines.append(f"  redis:   {name} {url}")
    if info.traffic and info.router_url:
        lines.append("  traffic: a few requests per second through the router (--no-traffic)")
    lines.append(f"  dir:     {info.directory}")
    return "\n".join(lines)


def tour(info: SandboxInfo) -> str:
    """The commands to try from another terminal, in the order of the story."""
    lines = [
        "",
        "Try it from another terminal (in the console, t shows this tour with its keys):",
        f"  c={shlex.quote(info.cli_prefix)}",
        "  $c events --follow              # the audit trail as it happens (a third terminal)",
        "  $c logs green access --follow   # green's access log over its SSH server",
    ]
    for number, step in enumerate(TOUR_STEPS, 1):
        lines.append(f"  {number}. {step.title}:")
        lines.append(f"       {step.command.format(c='$c')}")
    return "\n".join(lines)
