"""Build the router a configuration asks for, and map hosts to the addresses routers use."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from console.core.config import Config, HostConfig
from console.core.errors import ConfigError
from console.core.models import Colour
from console.core.remote_exec import Executor, LocalExecutor, SshExecutor

if TYPE_CHECKING:
    from console.core.control import ControlPlane
    from console.core.router.base import Router


def host_address(host: HostConfig) -> str:
    """``host:port`` of a host's application URL (port 80/443 when the URL has none)."""
    parts = urlsplit(host.url)
    hostname = parts.hostname or ""
    if ":" in hostname:  # IPv6 literals keep their brackets in upstream/server lines
        hostname = f"[{hostname}]"
    port = parts.port
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{hostname}:{port}"


def colour_addresses(config: Config) -> dict[str, tuple[Colour, HostConfig]]:
    """Every host's ``host:port`` -> (its colour, the host)."""
    return {host_address(h): (colour, h) for colour, h in config.all_hosts()}


def router_executor(config: Config) -> Executor:
    """Where the router's operations run: over SSH when ``[router] ssh`` is set, else here."""
    if config.router.ssh is not None:
        return SshExecutor(config.router.ssh, config.ssh)
    return LocalExecutor()


def build_router(
    config: Config, control: ControlPlane | None = None, executor: Executor | None = None
) -> Router:
    """The router adapter for ``[router] kind``.

    Args:
        config: the whole configuration (hosts come from its environments).
        control: the control plane; the builtin router reads the active colour from it.
        executor: where haproxy/nginx/command operations run (default from ``[router] ssh``).

    Raises:
        ConfigError: the kind needs something the configuration lacks.
    """
    if len(config.all_routers) > 1:
        from console.core.router.multi import MultiRouter

        # Each adapter reads config.router: give each its own section. An executor
        # passed in applies to all (tests); otherwise each router's own ssh decides.
        return MultiRouter(
            [
                (rc.name, build_router(dataclasses.replace(config, router=rc, routers=()),
                                       control, executor))
                for rc in config.all_routers
            ]
        )  # fmt: skip
    # Adapters are imported here, not at the top: they import the helpers above, and a
    # console that never switches should not pay for every adapter's imports.
    kind = config.router.kind
    if kind == "builtin":
        if control is None:
            raise ConfigError("router.kind = 'builtin' needs the control plane ([control] redis)")
        from console.core.router.builtin import BuiltinRouter

        return BuiltinRouter(config, control)
    executor = executor or router_executor(config)
    if kind == "haproxy":
        from console.core.router.haproxy import HAProxyRouter

        return HAProxyRouter(config, executor)
    if kind == "nginx":
        from console.core.router.nginx import NginxRouter

        return NginxRouter(config, executor)
    from console.core.router.command import CommandRouter

    return CommandRouter(config, executor)
