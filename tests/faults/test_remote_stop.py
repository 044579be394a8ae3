"""Remote stop means stopped: on a dash host (Debian's /bin/sh), a timeout, a cancel, a
closed stream or a lost connection ends the remote command's whole process group.

Leftovers are looked for among every process on the machine by a unique argument, not
among sshd's descendants: an orphan is re-parented to PID 1 and would be missed there.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from procscan import appears, describe, gone, kill_leftovers, processes_with, unique_marker
from servers import SshServer

from console.core.config import HostConfig, SshSettings, parse_ssh_target
from console.core.ssh import CommandTimeout, LineBatch, SshPool

pytestmark = pytest.mark.integration


def settings_for(server: SshServer) -> SshSettings:
    return SshSettings(
        use_config=False,
        use_agent=False,
        known_hosts=str(server.known_hosts_path),
        connect_timeout=5.0,
        keepalive=0.0,
        command_timeout=30.0,
    )


def host_for(server: SshServer, tmp_path: Path) -> HostConfig:
    return HostConfig(
        name="app1",
        url="http://127.0.0.1:1",
        ssh=parse_ssh_target(server.target),
        identity=str(server.client_key_path),
        workdir=str(tmp_path),
    )


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique argument for the test's remote processes; whatever carries it is killed
    afterwards, so a failing test does not leak into the next ones."""
    needle = unique_marker()
    yield needle
    kill_leftovers(needle)


@pytest.fixture
async def pool(ssh_server: SshServer) -> AsyncIterator[SshPool]:
    pool = SshPool(settings_for(ssh_server))
    yield pool
    await pool.aclose()


def hang(marker: str, *, ignore_term: bool = False) -> str:
    """A pipeline of two processes that never end, each carrying ``marker``.

    The marker is a harmless extra argument (``sh -c SCRIPT MARKER`` sets $0), so the
    scan finds every process a broken stop would leave behind.
    """
    trap = "trap '' TERM; " if ignore_term else ""
    return f'sh -c "{trap}sleep 600" {marker} | sh -c "{trap}cat" {marker}'


def test_host_shell_is_dash() -> None:
    # The faults below are the ones a Debian host shows; on another /bin/sh they prove less.
    assert os.path.realpath("/bin/sh").endswith("dash")


async def test_timeout_ends_the_whole_pipeline(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path, marker: str
) -> None:
    with pytest.raises(CommandTimeout):
        await pool.run(host_for(ssh_server, tmp_path), hang(marker), timeout=0.5)
    assert await gone(marker), describe(marker)


async def test_closing_a_quiet_stream_ends_it(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path, marker: str
) -> None:
    log = tmp_path / f"{marker}.log"
    log.write_text("one\n")
    stream = pool.stream_batches(host_for(ssh_server, tmp_path), f"tail -n 1 -F {log} | cat")
    first = await anext(stream)
    assert isinstance(first, LineBatch)
    await stream.aclose()  # the file stays quiet: tail would never hit SIGPIPE
    assert await gone(str(log)), describe(str(log))


async def test_cancelling_a_stream_ends_it(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path, marker: str
) -> None:

    async def consume() -> None:
        async for _ in pool.stream(host_for(ssh_server, tmp_path), hang(marker)):
            pass

    task = asyncio.create_task(consume())
    assert await appears(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(marker), describe(marker)


async def test_a_command_ignoring_sigterm_is_killed(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path, marker: str
) -> None:
    with pytest.raises(CommandTimeout):
        await pool.run(host_for(ssh_server, tmp_path), hang(marker, ignore_term=True), timeout=0.5)
    assert await gone(marker, within=8.0), describe(marker)


async def test_lost_connection_ends_the_command(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path, marker: str
) -> None:
    host = host_for(ssh_server, tmp_path)
    stream = pool.stream(host, hang(marker))
    task = asyncio.create_task(anext(stream))
    assert await appears(marker)
    (await pool.connection(host)).abort()  # the client vanishes without closing channels
    with pytest.raises(Exception):  # noqa: B017, PT011 - any error: the point is the host
        await task
    assert await gone(marker), describe(marker)


async def test_commands_with_input_get_it_whole_and_are_stopped_too(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path, marker: str
) -> None:
    host = host_for(ssh_server, tmp_path)
    data = "".join(f"line {i} ünïcödé\n" for i in range(50_000)) + "no newline at the end"
    result = await pool.run(host, "sha256sum", input=data)
    assert result.stdout.split()[0] == hashlib.sha256(data.encode()).hexdigest()
    assert (await pool.run(host, "cat", input="")).stdout == ""

    with pytest.raises(CommandTimeout):
        await pool.run(host, f"cat >/dev/null; {hang(marker)}", input="some input\n", timeout=1)
    assert await gone(marker), describe(marker)


async def test_a_finished_command_leaves_what_it_started_in_the_background(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path, marker: str
) -> None:
    """A deploy step that starts a server with ``&`` and exits 0 keeps that server: only
    a stop (timeout, cancel, closed channel) kills the group."""
    result = await pool.run(
        host_for(ssh_server, tmp_path), f"sh -c 'sleep 600' {marker} >/dev/null 2>&1 & echo ok"
    )
    assert result.stdout == "ok\n"
    await asyncio.sleep(0.5)
    assert processes_with(marker), "the background process was killed with its step"
