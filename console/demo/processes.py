"""Child processes of the sandbox: started in their own session, stopped by process group."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from console.core.errors import ConsoleError

_STOP_TIMEOUT = 5.0


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a forked child before exec: get SIGTERM when the sandbox process dies.

    The children run in their own sessions, so nothing else would stop them if the
    sandbox were killed with SIGKILL; Linux's parent-death signal covers that case.
    Elsewhere this does nothing (the normal stop path still stops them).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child running this package's code with ``python -m``.

    The package's parent directory goes first on PYTHONPATH so a source checkout works the
    same as an installed wheel (the child may run from a different working directory).
    """
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = package_parent + (os.pathsep + existing if existing else "")
    # Children must not find the user's own config by accident.
    env.pop("BGCONSOLE_CONFIG", None)
    if extra:
        env.update(extra)
    return env


class ChildProcess:
    """One long-running child: its output goes to a log file, it leads its own group.

    Its own session means a terminal's Ctrl+C reaches only the sandbox, which then stops
    the children in order, and stopping the group also stops anything the child started.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stdin = stdin
        """A file descriptor for the child's stdin (default /dev/null)."""
        self.pass_fds = tuple(pass_fds)
        """Descriptors the child inherits (a listening socket bound by the sandbox)."""
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs (or has not been reaped yet)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process has not exited."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited."""
        return self._proc.returncode if self._proc is not None else None

    async def start(self) -> None:
        """Start the process.

        Raises:
            ConsoleError: the program could not be executed.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL if self.stdin is None else self.stdin,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                    pass_fds=self.pass_fds,
                )
            except OSError as e:
                raise ConsoleError(f"cannot start {self.name} ({self.argv[0]}): {e}") from e

    def tail(self, lines: int = 10) -> str:
        """The last lines of the process's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        # The group id is the leader's pid; it cannot be recycled while the leader is
        # unreaped, and we only reap it in stop().
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float = _STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap the leader."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self._proc.wait()
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
                await self._proc.wait()
        # Children of the leader that outlived it are still in the group; the leader is
        # gone, so SIGKILL the group id directly (it stays reserved while members live).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
