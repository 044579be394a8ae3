"""A fleet on one machine: tens of OpenSSH hosts, each with its own app, on 127.0.0.2 ...

Every address in 127.0.0.0/8 is loopback on Linux, so host ``app7`` is an ``sshd`` and an
HTTP backend both bound to 127.0.0.8: distinct addresses like real machines, nothing
leaves the box. The hosts share one client key and one known_hosts file (what a config
for a fleet has). Servers start and stop concurrently (threads: each start is a process
spawn plus a poll of its port), so twenty hosts are up in a couple of seconds.
"""

from __future__ import annotations

import concurrent.futures
import json
import shlex
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from servers import HttpBackend, ManagedServer, SshServer, _mkdtemp

FLEET_SIZE = 20
FIRST_ADDRESS = 2
"""127.0.0.2 is the first host: 127.0.0.1 stays for the control plane and the rest."""
_T = TypeVar("_T")


def fleet_addresses(size: int = FLEET_SIZE) -> list[str]:
    """``127.0.0.2`` ... ``127.0.0.<size+1>``."""
    if not 1 <= size <= 250:
        raise ValueError(f"a fleet on 127.0.0.x holds 1 to 250 hosts, not {size}")
    return [f"127.0.0.{FIRST_ADDRESS + i}" for i in range(size)]


@dataclass(frozen=True)
class FleetHost:
    """One host of the fleet: its name, sshd, app and working directory."""

    name: str
    ssh: SshServer
    app: HttpBackend
    workdir: Path

    @property
    def address(self) -> str:
        return self.ssh.address

    @property
    def home(self) -> Path:
        """``$HOME`` of the host's SSH sessions (``~/...`` paths land here)."""
        assert isinstance(self.ssh, FleetSshServer)
        return self.ssh.home


def _concurrently(work: Callable[[_T], object], items: Iterable[_T]) -> None:
    items = list(items)
    if not items:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()  # the first failure is raised, after every start has ended


class FleetSshServer(SshServer):
    """An sshd whose sessions get ``HOME=home``: each host of the fleet its own home
    directory, as separate machines have (``~/app.git`` of the git pipeline is one per
    host, not one bare repository shared by twenty "machines")."""

    def __init__(self, home: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.home = home

    def _prepare(self) -> None:
        super()._prepare()
        self.home.mkdir(exist_ok=True)
        with self.config_path.open("a") as config:
            config.write(f"SetEnv HOME={self.home}\n")


class Fleet:
    """``size`` hosts ``app1`` ... on 127.0.0.2 ...: sshd + app each, started by ``start()``."""

    def __init__(self, size: int = FLEET_SIZE, *, colour: str = "blue", version: str = "1.0.0"):
        self.dir = _mkdtemp()
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.hosts: list[FleetHost] = []
        for i, address in enumerate(fleet_addresses(size), start=1):
            workdir = self.dir / f"app{i}"
            workdir.mkdir()
            self.hosts.append(
                FleetHost(
                    f"app{i}",
                    FleetSshServer(
                        self.dir / f"app{i}-home", client_key=self.client_key, address=address
                    ),
                    HttpBackend(colour, version, host=address),
                    workdir,
                )
            )
        self.known_hosts_path = self.dir / "known_hosts"
        self.known_hosts_path.write_text("".join(h.ssh.known_hosts_line + "\n" for h in self.hosts))
        self.client_key_path = self.hosts[0].ssh.client_key_path

    def servers(self) -> Iterator[ManagedServer]:
        for host in self.hosts:
            yield host.ssh
            yield host.app

    def start(self) -> Fleet:
        try:
            _concurrently(lambda s: s.start(), self.servers())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        _concurrently(lambda s: s.close(), self.servers())

    def reset(self, version: str = "1.0.0") -> None:
        """Every app back to mode ok at ``version`` (between tests sharing the fleet)."""
        _concurrently(lambda h: h.app.control({"mode": "ok", "version": version}), self.hosts)

    def host(self, name: str) -> FleetHost:
        return next(h for h in self.hosts if h.name == name)

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


CURL = shutil.which("curl")
"""Steps post to the apps with curl when there is one: twenty hosts share this machine's
cores, and twenty Pythons importing urllib at once take seconds of CPU (python3 else)."""


def _post(app: HttpBackend, body: str) -> str:
    """A shell command POSTing ``body`` (shell text, e.g. a ``printf``) to ``/__control``."""
    url = f"{app.url}/__control"
    if CURL is None:
        script = (
            "import sys, urllib.request; "
            "r = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(), "
            "headers={'Content-Type': 'application/json'}); "
            "urllib.request.urlopen(r, timeout=5).read()"
        )
        return f"{body} | {shlex.join(['python3', '-c', script, url])}"
    curl = [CURL, "-sSf", "-m", "5", "-H", "Content-Type: application/json", "--data-binary"]
    return f"{body} | {shlex.join([*curl, '@-', url])} >/dev/null"


def version_step(app: HttpBackend) -> str:
    """A shell step that tells ``app`` it now runs ``{ref}`` (the "restart")."""
    # {ref} is replaced shell-quoted by the runner; printf puts it into the JSON.
    return _post(app, """printf '{"version": "%s"}' {ref}""")


def mode_step(app: HttpBackend, mode: str) -> str:
    """A shell step that puts ``app`` in ``mode`` (``500``: the release is broken)."""
    return _post(app, shlex.join(["printf", "%s", json.dumps({"mode": mode})]))


def release_steps(host: FleetHost, *, broken: bool = False) -> list[str]:
    """Deploy steps for one host: note the ref in the workdir, then "restart" on it."""
    steps = ["printf %s {ref} > VERSION", version_step(host.app)]
    if broken:
        steps.append(mode_step(host.app, "500"))
    return steps


def fleet_config_data(
    fleet: Fleet,
    control_url: str,
    *,
    name: str,
    steps: Callable[[FleetHost], list[str]] = release_steps,
    logs: Callable[[FleetHost], dict[str, str]] | None = None,
    health_timeout: float = 3.0,
    deploy_timeout: float = 60.0,
) -> dict[str, Any]:
    """TOML data: blue is the fleet (``app1`` ...), green a closed port (never deployed)."""
    hosts = []
    for host in fleet.hosts:
        entry: dict[str, Any] = {
            "name": host.name,
            "url": host.app.url,
            "version": "json:version",
            "ssh": host.ssh.target,
            "workdir": str(host.workdir),
            "deploy": steps(host),
        }
        if logs is not None:
            entry["logs"] = logs(host)
        hosts.append(entry)
    return {
        "console": {"name": name},
        "control": {"redis": control_url, "timeout": 2.0},
        "router": {"kind": "builtin"},
        "failover": {"interval": 0.1, "timeout": 0.3},
        "ssh": {
            "use_config": False,
            "use_agent": False,
            "known_hosts": str(fleet.known_hosts_path),
            "connect_timeout": 5.0,
            "keepalive": 0.0,
            "command_timeout": 30.0,
        },
        "env": {
            "blue": {
                "identity": str(fleet.client_key_path),
                "health_timeout": health_timeout,
                "deploy_timeout": deploy_timeout,
                "hosts": hosts,
            },
            "green": {"url": "http://127.0.0.1:9"},
        },
    }
