"""Many applications from one jump host: a directory of app configs and a summary of each.

Every ``*.toml`` in the apps directory (``--apps DIR``, else
``$XDG_CONFIG_HOME/bgconsole/apps``) is one application's whole configuration; they may
share one control-plane Redis, since each lives under its own ``[console] name``. A
config that cannot be read is one row saying why, never a crash of the overview.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from console.core.config import Config, load_config
from console.core.control import ControlPlane
from console.core.errors import ConsoleError
from console.core.models import Colour
from console.core.readiness import readiness


def apps_dir(explicit: str | None = None) -> Path:
    """Where the app configs are: ``--apps DIR``, else the per-user apps directory."""
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "bgconsole" / "apps"


@dataclass(frozen=True, slots=True)
class AppEntry:
    """One app config file: its configuration, or why it could not be read."""

    path: Path
    config: Config | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.config.console.name if self.config is not None else self.path.stem


def load_apps(directory: Path) -> list[AppEntry]:
    """Every ``*.toml`` of ``directory``, sorted by app name.

    Raises:
        ConsoleError: the directory does not exist or holds no config.
    """
    if not directory.is_dir():
        raise ConsoleError(f"no apps directory at {directory} (one *.toml per app)")
    entries: list[AppEntry] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            entries.append(AppEntry(path, load_config(path)))
        except ConsoleError as e:
            entries.append(AppEntry(path, None, str(e)))
    if not entries:
        raise ConsoleError(f"no app configs (*.toml) in {directory}")
    return sorted(entries, key=lambda e: e.name)


@dataclass(frozen=True, slots=True)
class AppSummary:
    """One row of the overview: where traffic is, what the agent says, what is going on."""

    name: str
    path: Path
    live: Colour | None = None
    epoch: int | None = None
    verdicts: dict[str, str] = field(default_factory=dict)
    """colour -> healthy/degraded/down/unknown, as the leader agent sees it."""
    failover: str = ""
    """``active`` or why not."""
    alarm: str | None = None
    in_progress: tuple[str, ...] = ()
    """Deploys and migrations holding a lock, with who."""
    error: str | None = None
    """The config or the control plane could not be read."""

    @property
    def trouble(self) -> bool:
        """Something an operator must look at."""
        return self.error is not None or self.alarm is not None


async def summarize(entry: AppEntry, limit_s: float = 2.0) -> AppSummary:
    """Read one app's state from its control plane (no probes: the agent's view is used).

    The overview must stay fast with fifty apps: it reads what every app's leader agent
    already publishes (health verdicts in its heartbeat) instead of probing every host.
    """
    if entry.config is None:
        return AppSummary(entry.name, entry.path, error=entry.error)
    config = entry.config
    control = ControlPlane.from_config(config.control, config.console.name)
    try:
        async with asyncio.timeout(limit_s):
            now = await control.server_time()
            active = await control.active()
            armed = await control.armed_state()
            agents = await control.agents()
            locks = await control.locks()
    except (ConsoleError, TimeoutError) as e:
        return AppSummary(entry.name, entry.path, error=str(e) or "control plane timed out")
    finally:
        await control.aclose()
    leader = next((a for a in agents if a.leader), None)
    verdicts = dict(leader.health) if leader is not None else {}
    judged = readiness(
        now=now,
        active=active,
        armed=armed,
        agents=agents,
        health=None,
        policy=config.failover,
        agent_config=config.agent,
    )
    alarm = judged.alarm
    if active is not None and verdicts.get(active.colour.value) == "down" and alarm is None:
        standby = verdicts.get(active.colour.other.value)
        if judged.why_not is not None:
            alarm = f"live {active.colour} is DOWN and nothing will fail over: {judged.why_not}"
        elif standby == "down":
            alarm = f"live {active.colour} is DOWN and stand-by {active.colour.other} too"
    return AppSummary(
        name=entry.name,
        path=entry.path,
        live=active.colour if active else None,
        epoch=active.epoch if active else None,
        verdicts=verdicts,
        failover="active" if judged.active else (judged.why_not or ""),
        alarm=alarm,
        in_progress=tuple(f"{lock.purpose} by {lock.holder}" for lock in locks),
    )


async def summarize_all(entries: list[AppEntry], limit: int = 16) -> list[AppSummary]:
    """Every app's summary, at most ``limit`` read at once; a slow one costs its timeout."""
    semaphore = asyncio.Semaphore(limit)

    async def one(entry: AppEntry) -> AppSummary:
        async with semaphore:
            return await summarize(entry)

    return list(await asyncio.gather(*(one(e) for e in entries)))
