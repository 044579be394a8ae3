"""One sandbox host: its directory, its sample-app process and its embedded SSH server."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

import asyncssh
import httpx

from console.core.errors import ConsoleError
from console.demo.processes import ChildProcess, python_env
from console.demo.redis_runner import free_port
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

    async def start(self, attempts: int = 3) -> None:
        """Start the SSH server and the app; return once the app answers /health.

        Raises:
            ConsoleError: the app did not come up; the message has its last output.
        """
        await self.ssh.start()
        error = ""
        for _ in range(attempts):
            self.port = free_port()
            # fmt: off
            argv = [
                sys.executable, "-m", "console.demo.sample_app", "--dir", str(self.root),
                "--port", str(self.port), "--colour", self.colour, "--redis", self.redis_url,
            ]
            # fmt: on
            app = ChildProcess(
                f"{self.colour} app",
                argv,
                log_path=self.root / "log" / "stderr.log",
                cwd=self.root,
                env=python_env(),
            )
            self._app = app
            await app.start()
            if await self._wait_ready(app):
                (self.root / "run" / "app.pid").write_text(f"{app.pid}\n")
                return
            # Most likely the port was taken between picking and binding it: try another.
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
        if self._app is not None:
            await self._app.stop()
        await self.ssh.stop()
        (self.root / "run" / "app.pid").unlink(missing_ok=True)
