"""The guided tour printed when the sandbox is up: what it runs and the commands to try."""

from __future__ import annotations

import shlex
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
    c = f"bgconsole -c {shlex.quote(str(info.config_path))}"
    steps = [
        ("Both colours, their health and versions; blue is live", f"{c} status"),
        ("Follow the audit trail in a second terminal", f"{c} events --follow"),
        ("Stream green's access log over its SSH server", f"{c} logs green access --follow"),
        ("Deploy a good release (a new version) to the stand-by", f"{c} deploy green --ref good"),
        ("Send traffic to green (X-BG-Env: green)", f"{c} switch green --yes"),
        (
            "Deploy the bad release to the live colour: / and /health answer 500, "
            "the agent fails over to blue",
            f"{c} deploy green --ref bad --live",
        ),
        (
            "Repair green (a good release), then flip back",
            f"{c} deploy green --ref good && {c} switch green --yes",
        ),
        ("Hide the recent uploads on blue's page", f"{c} flag set uploads off --env blue --yes"),
    ]
    lines = ["", "Try it from another terminal:"]
    for number, (what, command) in enumerate(steps, 1):
        lines.append(f"  {number}. {what}:")
        lines.append(f"       {command}")
    lines.append("")
    lines.append("Uploads written while green is live stay in green's database")
    lines.append("(the data a migration carries back to blue).")
    return "\n".join(lines)
