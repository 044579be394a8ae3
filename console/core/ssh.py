"""SSH to the hosts over asyncssh: one cached connection per host, streaming commands, SFTP.

Follows OpenSSH conventions: ``~/.ssh/config`` and the agent (each can be turned off in
``[ssh]``), host keys verified against known_hosts (unknown or changed keys are refused
with the fix in the message; ``host_key_policy = "accept-new"`` learns unknown keys but
still refuses changed ones), jump hosts as ProxyJump does.

Every remote command is wrapped so that closing the stream (a timeout, a cancel, a lost
connection) kills its whole process tree: OpenSSH ignores signal requests for root logins,
and a ``tail -F`` of a quiet file would otherwise only notice the closed channel at its
next write. The wrapper (POSIX sh, see ``wrap_killable``) puts the command in its own
session and kills that process group when the channel's stdin reaches EOF, which sshd
delivers as soon as the channel closes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import random
import shlex
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncssh

from console.core.config import HostConfig, SshSettings, SshTarget
from console.core.errors import BackendError, ConfigError, HostKeyError, HostUnreachable

MAX_LINE = 64 * 1024
"""Characters kept of one output line; the rest of a longer line is dropped (marked)."""
TRUNCATED = " …[line truncated]"
_WINDOW = 2 * 1024 * 1024
"""SSH receive window per channel (OpenSSH's and asyncssh's default): bytes a host may send
beyond what has been read."""
_READ_SIZE = 2 * _WINDOW
"""Bytes asked of the channel per read (one read becomes one ``LineBatch``): all asyncssh
holds, which is at most a window and a packet.

Smaller reads break the flow control: when a paused channel resumes, asyncssh (2.24)
re-opens the whole window as soon as it delivers the first held-back packet, though the
stream pauses again after a packet or two when a read made only that much room. A slow
reader then buffers without limit: 120 MB held for 4 MB read. A read that empties the
buffer makes room for everything held back, so the window again bounds the buffer."""
_QUEUE_BATCHES = 1
"""Batches read ahead of the consumer per stream (each up to ``_READ_SIZE``); when it is
full, reading stops and the host is paused by the SSH window (backpressure)."""
_CLOSE_TIMEOUT = 2.0

Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)`` during SFTP transfers."""


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line of a remote command's output, without its line ending."""

    host: str
    stream: Literal["stdout", "stderr"]
    text: str
    at: float
    """Wall-clock time (epoch seconds) the line arrived."""


def _new_line(host: str, stream: Literal["stdout", "stderr"], text: str, at: float) -> OutputLine:
    """``OutputLine(host, stream, text, at)``, about 40% faster.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; at a
    million lines a second that alone costs half a second, so the hot path fills the slots
    through their descriptors directly. Same object, same equality.
    """
    line = _object_new(OutputLine)
    _set_host(line, host)
    _set_stream(line, stream)
    _set_text(line, text)
    _set_at(line, at)
    return line


_object_new = object.__new__
_set_host: Callable[[OutputLine, object], None] = vars(OutputLine)["host"].__set__
_set_stream: Callable[[OutputLine, object], None] = vars(OutputLine)["stream"].__set__
_set_text: Callable[[OutputLine, object], None] = vars(OutputLine)["text"].__set__
_set_at: Callable[[OutputLine, object], None] = vars(OutputLine)["at"].__set__


@dataclass(frozen=True, slots=True)
class LineBatch:
    """Consecutive lines of one output stream of a remote command, as one read delivered them.

    ``SshPool.stream_batches`` yields these; ``SshPool.stream`` yields their lines one
    ``OutputLine`` at a time. Never empty.
    """

    host: str
    stream: Literal["stdout", "stderr"]
    lines: tuple[str, ...]
    """The lines' text, in order, without their line endings."""
    at: float
    """Wall-clock time (epoch seconds) the lines arrived."""

    def output_lines(self) -> list[OutputLine]:
        """The lines as ``OutputLine`` objects (what ``SshPool.stream`` yields)."""
        host, stream, at = self.host, self.stream, self.at
        return [_new_line(host, stream, text, at) for text in self.lines]


@dataclass(frozen=True, slots=True)
class CommandExit:
    """The end of a streamed command: the last item of ``stream`` and ``stream_batches``."""

    host: str
    exit_status: int | None
    """None when the command died of a signal or the channel closed without a status."""
    signal: str | None
    duration: float


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A finished command with its whole output."""

    host: str
    exit_status: int | None
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_status == 0


class SshAuthFailed(BackendError):
    """The host refused every key offered (wrong user, key or authorized_keys)."""


class CommandFailed(BackendError):
    """A command run with ``check=True`` exited with a non-zero status."""

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result


class CommandTimeout(BackendError):
    """A command ran longer than its timeout and was stopped."""


class Backoff:
    """Exponential backoff with jitter, for reconnect loops.

    Jitter spreads the reconnects of many consoles after a shared outage so they do not
    hammer a recovering host in lockstep.
    """

    def __init__(self, initial: float = 0.25, maximum: float = 10.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt: between half and all of the current step."""
        step = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return random.uniform(step / 2, step)

    def reset(self) -> None:
        """Start over after a success."""
        self.attempts = 0


def describe(host: HostConfig) -> str:
    """``name (user@host:port)``, how messages name a host."""
    target = str(host.ssh) if host.ssh else "no ssh target"
    return f"{host.name} ({target})"


def _target(host: HostConfig) -> SshTarget:
    if host.ssh is None:
        raise ConfigError(
            f'host {host.name!r}: env.<colour>.ssh is missing (set ssh = "user@host:port")'
        )
    return host.ssh


def _keyscan_hint(target: SshTarget, known_hosts: str) -> str:
    port = f"-p {target.port} " if target.port and target.port != 22 else ""
    return f"ssh-keyscan {port}{target.host} >> {known_hosts}"


def _known_hosts_name(target: SshTarget) -> str:
    if target.port and target.port != 22:
        return f"[{target.host}]:{target.port}"
    return target.host


# Run by the watcher once the channel is gone: SIGTERM to the group, SIGKILL to whatever
# is still alive after up to 2 s. Zombies do not count as alive (a container's PID 1 may
# never reap the orphans), and without ps only kill -0 can tell. It is exec'd with the
# group's id as its only argument, so it no longer carries the command line it stops.
_STOP = """\
c=$1
alive() {
  if command -v ps >/dev/null 2>&1; then
    ps -A -o pgid= -o stat= 2>/dev/null | grep -q "^ *$c  *[^Z]"
  else
    kill -0 -"$c" 2>/dev/null
  fi
}
kill -TERM -"$c" 2>/dev/null || kill -TERM "$c" 2>/dev/null
i=0
while [ "$i" -lt 20 ] && alive; do sleep 0.1 2>/dev/null || sleep 1; i=$((i + 1)); done
kill -KILL -"$c" 2>/dev/null
"""

# The wrapper, in POSIX sh (a Debian host's /bin/sh is dash). $1 is the command; $2 is
# "input" when the client sends "BYTES\n" and then that many bytes for the command's stdin.
# The channel's stdin then stays open with nothing more on it, so its EOF still means
# "the channel closed", with or without input. dash's kill rejects "--" before a negative
# PID ("Illegal number"), so the group is signalled as plain -PGID. The watcher ignores
# USR1 (the wrapper's "the command ended by itself, stop watching") once it is stopping.
_WRAPPER = (
    """\
exec 3<&0
if [ "$2" = input ]; then
  IFS= read -r n || exit 125
  t=$(mktemp) || exit 125
  head -c "$n" >"$t" || { rm -f "$t"; exit 125; }
  exec 4<"$t"; rm -f "$t"
else
  exec 4</dev/null
fi
if command -v setsid >/dev/null 2>&1; then setsid sh -c "$1" <&4 3<&- 4<&- &
else sh -c "$1" <&4 3<&- 4<&- &
fi
c=$!
exec 4<&-
{
  while read -r _; do :; done
  trap '' USR1
  exec sh -c """
    + shlex.quote(_STOP)
    + """ bgconsole-stop "$c"
} <&3 >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$c"; s=$?
kill -USR1 "$w" 2>/dev/null
exit "$s"
"""
)
KILL_GRACE = 2.0
"""Seconds a stopped command has between SIGTERM and SIGKILL (the wrapper's 20 x 0.1 s)."""


def wrap_killable(command: str, *, with_input: bool = False) -> str:
    """Wrap a shell command so that closing the SSH channel kills it and all its children.

    OpenSSH ignores signal requests for root logins, so the host must notice the close by
    itself. The command runs in its own session (``setsid``: one process group for its
    whole tree); a watcher reads the channel's stdin and, at EOF (sshd closes it when the
    channel closes, the client disconnects or the connection dies), sends the group
    SIGTERM, then SIGKILL after ``KILL_GRACE`` seconds if anything is left. A command that
    ends by itself stops the watcher first, so what it started in the background
    (``server &`` in a deploy step) keeps running.

    ``with_input``: the client sends ``len(data)`` and a newline, then ``data``, which the
    command reads as its stdin (buffered in a temp file on the host), and never sends EOF.
    Without ``setsid`` on the host, only the command's shell is killed.
    """
    args = f"bgconsole {shlex.quote(command)}" + (" input" if with_input else "")
    return f"sh -c {shlex.quote(_WRAPPER)} {args}"


def in_workdir(host: HostConfig, command: str) -> str:
    """The command prefixed with ``cd -- WORKDIR &&`` when the host has a workdir.

    ``--``: a workdir is a value, never an option, even one that starts with ``-``.
    """
    if host.workdir:
        return f"cd -- {shlex.quote(host.workdir)} && {command}"
    return command


class _HostKeyClient(asyncssh.SSHClient):
    """Remembers the key the server offered and applies the accept-new policy."""

    def __init__(self, known_hosts: Path | None, accept_new: bool, name: str) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.name = name
        self.offered: asyncssh.SSHKey | None = None
        self.had_entry = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # Called only for keys known_hosts does not trust: unknown or changed.
        self.offered = key
        self.had_entry = self._has_entry(host, addr, port)
        if self.accept_new and not self.had_entry and self.known_hosts is not None:
            self._learn(key)
            return True
        return False

    def _has_entry(self, host: str, addr: str, port: int) -> bool:
        if self.known_hosts is None or not self.known_hosts.is_file():
            return False
        try:
            matched = asyncssh.match_known_hosts(
                str(self.known_hosts), host, addr, port if port != 22 else None
            )
        except (OSError, ValueError):
            return False
        return bool(matched[0] or matched[1])

    def _learn(self, key: asyncssh.SSHKey) -> None:
        assert self.known_hosts is not None
        line = f"{self.name} {key.export_public_key('openssh').decode().strip()}\n"
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.known_hosts.open("a", encoding="utf-8") as f:
            f.write(line)


class SshPool:
    """SSH connections to the hosts, one per target, shared by every command and stream."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self._conns: dict[tuple[object, ...], asyncssh.SSHClientConnection] = {}
        self._locks: dict[tuple[object, ...], asyncio.Lock] = {}
        self._closed = False

    # -- connections ----------------------------------------------------------------------

    def _key(self, host: HostConfig) -> tuple[object, ...]:
        return (_target(host), host.identity, host.jump, host.known_hosts)

    def _known_hosts_path(self, host: HostConfig) -> Path:
        return Path(host.known_hosts or self.settings.known_hosts).expanduser()

    async def connection(self, host: HostConfig) -> asyncssh.SSHClientConnection:
        """The host's connection: the cached one while it is open, else a new one.

        Raises:
            ConfigError: the host has no ssh target, or its identity file is missing.
            HostKeyError: the host key is unknown or changed.
            SshAuthFailed: no key was accepted.
            HostUnreachable: the host (or its jump host) could not be reached in time.
        """
        if self._closed:
            raise HostUnreachable(f"{describe(host)}: SSH pool already closed")
        key = self._key(host)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and not conn.is_closed():
                return conn
            self._conns.pop(key, None)
            conn = await self._connect(host)
            self._conns[key] = conn
            return conn

    def forget(self, host: HostConfig) -> None:
        """Drop the host's cached connection (closing it) so the next use reconnects."""
        conn = self._conns.pop(self._key(host), None)
        if conn is not None:
            conn.close()

    def _options(self, host: HostConfig, target: SshTarget, known_hosts: Path) -> dict[str, Any]:
        """asyncssh.connect options; only what is set, so ~/.ssh/config fills the rest."""
        settings = self.settings
        options: dict[str, Any] = {
            "connect_timeout": settings.connect_timeout,
            "keepalive_interval": settings.keepalive,
            "keepalive_count_max": 3,
        }
        if target.user:
            options["username"] = target.user
        if target.port:
            options["port"] = target.port
        if not settings.use_config:
            options["config"] = None
        if not settings.use_agent:
            options["agent_path"] = None
        if host.identity:
            identity = Path(host.identity).expanduser()
            if not identity.is_file():
                raise ConfigError(f"{describe(host)}: identity file {identity} does not exist")
            options["client_keys"] = [str(identity)]
        # A missing known_hosts file trusts nothing (asyncssh would fall back to ~/.ssh).
        options["known_hosts"] = str(known_hosts) if known_hosts.is_file() else ([], [], [])
        return options

    async def _connect(self, host: HostConfig) -> asyncssh.SSHClientConnection:
        target = _target(host)
        settings = self.settings
        known_hosts = self._known_hosts_path(host)
        options = self._options(host, target, known_hosts)
        if host.jump is not None:
            jump_host = dataclasses.replace(
                host, name=f"{host.name} jump", ssh=host.jump, jump=None, workdir=None
            )
            options["tunnel"] = await self.connection(jump_host)
        clients: list[_HostKeyClient] = []

        def client_factory() -> asyncssh.SSHClient:
            client = _HostKeyClient(
                known_hosts, settings.host_key_policy == "accept-new", _known_hosts_name(target)
            )
            clients.append(client)
            return client

        try:
            async with asyncio.timeout(settings.connect_timeout + 1.0):
                return await asyncssh.connect(
                    target.host,
                    client_factory=client_factory,
                    **options,
                )
        except asyncssh.HostKeyNotVerifiable as e:
            client = clients[-1] if clients else None
            raise self._host_key_error(host, target, known_hosts, client) from e
        except asyncssh.PermissionDenied as e:
            user = target.user or "the configured user"
            identity = host.identity or "the default keys and agent"
            raise SshAuthFailed(
                f"{describe(host)}: permission denied for user {user} with {identity}; "
                "check the user and that the key is in the host's authorized_keys"
            ) from e
        except TimeoutError as e:
            raise HostUnreachable(
                f"{describe(host)}: no SSH connection within {settings.connect_timeout:g} s"
            ) from e
        except (OSError, asyncssh.Error) as e:
            reason = getattr(e, "reason", None) or str(e) or type(e).__name__
            raise HostUnreachable(f"{describe(host)}: SSH connection failed: {reason}") from e

    def _host_key_error(
        self,
        host: HostConfig,
        target: SshTarget,
        known_hosts: Path,
        client: _HostKeyClient | None,
    ) -> HostKeyError:
        shown = str(known_hosts).replace(str(Path.home()), "~", 1)  # as the user wrote it
        key = client.offered if client else None
        fingerprint = f"{key.get_algorithm()} {key.get_fingerprint()}" if key else "unknown key"
        if client is not None and client.had_entry:
            return HostKeyError(
                f"{describe(host)}: host key CHANGED ({fingerprint}) and does not match "
                f"{shown}; this may be an attack. If the host was reinstalled, remove the old "
                f"entry with: ssh-keygen -R '{_known_hosts_name(target)}' -f {shown}"
            )
        return HostKeyError(
            f"{describe(host)}: host key not in {shown} ({fingerprint}); "
            f"trust it with: {_keyscan_hint(target, shown)}"
        )

    # -- commands -------------------------------------------------------------------------

    async def _process(
        self, host: HostConfig, command: str, input: str | None
    ) -> asyncssh.SSHClientProcess[bytes]:
        full = wrap_killable(in_workdir(host, command), with_input=input is not None)
        for attempt in (1, 2):
            conn = await self.connection(host)
            try:
                return await conn.create_process(full, encoding=None, window=_WINDOW)
            except (asyncssh.Error, OSError) as e:
                # A cached connection can die between uses (host restarted): reconnect once.
                if attempt == 2 or not conn.is_closed():
                    raise HostUnreachable(f"{describe(host)}: cannot start command: {e}") from e
                self.forget(host)
        raise AssertionError("unreachable")

    async def stream(
        self,
        host: HostConfig,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the agreed API; bounds the command)
        input: str | None = None,
    ) -> AsyncGenerator[OutputLine | CommandExit, None]:
        """Run a command and yield its output line by line as it arrives, then its exit.

        The lines of ``stream_batches``, one ``OutputLine`` each; see there for the details
        and errors. Readers of large outputs should prefer ``stream_batches``: an object and
        a generator step per line cost more than the SSH transport itself (about 0.4 s per
        million lines).
        """
        batches = self.stream_batches(host, command, timeout=timeout, input=input)
        async with contextlib.aclosing(batches):
            async for item in batches:
                if isinstance(item, LineBatch):
                    name, tag, at = item.host, item.stream, item.at
                    for text in item.lines:
                        yield _new_line(name, tag, text, at)
                else:
                    yield item

    async def stream_batches(
        self,
        host: HostConfig,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds the command, as in stream)
        input: str | None = None,
    ) -> AsyncGenerator[LineBatch | CommandExit, None]:
        """Run a command and yield its output as it arrives, a batch of lines per read.

        Each ``LineBatch`` holds the complete lines one read of stdout or stderr delivered
        (tagged with the stream); a partial line waits for the rest of it, and a partial
        last line is yielded at EOF. Lines longer than ``MAX_LINE`` are cut (marked with
        ``TRUNCATED``). The last item is the ``CommandExit``. Closing or cancelling the
        iterator closes the channel, which stops the remote command (see the module
        docstring).

        Args:
            timeout: seconds the whole command may run (None: no limit, e.g. ``tail -F``).
            input: text sent to the command's stdin, then EOF.

        Raises:
            CommandTimeout: the command outlived ``timeout`` (it has been stopped).
            HostUnreachable: the connection failed or dropped mid-stream.
        """
        started = time.monotonic()
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        proc = await self._process(host, command, input)
        queue: asyncio.Queue[LineBatch | None] = asyncio.Queue(_QUEUE_BATCHES)
        readers = [
            asyncio.create_task(_read_batches(host.name, "stdout", proc.stdout, queue)),
            asyncio.create_task(_read_batches(host.name, "stderr", proc.stderr, queue)),
        ]
        try:
            if input is not None:
                # Framed, and no EOF: the wrapper watches for EOF to know the channel closed.
                data = input.encode()
                proc.stdin.write(b"%d\n" % len(data) + data)
            open_readers = 2
            while open_readers:
                async with asyncio.timeout_at(deadline):
                    batch = await queue.get()
                if batch is None:
                    open_readers -= 1
                    continue
                yield batch
            async with asyncio.timeout_at(deadline):
                completed = await proc.wait()
            if completed.exit_status is None and completed.exit_signal is None:
                # No exit status at all: the channel or the connection went away under us.
                raise HostUnreachable(f"{describe(host)}: connection lost while streaming")
            signal = completed.exit_signal[0] if completed.exit_signal else None
            yield CommandExit(host.name, completed.exit_status, signal, time.monotonic() - started)
        except TimeoutError as e:
            raise CommandTimeout(
                f"{describe(host)}: command timed out after {timeout:g} s and was stopped: "
                f"{_short(command)}"
            ) from e
        finally:
            for reader in readers:
                reader.cancel()
            proc.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await proc.wait_closed()

    async def run(
        self,
        host: HostConfig,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the agreed API; bounds the command)
        input: str | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run a command to completion and return its output.

        Args:
            timeout: seconds it may run; None uses ``[ssh] command_timeout``.
            input: text for its stdin.
            check: raise CommandFailed on a non-zero exit status.

        Raises:
            CommandFailed: ``check`` and the status was not 0 (message has stderr's tail).
            CommandTimeout, HostUnreachable, HostKeyError, SshAuthFailed, ConfigError.
        """
        limit = self.settings.command_timeout if timeout is None else timeout
        out: list[str] = []
        err: list[str] = []
        status: CommandExit | None = None
        async for item in self.stream_batches(host, command, timeout=limit, input=input):
            if isinstance(item, CommandExit):
                status = item
            elif item.stream == "stdout":
                out.extend(item.lines)
            else:
                err.extend(item.lines)
        assert status is not None
        result = CommandResult(
            host.name,
            status.exit_status,
            "\n".join(out) + ("\n" if out else ""),
            "\n".join(err) + ("\n" if err else ""),
            status.duration,
        )
        if check and result.exit_status != 0:
            last = err[-1] if err else (out[-1] if out else "")
            how = (
                f"exit status {result.exit_status}"
                if result.exit_status is not None
                else f"signal {status.signal}"
            )
            raise CommandFailed(
                f"{describe(host)}: {_short(command)} failed ({how})"
                + (f": {_short(last)}" if last else ""),
                result,
            )
        return result

    # -- files ----------------------------------------------------------------------------

    async def put(
        self, host: HostConfig, local: Path, remote: str, progress: Progress | None = None
    ) -> None:
        """Copy a local file to the host over SFTP.

        Raises:
            BackendError: the transfer failed (message names the paths and the cause).
        """
        await self._sftp(host, "put", str(local), remote, progress)

    async def get(
        self, host: HostConfig, remote: str, local: Path, progress: Progress | None = None
    ) -> None:
        """Copy a file from the host over SFTP.

        Raises:
            BackendError: the transfer failed (message names the paths and the cause).
        """
        await self._sftp(host, "get", remote, str(local), progress)

    async def _sftp(
        self,
        host: HostConfig,
        direction: Literal["put", "get"],
        src: str,
        dst: str,
        progress: Progress | None,
    ) -> None:
        handler = None
        if progress is not None:

            def handler(_src: bytes, _dst: bytes, done: int, total: int) -> None:
                progress(done, total)

        conn = await self.connection(host)
        try:
            async with conn.start_sftp_client() as sftp:
                copy = sftp.put if direction == "put" else sftp.get
                await copy(src, dst, progress_handler=handler)
        except (OSError, asyncssh.Error) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
            raise BackendError(
                f"{describe(host)}: SFTP {direction} {src} -> {dst} failed: {reason}"
            ) from e

    async def aclose(self) -> None:
        """Close every connection (jump hosts last)."""
        self._closed = True
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in reversed(conns):
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await conn.wait_closed()


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _read_batches(
    host: str,
    stream: Literal["stdout", "stderr"],
    reader: asyncssh.SSHReader[bytes],
    queue: asyncio.Queue[LineBatch | None],
) -> None:
    """Read one output stream and queue its lines, one ``LineBatch`` per read, then None.

    The only place output is split into lines: a read's bytes are decoded as one piece
    (UTF-8, invalid bytes replaced; a character split between reads is decoded whole),
    split at "\\n" (a "\\r" before it is dropped), and a trailing partial line is kept for
    the next read. A line longer than ``MAX_LINE`` is cut there, marked, and the rest of it
    is skipped up to its newline, so a newline-less flood cannot grow memory.
    """
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    partial = ""
    dropping = False  # inside a line already cut at MAX_LINE
    while True:
        try:
            chunk = await reader.read(_READ_SIZE)
        except (asyncssh.Error, OSError):
            # The connection dropped; the consumer learns it from the missing exit status.
            break
        if not chunk:
            break
        text = partial + decode(chunk) if partial else decode(chunk)
        lines = text.split("\n")
        partial = lines.pop()
        if not lines and len(partial) <= MAX_LINE:
            continue  # no complete line yet
        if "\r" in text:
            lines = [line.removesuffix("\r") for line in lines]
        if dropping and lines:
            del lines[0]  # the end of a line already cut and shown
            dropping = False
        if _may_hold_long_line(text):
            lines = [_cap(line) for line in lines]
        if len(partial) > MAX_LINE:
            if not dropping:
                lines.append(_cap(partial))
            dropping = True
            partial = ""
        if lines:
            await queue.put(LineBatch(host, stream, tuple(lines), time.time()))
    partial += decode(b"", final=True)
    if partial and not dropping:
        last = _cap(partial.removesuffix("\r"))
        await queue.put(LineBatch(host, stream, (last,), time.time()))
    # Blocking is fine: the consumer drains the queue until it has seen both sentinels,
    # and cancels this task if it stops early.
    await queue.put(None)


def _may_hold_long_line(text: str) -> bool:
    """Whether a line of ``text`` may be longer than ``MAX_LINE``: some aligned block of
    ``MAX_LINE // 2`` characters has no newline (every longer line spans such a block).

    A few ``str.find`` calls per read instead of measuring every line.
    """
    block = MAX_LINE // 2
    for start in range(0, len(text) - block + 1, block):
        if text.find("\n", start, start + block) < 0:
            return True
    return False


def _cap(line: str) -> str:
    """The line, cut at ``MAX_LINE`` characters (and marked) if it is longer."""
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + TRUNCATED
