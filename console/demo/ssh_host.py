"""An embedded SSH server per sandbox host (asyncssh), so the console's SSH path is real.

Key authentication only, with the sandbox's generated client key; any user name is
accepted. Each command runs as ``/bin/sh -c COMMAND`` in the host directory, in its own
process group, which is killed when the channel closes (a closed log pane must not leave
a ``tail -F`` behind). SFTP is served without a chroot: paths are the machine's real
paths, as on a real host, so the absolute SQLite paths of the config work unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import asyncssh

from console.demo.processes import die_with_parent

_GRACE = 2.0
_CHUNK = 65536


def generate_key() -> asyncssh.SSHKey:
    """A new ed25519 key pair."""
    return asyncssh.generate_private_key("ssh-ed25519")


def write_private_key(key: asyncssh.SSHKey, path: Path) -> None:
    """Write a private key (mode 600, as ssh clients insist) and its ``.pub``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())


class SshHost:
    """One host's SSH server on 127.0.0.1, running commands in ``root``."""

    def __init__(self, root: Path, host_key: asyncssh.SSHKey, client_key: asyncssh.SSHKey) -> None:
        self.root = root
        self.host_key = host_key
        self.client_key = client_key
        self.port = 0
        self._server: asyncssh.SSHAcceptor | None = None
        self._children: set[asyncio.subprocess.Process] = set()
        self._reaping: set[asyncio.Future[None]] = set()

    @property
    def known_hosts_line(self) -> str:
        """This server's line for a known_hosts file."""
        public = self.host_key.export_public_key("openssh").decode().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}"

    async def start(self) -> None:
        """Listen on a port the kernel picks (no race with other demos)."""
        authorized = asyncssh.import_authorized_keys(
            self.client_key.export_public_key("openssh").decode()
        )
        self._server = await asyncssh.create_server(
            asyncssh.SSHServer,
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=authorized,
            password_auth=False,
            kbdint_auth=False,
            process_factory=self._run,
            sftp_factory=True,
            encoding=None,
            allow_scp=True,
        )
        self.port = self._server.get_port()

    async def stop(self) -> None:
        """Stop accepting, close every connection, kill the commands still running."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Commands whose channel closed are being ended gracefully (see _reap): let them.
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)
        for child in list(self._children):
            _kill_group(child)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_GRACE):
                    await child.wait()

    async def _run(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        """Run the requested command (or a shell) and pipe it to the channel."""
        command = process.command
        argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        try:
            child = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.root,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as e:
            process.stderr.write(f"cannot run command: {e}\n".encode())
            process.exit(127)
            return
        self._children.add(child)
        try:
            await self._pipe(process, child)
        finally:
            # Shielded and remembered: a cancelled _run (the server closing) must not cut
            # the clean-up short, and stop() waits for it before the loop can close.
            reap = asyncio.ensure_future(_reap(child))
            self._reaping.add(reap)
            reap.add_done_callback(self._reaping.discard)
            try:
                await asyncio.shield(reap)
            finally:
                self._children.discard(child)

    async def _pipe(
        self, process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process
    ) -> None:
        assert child.stdout is not None
        assert child.stderr is not None
        outputs = asyncio.gather(
            _copy_out(child.stdout, process.stdout), _copy_out(child.stderr, process.stderr)
        )
        feeder = asyncio.create_task(_copy_in(process, child))
        closed = asyncio.create_task(process.channel.wait_closed())
        try:
            waiting: set[asyncio.Future[Any]] = {outputs, closed}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if closed in done or outputs.exception() is not None:
                # The client went away: the finally of _run kills the command.
                return
            code = await child.wait()
            if code < 0:
                process.exit_with_signal(signal.Signals(-code).name.removeprefix("SIG"))
            else:
                process.exit(code)
        finally:
            feeder.cancel()
            closed.cancel()
            outputs.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await outputs


async def _reap(child: asyncio.subprocess.Process) -> None:
    """End a command as sshd does when its channel closes, and release its pipes.

    Its stdin is closed first: bgconsole's remote commands watch their stdin and stop
    what they started (a ``setsid`` log tail, in its own process group) when it ends.
    Killing the wrapper's group at once killed that watcher too, the tail lived on with
    the pipes open, and their transports were closed by the garbage collector after the
    loop was gone ("Event loop is closed" at exit). Only a command that ignores its
    stdin is then killed.
    """
    if child.stdin is not None:
        child.stdin.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_GRACE + 1.0):
            await child.wait()
    _kill_group(child)
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(_GRACE):
            await child.wait()
            # Read the pipes to EOF: asyncio closes a subprocess transport only once
            # every pipe is done.
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    await stream.read()


def _kill_group(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGTERM)


async def _copy_out(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    while chunk := await source.read(_CHUNK):
        sink.write(chunk)
        await sink.drain()


async def _copy_in(
    process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process
) -> None:
    """Feed the channel's stdin to the command; forward signals the client sends."""
    assert child.stdin is not None
    while True:
        try:
            data = await process.stdin.read(_CHUNK)
        except asyncssh.SignalReceived as e:
            sig = getattr(signal, f"SIG{e.signal}", None)
            if sig is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, sig)
            continue
        except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
            continue
        if not data:
            break
        child.stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await child.stdin.drain()
    with contextlib.suppress(OSError):
        child.stdin.close()
