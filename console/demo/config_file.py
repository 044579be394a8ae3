"""The sandbox's bgconsole.toml: written from the ports and paths it started with."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from console.core.config import Config, load_config

MIN_DWELL = 5.0
"""Seconds between automatic failovers in the demo (30 in production defaults), so a
newcomer can fail over, flip back and try again without waiting."""

FLAGS = {
    "uploads": "Recent uploads on the home page",
    "banner": "A 'New look!' banner on the home page",
}
"""The demo's flags and their descriptions; the sample app reads ``flag:<name>``."""


@dataclass(frozen=True, slots=True)
class HostSpec:
    """What the config needs to know about one sandbox host."""

    colour: str
    url: str
    ssh_port: int
    root: Path
    flags_redis: str
    db_path: Path


def render(
    *,
    control_redis: str,
    router_listen: str,
    known_hosts: Path,
    identity: Path,
    hosts: list[HostSpec],
) -> dict[str, Any]:
    """The configuration as TOML-ready data."""
    user = getpass.getuser()
    envs: dict[str, Any] = {}
    for host in hosts:
        envs[host.colour] = {
            "url": host.url,
            "health_path": "/health",
            "version": "json:version",
            "ssh": f"{user}@127.0.0.1:{host.ssh_port}",
            "identity": str(identity),
            "workdir": str(host.root),
            "deploy": ["./bin/deploy {ref}"],
            "flags_redis": host.flags_redis,
            "deploy_timeout": 60.0,
            "health_timeout": 10.0,
            "logs": {"access": "tail -F log/access.log", "app": "tail -F log/app.log"},
            "data": {"sqlite": [str(host.db_path)]},
        }
    return {
        "console": {"name": "demo"},
        "control": {"redis": control_redis},
        "router": {"kind": "builtin", "listen": router_listen},
        "failover": {"min_dwell": MIN_DWELL},
        "ssh": {
            # The sandbox's own key and known_hosts only: the user's ~/.ssh stays out of it.
            "use_config": False,
            "use_agent": False,
            "known_hosts": str(known_hosts),
            "host_key_policy": "strict",
            "connect_timeout": 5.0,
        },
        "env": envs,
        "flags": {name: {"description": text} for name, text in FLAGS.items()},
    }


_HEADER = """\
# bgconsole demo sandbox, written by `bgconsole demo`; removed when the demo stops
# (unless --keep). Two hosts (blue, green) on loopback, each with its own SSH server,
# sample app, SQLite database and flags Redis; the agent's built-in router in front.

"""


def write(path: Path, data: dict[str, Any]) -> Config:
    """Write the config and load it back, so a sandbox never hands out an invalid file."""
    path.write_text(_HEADER + tomli_w.dumps(data))
    return load_config(path)
