"""Values ``bgconsole init`` writes as examples, still in the configuration.

The starter is valid on purpose (so ``check`` can read it), which also means a file
nobody edited passes every static check. These are the values that give it away.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from console.core.config import Config, HostConfig
from console.core.doctor.model import Check, ok, warn

_PLACEHOLDER_HOST = re.compile(r"^10\.0\.0\.\d{1,3}$")
_PLACEHOLDER_DIR = "/srv/myapp"


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def check_placeholders(config: Config) -> list[Check]:
    """One warning per value left from the ``init`` starter; one ok when there are none."""
    found: list[tuple[str, str]] = []
    if config.console.name == "myapp":
        found.append(("console.name", "myapp"))
    if _PLACEHOLDER_HOST.match(_host_of(config.control.redis)):
        found.append(("control.redis", config.control.redis))
    for colour, env in config.envs.items():
        key = f"env.{colour}"
        if env.flags_redis and _PLACEHOLDER_HOST.match(_host_of(env.flags_redis)):
            found.append((f"{key}.flags_redis", env.flags_redis))
        for host in env.hosts:
            where = key if len(env.hosts) == 1 else f"{key}.hosts[{host.name}]"
            found.extend(_host(where, host))
    if "new_feature" in config.flags and config.flags["new_feature"].description == (
        "An example flag"
    ):
        found.append(("flags.new_feature", "the example flag"))
    if not found:
        return [ok("config", "placeholders", "no value left from the init starter")]
    return [
        warn(
            "config",
            key,
            f"{value!r} is the init starter's example value",
            "replace it with your setup's real value",
        )
        for key, value in found
    ]


def _host(where: str, host: HostConfig) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if _PLACEHOLDER_HOST.match(_host_of(host.url)):
        found.append((f"{where}.url", host.url))
    if host.ssh is not None and _PLACEHOLDER_HOST.match(host.ssh.host):
        found.append((f"{where}.ssh", str(host.ssh)))
    if host.workdir and host.workdir.startswith(_PLACEHOLDER_DIR):
        found.append((f"{where}.workdir", host.workdir))
    for name, command in host.logs.items():
        if _PLACEHOLDER_DIR in command:
            found.append((f"{where}.logs.{name}", command))
    for step in host.deploy:
        if "restart myapp" in step or step == "./deploy.sh {ref}":
            found.append((f"{where}.deploy", step))
    return found
