"""One sandbox host: its directory, its sample-app process and its embedded SSH server."""

from __future__ import annotations

import asyncio
import shlex
import socket
import sys
from pathlib import Path

import asyncssh
import httpx

from console.core.errors import ConsoleError
from console.demo.processes import ChildProcess, python_env
from console.demo.releases import INITIAL_VERSION, install
from console.demo.sample_app import init_db
from console.demo.ssh_host import SshHost

_READY_TIMEOUT = 8.0


def deploy_script(host_dir: Path) -> str:
    """The host's ``bin/deploy`` script: runs the release installer with this Python."""
    env = python_env()
    return (
        "#!/bin/sh\n"
        "# Installs a release of the demo app on this host: bin/deploy good|bad|VERSION\n"
        f"PYTHONPATH={shlex.quote(env['PYTHONPATH'])}\n"
        "export PYTHONPATH\n"
        f"exec {shlex.quote(sys.executable)} -m console.demo.releases "
        f'--dir {shlex.quote(str(host_dir))} "$@"\n'
    )


class DemoHost:
    """A "host" of one colour: a directory with the app, its data, logs and deploy script."""

    def __init__(
        self,
        colour: str,
        root: Path,
        redis_url: str,
        *,
        host_key: asyncssh.SSHKey,
        client_key: asyncssh.SSHKey,
    ) -> None:
        self.colour = colour
        self.root = root
        self.redis_url = redis_url
        self.port = 0
        self.ssh = SshHost(root, host_key, client_key)
        self._app: ChildProcess | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The app's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        """The app's SQLite database."""
        return self.root / "data" / "app.db"

    @property
    def app_pid(self) -> int | None:
        """The app process id while it runs."""
        return self._app.pid if self._app is not None else None

    @property
    def app_process(self) -> ChildProcess | None:
        """The app's process, once started."""
        return self._app

    def prepare(self) -> None:
        """Lay out the directory: bin/deploy, log/, data/app.db, run/, release 1.0.0."""
        for sub in ("bin", "log", "data", "run", "releases"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        deploy = self.root / "bin" / "deploy"
        deploy.write_text(deploy_script(self.root))
        deploy.chmod(0o755)
        for log in ("access.log", "app.log"):
            (self.root / "log" / log).touch()
        init_db(self.db_path, self.colour)
        install(self.root, INITIAL_VERSION, "good")

    async def start(self) -> None:
        """Start the SSH server and the app; return once the app answers /health.

        Raises:
            ConsoleError: the app did not come up; the message has its last output.
        """
        await self.start_ssh()
        self.listen()
        await self.start_app()

    async def start_ssh(self) -> None:
        """Start the host's SSH server (in this process; its port is then known)."""
        await self.ssh.start()

    def listen(self) -> None:
        """Bind the app's listening socket here, so its port is known before it runs.

        The app inherits the socket, so no other process can take the port between
        picking and binding it (no retry on another port), and a probe that arrives
        while the app is still starting waits in the backlog instead of being refused.
        """
        if self._socket is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self._socket = sock
            self.port = sock.getsockname()[1]

    async def start_app(self) -> None:
        """Run the app on the socket of :meth:`listen`; return once it answers /health.

        Raises:
            ConsoleError: the app did not come up; the message has its last output.
        """
        self.listen()
        assert self._socket is not None
        fd = self._socket.fileno()
        # fmt: off
        argv = [
            sys.executable, "-m", "console.demo.sample_app", "--dir", str(self.root),
            "--fd", str(fd), "--port", str(self.port), "--colour", self.colour,
            "--redis", self.redis_url,
        ]
        # fmt: on
        app = ChildProcess(
            f"{self.colour} app",
            argv,
            log_path=self.root / "log" / "stderr.log",
            cwd=self.root,
            env=python_env(),
            pass_fds=(fd,),
        )
        self._app = app
        try:
            await app.start()
        finally:
            # The app holds its own copy now; ours would keep accepting connections into
            # the backlog after the app died, turning "refused" into a hang.
            self._socket.close()
            self._socket = None
        if await self._wait_ready(app):
            (self.root / "run" / "app.pid").write_text(f"{app.pid}\n")
            return
        error = app.tail(3)
        await app.stop()
        raise ConsoleError(f"the {self.colour} sample app did not start: {error or 'no output'}")

    async def _wait_ready(self, app: ChildProcess) -> bool:
        async with httpx.AsyncClient(timeout=0.5) as client:
            try:
                async with asyncio.timeout(_READY_TIMEOUT):
                    while app.running:
                        try:
                            response = await client.get(self.url + "/health")
                            if response.status_code == 200:
                                return True
                        except httpx.HTTPError:
                            pass
                        await asyncio.sleep(0.05)
            except TimeoutError:
                return False
        return False

    async def stop(self) -> None:
        """Stop the app and the SSH server (and any command still running through it)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._app is not None:
            await self._app.stop()
        await self.ssh.stop()
        (self.root / "run" / "app.pid").unlink(missing_ok=True)
