"""SshPool against a real OpenSSH sshd: streaming, host keys, jump hosts, reconnects, SFTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import asyncssh
import pytest
from procscan import processes_with, unique_marker
from servers import SshServer, descendants

from console.core.config import HostConfig, SshSettings, parse_ssh_target
from console.core.errors import BackendError, ConfigError, HostKeyError, HostUnreachable
from console.core.remote_exec import SshExecutor
from console.core.ssh import (
    MAX_LINE,
    TRUNCATED,
    Backoff,
    CommandExit,
    CommandFailed,
    CommandTimeout,
    LineBatch,
    OutputLine,
    SshAuthFailed,
    SshPool,
    _read_batches,
    in_workdir,
    wrap_killable,
)

pytestmark = pytest.mark.integration


def settings_for(server: SshServer, **overrides: object) -> SshSettings:
    """Settings that never read the developer's ~/.ssh or agent."""
    base = SshSettings(
        use_config=False,
        use_agent=False,
        known_hosts=str(server.known_hosts_path),
        connect_timeout=5.0,
        keepalive=0.0,
        command_timeout=30.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def host_for(server: SshServer, name: str = "app1", **overrides: object) -> HostConfig:
    host = HostConfig(
        name=name,
        url="http://127.0.0.1:1",
        ssh=parse_ssh_target(server.target),
        identity=str(server.client_key_path),
    )
    return dataclasses.replace(host, **overrides)  # type: ignore[arg-type]


def remote_pids(server: SshServer, needle: str) -> list[int]:
    """Processes carrying ``needle`` anywhere on the machine, not only under this sshd:
    a command whose wrapper died is re-parented to PID 1 and would be missed there."""
    del server  # every test host is this machine
    return processes_with(needle)


async def wait_until(predicate: Callable[[], object], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


@pytest.fixture
async def pool(ssh_server: SshServer) -> AsyncIterator[SshPool]:
    pool = SshPool(settings_for(ssh_server))
    yield pool
    await pool.aclose()


async def test_run_collects_output_and_status(ssh_server: SshServer, pool: SshPool) -> None:
    host = host_for(ssh_server)
    result = await pool.run(host, "echo out; echo err >&2; exit 3")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.exit_status == 3
    with pytest.raises(CommandFailed, match=r"exit status 3\): err"):
        await pool.run(host, "echo err >&2; exit 3", check=True)


async def test_connection_is_reused(ssh_server: SshServer, pool: SshPool) -> None:
    host = host_for(ssh_server)
    first = await pool.connection(host)
    await pool.run(host, "true")
    await pool.run(host, "true")
    assert await pool.connection(host) is first


async def test_workdir_and_input(ssh_server: SshServer, pool: SshPool, tmp_path: Path) -> None:
    host = host_for(ssh_server, workdir=str(tmp_path))
    result = await pool.run(host, "pwd; cat", input="hello\nworld")
    assert result.stdout == f"{tmp_path}\nhello\nworld\n"


async def test_stream_yields_lines_as_they_arrive(ssh_server: SshServer, pool: SshPool) -> None:
    host = host_for(ssh_server)
    arrivals: list[tuple[float, OutputLine | CommandExit]] = []
    start = time.monotonic()
    async for item in pool.stream(host, "echo a; sleep 0.4; echo b >&2; sleep 0.4; printf c"):
        arrivals.append((time.monotonic() - start, item))
    items = [item for _, item in arrivals]
    assert [(i.stream, i.text) for i in items if isinstance(i, OutputLine)] == [
        ("stdout", "a"),
        ("stderr", "b"),
        ("stdout", "c"),  # the partial last line
    ]
    assert isinstance(items[-1], CommandExit)
    assert items[-1].exit_status == 0
    # 'a' arrived well before the command finished: streamed, not buffered.
    assert arrivals[0][0] < arrivals[-1][0] - 0.6


async def test_very_long_lines_are_capped(ssh_server: SshServer, pool: SshPool) -> None:
    host = host_for(ssh_server)
    command = f"head -c {MAX_LINE * 3} /dev/zero | tr '\\0' x; echo; echo next"
    lines = [i for i in [x async for x in pool.stream(host, command)] if isinstance(i, OutputLine)]
    assert [len(line.text) for line in lines] == [MAX_LINE + len(TRUNCATED), 4]
    assert lines[0].text.endswith(TRUNCATED)
    assert lines[1].text == "next"


async def test_command_timeout_stops_the_command(ssh_server: SshServer, pool: SshPool) -> None:
    host = host_for(ssh_server)
    marker = unique_marker()
    with pytest.raises(CommandTimeout, match=r"timed out after 0\.5 s"):
        await pool.run(host, f"sh -c 'sleep 7.25' {marker} | cat", timeout=0.5)
    assert await wait_until(lambda: not remote_pids(ssh_server, marker))


async def test_cancelling_tail_leaves_no_remote_process(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    host = host_for(ssh_server)
    log = tmp_path / "app.log"
    log.write_text("one\n")
    stream = pool.stream(host, f"tail -n 5 -F {log} | cat")
    first = await anext(stream)
    assert isinstance(first, OutputLine)
    assert first.text == "one"
    assert remote_pids(ssh_server, f"tail -n 5 -F {log}")
    await stream.aclose()  # the file stays quiet: no SIGPIPE would ever reach tail
    assert await wait_until(lambda: not remote_pids(ssh_server, str(log)))


async def collect_batches(
    pool: SshPool, host: HostConfig, command: str
) -> tuple[list[LineBatch], CommandExit]:
    """Every batch of the command's output, and its exit (which must come last)."""
    items = [item async for item in pool.stream_batches(host, command)]
    assert isinstance(items[-1], CommandExit)
    batches = [item for item in items[:-1] if isinstance(item, LineBatch)]
    assert len(batches) == len(items) - 1
    return batches, items[-1]


async def test_stream_batches_keep_order_and_tag_stderr(
    ssh_server: SshServer, pool: SshPool
) -> None:
    host = host_for(ssh_server)
    command = "seq 1 5000; echo oops >&2; sleep 0.3; seq 5001 6000; printf last"
    batches, exit_ = await collect_batches(pool, host, command)
    assert exit_.exit_status == 0
    assert all(batch.lines and batch.host == "app1" for batch in batches)
    stdout = [text for b in batches if b.stream == "stdout" for text in b.lines]
    assert stdout == [str(i) for i in range(1, 6001)] + ["last"]  # the partial last line too
    assert [b.lines for b in batches if b.stream == "stderr"] == [("oops",)]
    # A batch is what one read delivered: lines written 0.3 s apart are in different ones.
    assert not any("5000" in b.lines and "5001" in b.lines for b in batches)
    # stream() yields the very same lines, one OutputLine each, with the batch's time.
    lines = [x async for x in pool.stream(host, command) if isinstance(x, OutputLine)]
    assert [(x.stream, x.text) for x in lines if x.stream == "stdout"] == [
        ("stdout", text) for text in stdout
    ]
    assert [x.text for x in lines if x.stream == "stderr"] == ["oops"]
    first = batches[0].output_lines()
    assert first[0] == OutputLine("app1", "stdout", "1", batches[0].at)


async def test_stream_batches_join_lines_split_across_reads(
    ssh_server: SshServer, pool: SshPool
) -> None:
    host = host_for(ssh_server)
    # Pieces of lines (and of a UTF-8 character, and of a CRLF) arrive 0.3 s apart.
    command = (
        "printf 'ab'; sleep 0.3; printf 'c\\nd\\303'; sleep 0.3; printf '\\251\\r'; "
        "sleep 0.3; printf '\\ne\\r\\nf'"
    )
    started = time.time()
    batches, _ = await collect_batches(pool, host, command)
    assert [b.lines for b in batches] == [("abc",), ("dé", "e"), ("f",)]
    assert batches[0].at - started >= 0.25  # "ab" waited for the rest of its line


async def test_stream_batches_cap_very_long_lines(ssh_server: SshServer, pool: SshPool) -> None:
    host = host_for(ssh_server)
    x, y = "x" * MAX_LINE, "y" * MAX_LINE
    command = (
        f"echo first; head -c {MAX_LINE * 3} /dev/zero | tr '\\0' x; echo; echo next; "
        f"head -c {MAX_LINE + 1} /dev/zero | tr '\\0' y; echo; "
        f"head -c {MAX_LINE * 2} /dev/zero | tr '\\0' x"  # a long partial line at EOF
    )
    batches, _ = await collect_batches(pool, host, command)
    lines = [text for b in batches for text in b.lines]
    assert lines == ["first", x + TRUNCATED, "next", y + TRUNCATED, x + TRUNCATED]


class ChunkReader:
    """Stands in for asyncssh's reader: returns the given chunks, one per read, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def split_chunks(chunks: list[bytes]) -> list[tuple[str, ...]]:
    """The batches ``_read_batches`` makes of exactly these reads."""
    queue: asyncio.Queue[LineBatch | None] = asyncio.Queue()
    reader = cast("asyncssh.SSHReader[bytes]", ChunkReader(chunks))
    await _read_batches("h", "stdout", reader, queue)
    batches = []
    while (batch := queue.get_nowait()) is not None:
        batches.append(batch.lines)
    return batches


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\nb", b"c\nd\n", b"e"], [("a",), ("bc", "d"), ("e",)]),
        ([b"a", b"b", b"\n"], [("ab",)]),
        ([b"a\r", b"\nb\r\n\r\n", b"c\rd\n"], [("a", "b", ""), ("c\rd",)]),
        ([b"\xc3", b"\xa9\n\xff\n"], [("é", "\ufffd")]),
        ([b"\n\n"], [("", "")]),
        ([b"x" * (MAX_LINE + 5) + b"\nok\n"], [("x" * MAX_LINE + TRUNCATED, "ok")]),
        # The middle line of a read, and one cut across reads (its rest is skipped).
        (
            [b"a\n" + b"x" * (MAX_LINE * 2) + b"\nb\n"],
            [("a", "x" * MAX_LINE + TRUNCATED, "b")],
        ),
        (
            [b"x" * MAX_LINE, b"x" * 10, b"x" * 10, b"x\nok"],
            [("x" * MAX_LINE + TRUNCATED,), ("ok",)],
        ),
        # Exactly MAX_LINE is kept whole; one more character is cut.
        ([b"x" * (MAX_LINE // 2), b"x" * (MAX_LINE // 2) + b"\n"], [("x" * MAX_LINE,)]),
        (
            [b"x" * (MAX_LINE // 2 + 1), b"x" * (MAX_LINE // 2) + b"\n"],
            [("x" * MAX_LINE + TRUNCATED,)],
        ),
    ],
)
async def test_line_splitting_at_read_boundaries(
    chunks: list[bytes], expected: list[tuple[str, ...]]
) -> None:
    assert await split_chunks(chunks) == expected


async def test_closing_or_cancelling_batches_stops_the_remote_command(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    host = host_for(ssh_server)
    log = tmp_path / "app.log"
    log.write_text("one\n")
    stream = pool.stream_batches(host, f"tail -n 5 -F {log} | cat")
    first = await anext(stream)
    assert isinstance(first, LineBatch)
    assert first.lines == ("one",)
    assert remote_pids(ssh_server, f"tail -n 5 -F {log}")
    await stream.aclose()
    assert await wait_until(lambda: not remote_pids(ssh_server, str(log)))

    got: list[LineBatch | CommandExit] = []

    async def consume() -> None:
        async for item in pool.stream_batches(host, f"tail -n 1 -F {log}"):
            got.append(item)

    task = asyncio.create_task(consume())
    assert await wait_until(lambda: bool(got))
    assert remote_pids(ssh_server, f"tail -n 1 -F {log}")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until(lambda: not remote_pids(ssh_server, str(log)))


def _bytes_written(server: SshServer, comm: str) -> int:
    """Bytes written so far by the host's process named ``comm``."""
    for pid in descendants(server.pid or 0):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
                continue
            io = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        return int(io.split("wchar:")[1].split()[0])
    raise AssertionError(f"no {comm} process on the host")


async def test_slow_reader_bounds_what_the_host_sends_ahead(
    ssh_server: SshServer, pool: SshPool
) -> None:
    """SSH flow control holds for a reader slower than the host: the host's output is
    buffered up to a few windows, not as much as the host can write."""
    host = host_for(ssh_server)
    line = "0123456789" * 8
    stream = pool.stream_batches(host, f"yes {line}")
    read = 0
    try:
        for _ in range(30):
            batch = await anext(stream)
            assert isinstance(batch, LineBatch)
            read += len(batch.lines) * (len(line) + 1)
            await asyncio.sleep(0.01)  # the host keeps writing meanwhile
        ahead = _bytes_written(ssh_server, "yes") - read
    finally:
        await stream.aclose()
    # One window in flight, one held by asyncssh, a batch queued and one being read, plus
    # sshd's own buffers: about 16 MB at most (unbounded flow control ran 100 MB ahead).
    assert ahead < 24_000_000, f"the host wrote {ahead:,} bytes more than was read"


async def test_unknown_host_key_is_refused(ssh_server: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    pool = SshPool(settings_for(ssh_server, known_hosts=str(empty)))
    try:
        with pytest.raises(HostKeyError) as info:
            await pool.run(host_for(ssh_server), "true")
    finally:
        await pool.aclose()
    message = str(info.value)
    assert "app1" in message
    assert "not in" in message
    assert ssh_server.host_key_fingerprint in message
    assert f"ssh-keyscan -p {ssh_server.port} 127.0.0.1 >> {empty}" in message
    assert not empty.exists()  # never learned silently


async def test_changed_host_key_is_refused(ssh_server: SshServer, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_server.port} {other}\n")
    pool = SshPool(settings_for(ssh_server, known_hosts=str(wrong)))
    try:
        with pytest.raises(HostKeyError, match="CHANGED") as info:
            await pool.run(host_for(ssh_server), "true")
    finally:
        await pool.aclose()
    assert ssh_server.host_key_fingerprint in str(info.value)
    assert "attack" in str(info.value)


async def test_accept_new_learns_unknown_keys(ssh_server: SshServer, tmp_path: Path) -> None:
    learned = tmp_path / "sub" / "known_hosts"
    pool = SshPool(settings_for(ssh_server, known_hosts=str(learned), host_key_policy="accept-new"))
    try:
        result = await pool.run(host_for(ssh_server), "echo hi")
    finally:
        await pool.aclose()
    assert result.stdout == "hi\n"
    assert learned.read_text().startswith(f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 ")


async def test_wrong_client_key_is_refused(ssh_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "id_other"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    pool = SshPool(settings_for(ssh_server))
    try:
        with pytest.raises(SshAuthFailed, match=f"permission denied for user {ssh_server.user}"):
            await pool.run(host_for(ssh_server, identity=str(key)), "true")
    finally:
        await pool.aclose()


async def test_missing_target_and_unreachable_host(ssh_server: SshServer, pool: SshPool) -> None:
    with pytest.raises(ConfigError, match="ssh is missing"):
        await pool.run(host_for(ssh_server, ssh=None), "true")
    ssh_server.stop()
    with pytest.raises(HostUnreachable, match="app1"):
        await pool.run(host_for(ssh_server), "true")


async def test_jump_host(ssh_server_pair: tuple[SshServer, SshServer], tmp_path: Path) -> None:
    jump, target = ssh_server_pair
    both = tmp_path / "known_hosts"
    both.write_text(jump.known_hosts_line + "\n" + target.known_hosts_line + "\n")
    pool = SshPool(settings_for(target, known_hosts=str(both)))
    host = host_for(target, jump=parse_ssh_target(jump.target))
    try:
        result = await pool.run(host, "echo $SSH_CONNECTION")
    finally:
        await pool.aclose()
    # The target saw the connection come from the jump host's forwarding, not from us.
    assert result.exit_status == 0
    assert f" 127.0.0.1 {target.port}" in result.stdout
    assert "sshd" in jump.log() or jump.running


async def test_reconnects_after_sshd_restart(ssh_server: SshServer, pool: SshPool) -> None:
    host = host_for(ssh_server)
    first = await pool.connection(host)
    ssh_server.stop()
    ssh_server.start()
    assert await wait_until(first.is_closed)
    result = await pool.run(host, "echo back")
    assert result.stdout == "back\n"
    assert await pool.connection(host) is not first


async def test_sftp_put_get_with_progress(
    ssh_server: SshServer, pool: SshPool, tmp_path: Path
) -> None:
    host = host_for(ssh_server)
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 300_000)
    seen: list[tuple[int, int]] = []
    await pool.put(host, src, str(tmp_path / "remote.bin"), lambda d, t: seen.append((d, t)))
    await pool.get(host, str(tmp_path / "remote.bin"), tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert seen[-1] == (300_000, 300_000)


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0)
    delays = [backoff.next() for _ in range(6)]
    assert 0.5 <= delays[0] <= 1.0
    assert 4.0 <= delays[5] <= 8.0  # capped
    backoff.reset()
    assert backoff.next() <= 1.0


def test_wrap_killable_quotes_the_command() -> None:
    wrapped = wrap_killable("echo 'a b' | grep a")
    assert wrapped.startswith("sh -c ")
    assert wrapped.endswith("bgconsole 'echo '\"'\"'a b'\"'\"' | grep a'")


# --- router operations over SSH use the same pool (one SSH stack) ------------------------


def router_executor_for(server: SshServer, **overrides: object) -> SshExecutor:
    return SshExecutor(
        parse_ssh_target(server.target),
        settings_for(server, **overrides),
        identity=str(server.client_key_path),
    )


async def test_router_executor_follows_accept_new_with_no_known_hosts_file(
    ssh_server: SshServer, tmp_path: Path
) -> None:
    learned = tmp_path / "new" / "known_hosts"  # neither the file nor its directory exist
    executor = router_executor_for(
        ssh_server, known_hosts=str(learned), host_key_policy="accept-new"
    )
    try:
        result = await executor.run("echo hi; echo oops >&2; exit 3", 10)
        assert (result.exit_status, result.stdout, result.stderr) == (3, "hi\n", "oops\n")
        path = str(tmp_path / "router.cfg")
        await executor.write_file(path, b"server green\n")
        assert await executor.read_file(path) == b"server green\n"
        assert await executor.read_file(str(tmp_path / "none")) is None
    finally:
        await executor.aclose()
    assert learned.read_text().startswith(f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 ")


async def test_router_executor_refuses_unknown_keys_with_the_fix(
    ssh_server: SshServer, tmp_path: Path
) -> None:
    executor = router_executor_for(ssh_server, known_hosts=str(tmp_path / "missing"))
    try:
        with pytest.raises(HostKeyError, match="ssh-keyscan"):
            await executor.run("true", 10)
    finally:
        await executor.aclose()


async def test_router_executor_timeout_stops_the_remote_command(
    ssh_server: SshServer, tmp_path: Path
) -> None:
    marker = unique_marker()
    executor = router_executor_for(ssh_server)
    try:
        with pytest.raises(BackendError, match=r"did not finish within 0\.5s"):
            await executor.run(f"sh -c 'sleep 30' {marker} | cat", 0.5)
        assert await wait_until(lambda: not processes_with(marker))
        # The connection is reused, and replaced when it dies (host restarted).
        ssh_server.stop()
        ssh_server.start()
        assert (await executor.run("echo back", 10)).stdout == "back\n"
    finally:
        await executor.aclose()


def test_a_workdir_is_never_read_as_an_option() -> None:
    host = HostConfig(name="a", url="http://h", workdir="-P")
    assert in_workdir(host, "pwd") == "cd -- -P && pwd"
    assert in_workdir(dataclasses.replace(host, workdir=None), "pwd") == "pwd"
