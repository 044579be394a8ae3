"""The sandbox's lifecycle: start every piece within seconds, stop all of it, clean up.

Layout of the sandbox directory (nothing is written outside it)::

    bgconsole.toml    the generated config          known_hosts   the SSH host keys
    keys/id_ed25519   the client key                 agent.log     the agent's log
    state.json        pids and ports (for scripts)   redis/<name>/ each Redis's dir
    blue/ green/      the hosts: bin/deploy, current -> releases/<v>, data/app.db, log/

Three redis-servers: ``control`` (the control plane) and one per colour for its flags,
as in production where each environment reads flags from its own Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis.asyncio as aioredis

from console.core.config import Config
from console.core.control import ControlPlane
from console.core.errors import ConsoleError, UsageError
from console.core.models import Colour
from console.demo import config_file
from console.demo.config_file import HostSpec
from console.demo.host import DemoHost
from console.demo.processes import ChildProcess, python_env
from console.demo.redis_runner import RedisRunner, find_redis_server, free_port
from console.demo.ssh_host import generate_key, write_private_key
from console.demo.tour import SandboxInfo, cli_command
from console.demo.traffic import TrafficGenerator

_AGENT_READY_TIMEOUT = 8.0
INITIAL_FLAGS = {"uploads": "ON", "banner": "OFF"}
"""Flag values both colours start with."""


def agent_available() -> bool:
    """Whether this build has the agent (``bgconsole serve``)."""
    return importlib.util.find_spec("console.cli.serve") is not None


class Sandbox:
    """Everything ``bgconsole demo`` runs, as an async context manager.

    Args:
        directory: where to build it; None makes a temp dir. An existing directory must be
            empty; a directory the sandbox created is removed on stop, an existing one is
            emptied.
        keep: leave the files on stop (the processes still stop).
        traffic: run the traffic generator through the router.
    """

    def __init__(self, directory: Path | None, *, keep: bool = False, traffic: bool = True) -> None:
        self._requested = directory
        self.keep = keep
        self.traffic_enabled = traffic
        self.directory = Path()
        self._created_dir = False
        self.redis: dict[str, RedisRunner] = {}
        self.hosts: dict[str, DemoHost] = {}
        self.agent: ChildProcess | None = None
        self.traffic: TrafficGenerator | None = None
        self.config: Config | None = None
        self.router_port = 0
        self.info: SandboxInfo | None = None
        self.startup_seconds = 0.0
        self._agent_go: int | None = None
        """The write end of the waiting agent's stdin (see agent_runner)."""

    @property
    def config_path(self) -> Path:
        """The generated bgconsole.toml."""
        return self.directory / "bgconsole.toml"

    async def __aenter__(self) -> Sandbox:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _make_dir(self) -> None:
        if self._requested is None:
            self.directory = Path(_mkdtemp())
            self._created_dir = True
            return
        directory = self._requested.expanduser().absolute()
        if directory.exists():
            if not directory.is_dir():
                raise UsageError(f"--dir {directory}: exists and is not a directory")
            if any(directory.iterdir()):
                raise UsageError(f"--dir {directory}: not empty; give a new or empty directory")
        else:
            try:
                directory.mkdir(parents=True)
            except OSError as e:
                raise UsageError(f"--dir {directory}: cannot create: {e.strerror}") from e
            self._created_dir = True
        self.directory = directory

    async def start(self, *, while_agent_loads: Callable[[], object] | None = None) -> SandboxInfo:
        """Build the sandbox and start everything; on failure call :meth:`stop`.

        What depends on what decides the order; everything else runs at once: the agent
        process starts first (its imports are the longest step; it waits, see
        :mod:`console.demo.agent_runner`), then Redis and both SSH servers together, then
        the config, the control plane's first colour, the flags and both apps together,
        and last the agent is released and its router awaited.

        Args:
            while_agent_loads: work for this process while the agent's process loads its
                code, before anything time-sensitive runs here (``bgconsole demo`` imports
                the UI): it may block the event loop, as no Redis call is in flight yet.

        Raises:
            ConsoleError: a binary is missing (the message says what to install), or a
                piece did not start.
        """
        started = time.perf_counter()
        redis_binary = find_redis_server()  # before making anything: fail fast and clean
        self._make_dir()
        self.router_port = free_port()
        if agent_available():
            await self._spawn_agent()
        if while_agent_loads is not None:
            while_agent_loads()
        client_key = generate_key()
        identity = self.directory / "keys" / "id_ed25519"
        write_private_key(client_key, identity)

        for name in ("control", "blue", "green"):
            self.redis[name] = RedisRunner(name, redis_binary, self.directory / "redis" / name)
        for colour in ("blue", "green"):
            host = DemoHost(
                colour,
                self.directory / colour,
                self.redis[colour].url,
                host_key=generate_key(),
                client_key=client_key,
            )
            host.prepare()
            self.hosts[colour] = host
        await asyncio.gather(
            *(r.start() for r in self.redis.values()),
            *(h.start_ssh() for h in self.hosts.values()),
        )
        for colour, host in self.hosts.items():
            host.redis_url = self.redis[colour].url  # known once its redis-server runs
            host.listen()
        known_hosts = self.directory / "known_hosts"
        known_hosts.write_text("".join(h.ssh.known_hosts_line + "\n" for h in self.hosts.values()))

        self.config = config_file.write(
            self.config_path,
            config_file.render(
                control_redis=self.redis["control"].url,
                router_listen=f"127.0.0.1:{self.router_port}",
                known_hosts=known_hosts,
                identity=identity,
                hosts=[
                    HostSpec(c, h.url, h.ssh.port, h.root, self.redis[c].url, h.db_path)
                    for c, h in self.hosts.items()
                ],
            ),
        )
        await asyncio.gather(
            self._init_control_plane(self.config),
            self._set_initial_flags(),
            *(h.start_app() for h in self.hosts.values()),
        )
        router_url = await self._release_agent() if self.agent is not None else None
        if router_url and self.traffic_enabled:
            self.traffic = TrafficGenerator(router_url)
            self.traffic.start()
        self.info = SandboxInfo(
            directory=self.directory,
            config_path=self.config_path,
            router_url=router_url,
            app_urls={c: h.url for c, h in self.hosts.items()},
            ssh_targets={c: f"127.0.0.1:{h.ssh.port}" for c, h in self.hosts.items()},
            redis_urls={n: r.url for n, r in self.redis.items()},
            agent_log=self.directory / "agent.log" if router_url else None,
            traffic=self.traffic is not None,
            keep=self.keep,
            command=cli_command(),
        )
        self._write_state()
        self.startup_seconds = time.perf_counter() - started
        return self.info

    async def _set_initial_flags(self) -> None:
        for colour in ("blue", "green"):
            client = aioredis.Redis.from_url(self.redis[colour].url, socket_timeout=2.0)
            try:
                await client.mset({f"flag:{k}": v for k, v in INITIAL_FLAGS.items()})
            finally:
                await client.aclose()

    async def _init_control_plane(self, config: Config) -> None:
        control = ControlPlane.from_config(config.control, config.console.name)
        try:
            await control.ensure_active(Colour.BLUE)
        finally:
            await control.aclose()

    async def _spawn_agent(self) -> None:
        """Start the agent's process; it loads its code and waits for :meth:`_release_agent`."""
        # fmt: off
        argv = [
            sys.executable, "-m", "console.demo.agent_runner",
            "serve", "-c", str(self.config_path),
        ]
        # fmt: on
        read_end, self._agent_go = os.pipe()
        self.agent = ChildProcess(
            "agent",
            argv,
            log_path=self.directory / "agent.log",
            cwd=self.directory,
            env=python_env(),
            stdin=read_end,
        )
        try:
            await self.agent.start()
        finally:
            os.close(read_end)

    async def _release_agent(self) -> str:
        """Let the waiting agent run ``serve``; return the router URL once it listens."""
        assert self.agent is not None
        if self._agent_go is not None:
            with contextlib.suppress(OSError):  # it died: reported below with its log
                os.write(self._agent_go, b"go\n")
            os.close(self._agent_go)
            self._agent_go = None
        deadline = time.monotonic() + _AGENT_READY_TIMEOUT
        while not await _port_open(self.router_port):
            if not self.agent.running or time.monotonic() > deadline:
                tail = self.agent.tail(3).replace("\n", " | ")
                raise ConsoleError(f"the agent did not start its router: {tail or 'no output'}")
            await asyncio.sleep(0.02)
        return f"http://127.0.0.1:{self.router_port}"

    def exited(self) -> list[str]:
        """One line per sandbox process that exited while it should be running."""
        children: list[tuple[ChildProcess | None, Path | None]] = [
            (self.agent, self.directory / "agent.log")
        ]
        children += [(h.app_process, h.root / "log" / "stderr.log") for h in self.hosts.values()]
        children += [(r.process, r.directory / "redis.log") for r in self.redis.values()]
        return [
            f"{child.name} exited with status {child.returncode} (see {log})"
            for child, log in children
            if child is not None and child.returncode is not None
        ]

    def _write_state(self) -> None:
        """Pids and ports, for scripts and tests that check nothing is left behind."""
        pids = {f"redis-{n}": r.pid for n, r in self.redis.items()}
        pids |= {f"app-{c}": h.app_pid for c, h in self.hosts.items()}
        pids["agent"] = self.agent.pid if self.agent else None
        state = {
            "pid": os.getpid(),
            "children": {k: v for k, v in pids.items() if v is not None},
            "router_port": self.router_port or None,
            "app_ports": {c: h.port for c, h in self.hosts.items()},
            "ssh_ports": {c: h.ssh.port for c, h in self.hosts.items()},
            "redis_ports": {n: r.port for n, r in self.redis.items()},
        }
        (self.directory / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    async def stop(self) -> None:
        """Stop everything started (traffic, agent, apps, SSH, Redis), then clean up.

        Safe to call after a partial start and more than once.
        """
        if self.traffic is not None:
            await self.traffic.stop()
            self.traffic = None
        if self._agent_go is not None:
            os.close(self._agent_go)  # an agent still waiting reads end of file and exits
            self._agent_go = None
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None
        await asyncio.gather(*(h.stop() for h in self.hosts.values()), return_exceptions=True)
        self.hosts = {}
        await asyncio.gather(*(r.stop() for r in self.redis.values()), return_exceptions=True)
        self.redis = {}
        if not self.keep and self.directory != Path():
            self._remove_files()

    def _remove_files(self) -> None:
        if self._created_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
        elif self.directory.is_dir():
            for entry in self.directory.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self.directory = Path()


def _mkdtemp() -> str:
    return tempfile.mkdtemp(prefix="bgconsole-demo-")


async def _port_open(port: int) -> bool:
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
