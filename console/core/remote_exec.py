"""Where router operations run: commands, file swaps and socket exchanges, here or over SSH.

Router adapters (HAProxy, nginx, command) do three kinds of I/O on the router host: run a
shell command, replace a file atomically, and send a line to a socket and read the answer
until the peer closes. :class:`LocalExecutor` does them on this machine;
:class:`SshExecutor` does them on ``[router] ssh`` through :class:`SshPool`, the SSH stack
the application hosts use (commands over an exec channel, stopped with their whole process
group on a timeout; files over SFTP; sockets as direct stream channels).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import os
import shlex
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from console.core.config import HostConfig, SshSettings, SshTarget
from console.core.errors import BackendError, ConfigError, HostKeyError
from console.core.ssh import CommandTimeout, SshPool

# Characters that mean the operator wrote shell, not a plain argv: run those through sh.
_SHELL_SYNTAX = frozenset("|&;<>()$`*?[~\n")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command returned."""

    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.exit_status == 0

    def first_error_line(self) -> str:
        """The first non-empty line of stderr (else stdout): what a tool says went wrong."""
        for text in (self.stderr, self.stdout):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return f"exit status {self.exit_status}"

    def last_error_line(self) -> str:
        """The last non-empty line of stderr (else stdout): where scripts put their reason."""
        for text in (self.stderr, self.stdout):
            for line in reversed(text.splitlines()):
                if line.strip():
                    return line.strip()
        return f"exit status {self.exit_status}"


def needs_shell(command: str) -> bool:
    """Whether ``command`` uses shell syntax (pipes, redirects, variables, globs, VAR=x)."""
    if any(ch in _SHELL_SYNTAX for ch in command):
        return True
    try:
        words = shlex.split(command)
    except ValueError:
        return True
    return not words or "=" in words[0]


def parse_socket_address(address: str) -> tuple[str, int] | str:
    """``tcp://host:port`` -> (host, port); anything else is a unix socket path.

    Raises:
        BackendError: a tcp:// address without a valid port.
    """
    if not address.startswith("tcp://"):
        return address
    host, sep, port = address[len("tcp://") :].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackendError(f"bad socket address {address!r}: expected tcp://HOST:PORT")
    return host.strip("[]"), int(port)


class Executor(abc.ABC):
    """Runs router operations on the router host."""

    where: str
    """Where operations run, for messages: ``local`` or ``ssh user@host``."""

    @abc.abstractmethod
    async def run(self, command: str, time_limit: float) -> CommandResult:
        """Run ``command`` and return its result (a non-zero exit is not an error here).

        Raises:
            BackendError: it could not start, or ran over ``time_limit`` seconds (killed).
        """

    @abc.abstractmethod
    async def read_file(self, path: str) -> bytes | None:
        """The file's content, or None when it does not exist.

        Raises:
            BackendError: it exists but cannot be read.
        """

    @abc.abstractmethod
    async def write_file(self, path: str, data: bytes) -> None:
        """Replace ``path`` atomically: readers see the old content or the new, never half.

        Raises:
            BackendError: the file could not be written; the old content is untouched.
        """

    @abc.abstractmethod
    async def exchange(self, address: str, payload: bytes, time_limit: float) -> bytes:
        """Connect to ``address`` (unix path or ``tcp://host:port``), send ``payload``, and
        read until the peer closes.

        Raises:
            BackendError: connecting, sending or reading failed or took over ``time_limit`` seconds.
        """

    async def aclose(self) -> None:  # noqa: B027 - the local executor holds nothing
        """Release connections."""


class LocalExecutor(Executor):
    """Router operations on this machine."""

    where = "local"

    async def run(self, command: str, time_limit: float) -> CommandResult:
        try:
            # A new session gives the command its own process group, so a timeout kills
            # the whole pipeline and not just the shell.
            if needs_shell(command):
                proc = await asyncio.create_subprocess_shell(
                    command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
            else:
                proc = await asyncio.create_subprocess_exec(
                    *shlex.split(command),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
        except OSError as e:
            raise BackendError(f"cannot run {command!r}: {e.strerror or e}") from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(), time_limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise BackendError(
                f"{command!r} did not finish within {time_limit:g}s and was killed"
            ) from None
        assert proc.returncode is not None
        return CommandResult(
            command, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    # Router files are a few hundred bytes: plain blocking calls cost microseconds, less
    # than handing them to a thread.
    async def read_file(self, path: str) -> bytes | None:
        try:
            return _read_bytes(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BackendError(f"cannot read {path}: {e.strerror or e}") from e

    async def write_file(self, path: str, data: bytes) -> None:
        try:
            _write_atomic(Path(path), data)
        except OSError as e:
            raise BackendError(f"cannot write {path}: {e.strerror or e}") from e

    async def exchange(self, address: str, payload: bytes, time_limit: float) -> bytes:
        target = parse_socket_address(address)

        async def talk() -> bytes:
            if isinstance(target, str):
                reader, writer = await asyncio.open_unix_connection(target)
            else:
                reader, writer = await asyncio.open_connection(*target)
            try:
                writer.write(payload)
                await writer.drain()
                return await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        try:
            return await asyncio.wait_for(talk(), time_limit)
        except TimeoutError:
            raise BackendError(f"{address}: no answer within {time_limit:g}s") from None
        except OSError as e:
            raise BackendError(f"{address}: {e.strerror or e}") from e


def _read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over: atomic on POSIX filesystems."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # Keep the mode of the file being replaced (mkstemp creates 0600), so a server
        # running as another user can still read it.
        try:
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SshExecutor(Executor):
    """Router operations on one host over SSH, through the same :class:`SshPool` that
    reaches the application hosts: one host-key policy (``accept-new``, a missing
    known_hosts file), jump hosts, reconnects and remote-stop behaviour for everything.
    """

    def __init__(
        self,
        target: SshTarget,
        settings: SshSettings,
        *,
        pool: SshPool | None = None,
        identity: str | None = None,
        jump: SshTarget | None = None,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Args:
        target: the router host.
        settings: the ``[ssh]`` section (known_hosts, policy, agent, config, timeouts).
        pool: a pool to share (closed by its owner); else the executor has its own.
        identity: a private key file (else the SSH config and agent choose).
        jump: a jump host to reach the router through.
        connect_options: ``asyncssh.connect`` keywords as tests write them
            (``client_keys``, ``known_hosts``, ``config=None``, ``agent_path=None``);
            translated into the settings above so they go through the pool's policy.
        """
        options = dict(connect_options or {})
        known_hosts: str | None = None
        if options:
            identity, known_hosts, settings = _from_connect_options(options, identity, settings)
        self.target = target
        self.settings = settings
        self.where = f"ssh {target}"
        self.host = HostConfig(
            name="router",
            url="http://router.invalid",  # never probed: the host is only reached over SSH
            ssh=target,
            identity=identity,
            jump=jump,
            known_hosts=known_hosts,
        )
        self._own_pool = pool is None
        self.pool = pool if pool is not None else SshPool(settings)

    async def _connection(self) -> asyncssh.SSHClientConnection:
        return await self.pool.connection(self.host)

    async def run(self, command: str, time_limit: float) -> CommandResult:
        try:
            result = await self.pool.run(self.host, command, timeout=time_limit)
        except CommandTimeout as e:
            raise BackendError(
                f"{self.where}: {command!r} did not finish within {time_limit:g}s and was killed"
            ) from e
        except (HostKeyError, ConfigError, BackendError):
            raise
        except (OSError, asyncssh.Error) as e:
            raise BackendError(f"{self.where}: cannot run {command!r}: {e}") from e
        status = result.exit_status if result.exit_status is not None else 255
        return CommandResult(command, status, result.stdout, result.stderr)

    async def read_file(self, path: str) -> bytes | None:
        conn = await self._connection()
        try:
            async with conn.start_sftp_client() as sftp, sftp.open(path, "rb") as f:
                data = await f.read()
        except asyncssh.SFTPNoSuchFile:
            return None
        except (OSError, asyncssh.Error) as e:
            raise BackendError(f"{self.where}: cannot read {path}: {e}") from e
        return data if isinstance(data, bytes) else data.encode()

    async def write_file(self, path: str, data: bytes) -> None:
        conn = await self._connection()
        directory, _, name = path.rpartition("/")
        tmp = f"{directory}/.{name}.bgconsole.tmp" if directory else f".{name}.bgconsole.tmp"
        try:
            async with conn.start_sftp_client() as sftp:
                try:
                    mode = (await sftp.stat(path)).permissions
                except asyncssh.SFTPNoSuchFile:
                    mode = 0o644
                async with sftp.open(tmp, "wb") as f:
                    await f.write(data)
                    # fsync@openssh.com is an extension; without it the rename still
                    # keeps readers from seeing half a file.
                    with contextlib.suppress(asyncssh.SFTPError):
                        await f.fsync()
                await sftp.chmod(tmp, (mode or 0o644) & 0o7777)
                await sftp.posix_rename(tmp, path)
        except (OSError, asyncssh.Error) as e:
            raise BackendError(f"{self.where}: cannot write {path}: {e}") from e

    async def exchange(self, address: str, payload: bytes, time_limit: float) -> bytes:
        target = parse_socket_address(address)
        conn = await self._connection()

        async def talk() -> bytes:
            if isinstance(target, str):
                reader, writer = await conn.open_unix_connection(target)
            else:
                reader, writer = await conn.open_connection(*target)
            try:
                writer.write(payload)
                data = await reader.read()
            finally:
                writer.close()
            return data if isinstance(data, bytes) else data.encode()

        try:
            return await asyncio.wait_for(talk(), time_limit)
        except TimeoutError:
            raise BackendError(
                f"{self.where}: {address}: no answer within {time_limit:g}s"
            ) from None
        except (OSError, asyncssh.Error) as e:
            raise BackendError(f"{self.where}: {address}: {e}") from e

    async def aclose(self) -> None:
        if self._own_pool:
            await self.pool.aclose()


def _from_connect_options(
    options: dict[str, Any], identity: str | None, settings: SshSettings
) -> tuple[str | None, str | None, SshSettings]:
    """(identity, known_hosts, settings) from asyncssh-style keywords; the target's own
    keys (host, port, username) are ignored: the target already says them.

    Raises:
        ValueError: a keyword the pool has no setting for.
    """
    for key in ("host", "port", "username"):
        options.pop(key, None)
    keys = options.pop("client_keys", None)
    if keys:
        identity = str(next(iter(keys)))
    known = options.pop("known_hosts", None)
    known_hosts = str(known) if isinstance(known, (str, os.PathLike)) else None
    if "config" in options and options.pop("config") is None:
        settings = dataclasses.replace(settings, use_config=False)
    if "agent_path" in options and options.pop("agent_path") is None:
        settings = dataclasses.replace(settings, use_agent=False)
    if options:
        raise ValueError(f"SshExecutor: unsupported connect options {sorted(options)}")
    return identity, known_hosts, settings


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
