"""Live logs: command rewriting rules, and multiplexed tails against a real sshd."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from procscan import processes_with
from servers import SshServer, descendants

from console.core.config import HostConfig, SshSettings, parse_ssh_target
from console.core.errors import ConfigError, UsageError
from console.core.logs import (
    LogBatch,
    LogFollower,
    LogLine,
    _LineQueue,
    follow_logs,
    log_command,
    pick_logs,
)
from console.core.models import Colour
from console.core.ssh import SshPool


def settings_for(server: SshServer) -> SshSettings:
    return SshSettings(
        use_config=False,
        use_agent=False,
        known_hosts=str(server.known_hosts_path),
        connect_timeout=3.0,
        keepalive=0.0,
    )


def host_for(server: SshServer, name: str, logs: dict[str, str]) -> HostConfig:
    return HostConfig(
        name=name,
        url="http://127.0.0.1:1",
        ssh=parse_ssh_target(server.target),
        identity=str(server.client_key_path),
        logs=logs,
    )


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.fixture
async def pool(ssh_server: SshServer) -> AsyncIterator[SshPool]:
    pool = SshPool(settings_for(ssh_server))
    yield pool
    await pool.aclose()


async def next_line(stream: AsyncIterator[LogLine], within: float = 5.0) -> LogLine:
    async with asyncio.timeout(within):
        return await anext(stream)


@pytest.mark.parametrize(
    ("command", "lines", "follow", "expected", "ends"),
    [
        ("tail -F /var/log/app.log", 20, True, "tail -n 20 -F /var/log/app.log", True),
        ("tail -f -n 5 /a.log", 20, True, "tail -n 20 -f /a.log", True),
        ("tail --lines=5 -F /a.log", 3, False, "tail -n 3 /a.log", True),
        ("tail -F /a.log | grep -v DEBUG", 7, False, "tail -n 7 /a.log | grep -v DEBUG", True),
        ("journalctl -u shop -f", 50, True, "journalctl -n 50 -f -u shop", True),
        ("journalctl -f -n 9 -u shop", 50, False, "journalctl -n 50 --no-pager -u shop", True),
        ("docker logs -f shop", 50, True, "docker logs -f shop", False),
    ],
)
def test_log_command_rules(
    command: str, lines: int, follow: bool, expected: str, ends: bool
) -> None:
    assert log_command(command, lines, follow) == (expected, ends)


def test_pick_logs_errors() -> None:
    host = HostConfig(name="app1", url="http://x", logs={"app": "tail -F a"})
    bare = HostConfig(name="app2", url="http://x")
    assert [s[2] for s in pick_logs([(Colour.BLUE, host)], None)] == ["app"]
    with pytest.raises(UsageError, match="no log named 'nginx'; configured: app"):
        pick_logs([(Colour.BLUE, host)], "nginx")
    with pytest.raises(ConfigError, match=r"env\.green\.logs"):
        pick_logs([(Colour.GREEN, bare)], None)


@pytest.mark.integration
async def test_follow_multiplexes_hosts_with_backlog_and_grep(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("app1", "app2")}
    for name, path in logs.items():
        path.write_text("".join(f"{name} old {i}\n" for i in range(10)))
    hosts = [
        (Colour.BLUE, host_for(ssh_server, name, {"app": f"tail -F {path}"}))
        for name, path in logs.items()
    ]
    stream = follow_logs(pool, hosts, None, lines=2, follow=True, grep=re.compile(r"old [89]|new"))
    try:
        backlog = [await next_line(stream) for _ in range(4)]
        assert sorted((line.source, line.text) for line in backlog) == [
            ("blue/app1", "app1 old 8"),
            ("blue/app1", "app1 old 9"),
            ("blue/app2", "app2 old 8"),
            ("blue/app2", "app2 old 9"),
        ]
        with logs["app2"].open("a") as f:
            f.write("skipped by grep\napp2 new line\n")
        line = await next_line(stream)
        assert (line.source, line.log, line.text, line.marker) == (
            "blue/app2",
            "app",
            "app2 new line",
            False,
        )
    finally:
        await stream.aclose()


@pytest.mark.integration
async def test_without_follow_prints_last_lines_and_ends(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    host = host_for(ssh_server, "app1", {"app": f"tail -F {path}", "other": "seq 1 50"})
    started = time.monotonic()
    got = [line async for line in follow_logs(
        pool, [(Colour.GREEN, host)], None, lines=3, follow=False, grep=None
    )]  # fmt: skip
    assert time.monotonic() - started < 4.0
    assert sorted(line.text for line in got if line.log == "app") == [
        "line 97",
        "line 98",
        "line 99",
    ]
    assert [line.text for line in got if line.log == "other"] == ["48", "49", "50"]


@pytest.mark.integration
async def test_stream_drop_shows_markers_and_resumes(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.write_text("before\n")
    host = host_for(ssh_server, "app1", {"app": f"tail -F {path}"})
    follower = LogFollower(
        pool, [(Colour.BLUE, host)], lines=1, follow=True, retry_initial=0.1, retry_max=0.3
    )
    stream = follower.stream()
    try:
        assert (await next_line(stream)).text == "before"
        ssh_server.stop()
        marker = await next_line(stream)
        assert marker.marker
        assert marker.text == "blue/app1 disconnected, retrying"
        await asyncio.sleep(0.5)  # a few failed reconnects while the host is down
        ssh_server.start()
        marker = await next_line(stream)
        while not marker.text.startswith("blue/app1 reconnected"):
            assert marker.marker  # only markers until it is back (no duplicated backlog)
            marker = await next_line(stream)
        assert re.fullmatch(r"blue/app1 reconnected after \d+\.\d s", marker.text)
        took = float(marker.text.split()[-2])
        assert 0.4 <= took < 5.0
        # The new tail starts at the end of the file (no backlog), some time after the
        # marker: keep writing until one line comes through, so a busy machine cannot
        # make the write land before tail opened the file.
        got = asyncio.create_task(next_line(stream))
        written = 0
        while not got.done() and written < 25:
            with path.open("a") as f:
                f.write(f"after {written}\n")
            written += 1
            await asyncio.wait([got], timeout=0.2)
        line = await got
        assert line.text.startswith("after ")
        assert not line.marker
    finally:
        await stream.aclose()


@pytest.mark.integration
async def test_slow_reader_keeps_memory_bounded(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    host = host_for(ssh_server, "app1", {"app": "seq 1 2000000"})
    follower = LogFollower(pool, [(Colour.BLUE, host)], follow=True, queue_lines=50)
    stream = follower.stream()
    try:
        assert (await next_line(stream)).text == "1"
        await asyncio.sleep(0.5)  # the remote side keeps writing while nobody reads
        queued = follower._queue.lines  # bounded in lines, however large the SSH reads
        assert 0 < queued <= 50
        # Not 2 million lines buffered anywhere: the remote seq is paused mid-way by flow
        # control, still alive after 0.5 s (unthrottled it finishes in a fraction of that).
        seqs = [p for p in descendants(ssh_server.pid or 0) if _comm(p) == "seq"]
        assert seqs
    finally:
        await stream.aclose()


@pytest.mark.integration
async def test_host_key_error_ends_that_stream_with_a_marker(
    ssh_server: SshServer, tmp_path: Path
) -> None:
    pool = SshPool(dataclasses.replace(settings_for(ssh_server), known_hosts=str(tmp_path / "kh")))
    host = host_for(ssh_server, "app1", {"app": "tail -F /nonexistent"})
    try:
        got = [line async for line in follow_logs(
            pool, [(Colour.BLUE, host)], None, lines=1, follow=True, grep=None
        )]  # fmt: skip
    finally:
        await pool.aclose()
    assert len(got) == 1
    assert got[0].marker
    assert "host key not in" in got[0].text


@pytest.mark.integration
async def test_backlog_larger_than_the_queue_still_ends(
    ssh_server: SshServer, pool: SshPool
) -> None:
    hosts = [
        (Colour.BLUE, host_for(ssh_server, name, {"app": "seq 1 80"})) for name in ("a1", "a2")
    ]
    follower = LogFollower(pool, hosts, lines=50, follow=False, queue_lines=5)
    async with asyncio.timeout(20):
        got = [line async for line in follower.stream()]
    assert len(got) == 100
    assert [line.text for line in got if line.host == "a1"] == [str(i) for i in range(31, 81)]


async def next_batch(batches: AsyncIterator[LogBatch], within: float = 5.0) -> LogBatch:
    async with asyncio.timeout(within):
        return await anext(batches)


@pytest.mark.integration
async def test_batches_are_cut_to_the_queue_bound_and_keep_order(
    ssh_server: SshServer, pool: SshPool
) -> None:
    hosts = [
        (Colour.BLUE, host_for(ssh_server, name, {"app": "seq 1 80"})) for name in ("a1", "a2")
    ]
    follower = LogFollower(pool, hosts, lines=50, follow=False, queue_lines=5)
    async with asyncio.timeout(20):
        got = [batch async for batch in follower.batches()]
    assert all(0 < len(batch.lines) <= 5 for batch in got)
    for name in ("a1", "a2"):
        mine = [batch for batch in got if batch.host == name]
        assert {(b.colour, b.log, b.stream, b.marker, b.source) for b in mine} == {
            (Colour.BLUE, "app", "stdout", False, f"blue/{name}")
        }
        assert [text for batch in mine for text in batch.lines] == [str(i) for i in range(31, 81)]
    assert follower._queue.lines == 0


@pytest.mark.integration
async def test_batches_grep_lines_and_tag_stderr(ssh_server: SshServer, pool: SshPool) -> None:
    command = "printf 'a1\\nb1\\na2\\n'; echo a-err >&2; echo b-err >&2; sleep 30"
    host = host_for(ssh_server, "app1", {"app": command})
    follower = LogFollower(pool, [(Colour.GREEN, host)], follow=True, grep=re.compile("^a"))
    batches = follower.batches()
    seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
    try:
        while len(seen["stdout"]) < 2 or len(seen["stderr"]) < 1:
            batch = await next_batch(batches)
            assert not batch.marker
            seen[batch.stream].extend(batch.lines)
            # stream() hands out the same lines one LogLine at a time.
            assert [line.text for line in batch.log_lines()] == list(batch.lines)
            assert {(line.source, line.stream) for line in batch.log_lines()} == {
                ("green/app1", batch.stream)
            }
    finally:
        await batches.aclose()
    assert seen == {"stdout": ["a1", "a2"], "stderr": ["a-err"]}


@pytest.mark.integration
async def test_closing_batches_stops_the_remote_tails(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("app1", "app2")}
    for name, path in logs.items():
        path.write_text(f"{name} old\n")
    hosts = [
        (Colour.BLUE, host_for(ssh_server, name, {"app": f"tail -F {path}"}))
        for name, path in logs.items()
    ]
    follower = LogFollower(pool, hosts, lines=1, follow=True)
    batches = follower.batches()
    texts = {(await next_batch(batches)).lines, (await next_batch(batches)).lines}
    assert texts == {("app1 old",), ("app2 old",)}
    assert len(_remote_tails(ssh_server, str(tmp_path))) == 2
    await batches.aclose()
    assert await wait_until(lambda: not _remote_tails(ssh_server, str(tmp_path)))


async def wait_until(predicate: Callable[[], object], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


def _remote_tails(server: SshServer, needle: str) -> list[int]:
    """``tail`` processes anywhere on the machine whose command line contains ``needle``:
    an orphaned tail is re-parented to PID 1, out of sshd's tree."""
    del server  # every test host is this machine
    return [pid for pid in processes_with(needle) if _comm(pid) == "tail"]


def _batch(size: int, name: str = "h") -> LogBatch:
    return LogBatch(Colour.BLUE, name, "app", tuple(str(i) for i in range(size)), 0.0)


async def queued_host(queue: _LineQueue) -> str:
    item = await queue.get()
    assert item is not None
    return item.host


async def test_line_queue_is_bounded_in_lines_and_first_come_first_served() -> None:
    queue = _LineQueue(10)
    await queue.put(_batch(8, "first"))
    big = asyncio.create_task(queue.put(_batch(5, "big")))
    await asyncio.sleep(0)
    small = asyncio.create_task(queue.put(_batch(1, "small")))  # fits, but waits its turn
    await asyncio.sleep(0.01)
    assert (queue.lines, big.done(), small.done()) == (8, False, False)
    await asyncio.wait_for(queue.put(None), 1)  # an end-of-stream sentinel never waits
    assert await queued_host(queue) == "first"
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert queue.lines == 6
    assert [await queue.get() for _ in range(3)] == [None, _batch(5, "big"), _batch(1, "small")]
    assert queue.lines == 0

    # A waiting put that is cancelled lets the next in line go.
    await queue.put(_batch(10, "full"))
    stuck = asyncio.create_task(queue.put(_batch(10, "stuck")))
    await asyncio.sleep(0)
    after = asyncio.create_task(queue.put(_batch(2, "after")))
    await asyncio.sleep(0.01)
    stuck.cancel()
    assert await queued_host(queue) == "full"
    await asyncio.wait_for(after, 1)
    assert await queued_host(queue) == "after"
    assert stuck.cancelled()
    with pytest.raises(ValueError, match="queue_lines must be 1 or more"):
        _LineQueue(0)
