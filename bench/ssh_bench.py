"""SSH streaming benchmarks against a real OpenSSH sshd on loopback.

Measures, and prints next to each target:

(a) line latency: a line appended to a file on the host -> yielded by ``SshPool.stream``
    running ``tail -F`` (target p99 <= 50 ms);
(b) throughput: lines per second of ``cat FILE`` through one stream versus the OpenSSH
    client running the same command in the same run (target >= 0.8x), for both APIs:
    ``SshPool.stream_batches`` (a batch of lines per read; what ``LogFollower`` and
    ``bgconsole logs`` use) and ``SshPool.stream`` (an ``OutputLine`` per line). The three
    runs alternate for ``--rounds`` rounds; each rate is the median of its rounds;
(c) memory: RSS while ``LogFollower`` follows 1M lines appended at once (target: bounded,
    i.e. no growth with the number of lines: the peak of the second half of the lines is
    compared with that of the first half).

Run: ``.venv/bin/python bench/ssh_bench.py [--lines 1000000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository (for console) and tests/ (for the SshServer test fixture) on the path.
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import SshServer  # noqa: E402

from console.core.config import HostConfig, SshSettings, parse_ssh_target  # noqa: E402
from console.core.logs import LogFollower  # noqa: E402
from console.core.models import Colour  # noqa: E402
from console.core.ssh import CommandExit, LineBatch, OutputLine, SshPool  # noqa: E402


def rss_mib() -> float:
    """This process's resident memory in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def host_for(server: SshServer, logs: dict[str, str] | None = None) -> HostConfig:
    return HostConfig(
        name="bench",
        url="http://127.0.0.1:1",
        ssh=parse_ssh_target(server.target),
        identity=str(server.client_key_path),
        logs=logs or {},
    )


async def latency(pool: SshPool, server: SshServer, workdir: Path, count: int) -> list[float]:
    """Milliseconds from append to yield, for ``count`` lines written 5 ms apart."""
    path = workdir / "latency.log"
    path.write_text("")
    stream = pool.stream(host_for(server), f"tail -n 0 -F {path}")
    delays: list[float] = []

    async def writer() -> None:
        await asyncio.sleep(0.5)  # tail -F is reading before the first line
        with path.open("a") as f:
            for _ in range(count):
                f.write(f"{time.time():.6f}\n")
                f.flush()
                await asyncio.sleep(0.005)

    task = asyncio.create_task(writer())
    try:
        async for item in stream:
            if isinstance(item, OutputLine) and item.stream == "stdout":
                delays.append((time.time() - float(item.text)) * 1000)
                if len(delays) == count:
                    break
    finally:
        await stream.aclose()
        await task
    return delays


async def throughput_lines(pool: SshPool, server: SshServer, path: Path) -> tuple[int, float]:
    """``SshPool.stream``: lines counted one ``OutputLine`` at a time."""
    lines = 0
    started = time.perf_counter()
    async for item in pool.stream(host_for(server), f"cat {path}"):
        if isinstance(item, OutputLine):
            lines += 1
        elif isinstance(item, CommandExit):
            assert item.exit_status == 0
    return lines, time.perf_counter() - started


async def throughput_batches(pool: SshPool, server: SshServer, path: Path) -> tuple[int, float]:
    """``SshPool.stream_batches``: lines counted a ``LineBatch`` at a time."""
    lines = 0
    started = time.perf_counter()
    async for item in pool.stream_batches(host_for(server), f"cat {path}"):
        if isinstance(item, LineBatch):
            lines += len(item.lines)
        elif isinstance(item, CommandExit):
            assert item.exit_status == 0
    return lines, time.perf_counter() - started


def throughput_openssh(server: SshServer, path: Path) -> tuple[int, float]:
    """The OpenSSH client running the same command, its output read and counted by lines."""
    argv = [
        "ssh", "-F", "/dev/null", "-p", str(server.port), "-i", str(server.client_key_path),
        "-o", f"UserKnownHostsFile={server.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"{server.user}@127.0.0.1",
        f"cat {path}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines = 0
    while chunk := proc.stdout.read(65536):
        lines += chunk.count(b"\n")
    proc.wait()
    return lines, time.perf_counter() - started


async def memory(
    pool: SshPool, server: SshServer, workdir: Path, total: int
) -> list[tuple[int, float]]:
    """RSS (MiB) at sixteenths of ``total`` lines followed through LogFollower."""
    path = workdir / "memory.log"
    path.write_text("")
    follower = LogFollower(
        pool, [(Colour.BLUE, host_for(server, {"app": f"tail -F {path}"}))], lines=0, follow=True
    )
    stream = follower.batches()  # as ``bgconsole logs`` reads it
    samples: list[tuple[int, float]] = [(0, rss_mib())]

    async def consume() -> None:
        seen = 0
        step = max(1, total // 16)
        async for batch in stream:
            if batch.marker:
                continue
            before, seen = seen, seen + len(batch.lines)
            if seen // step > before // step:
                samples.append((seen, rss_mib()))
            if seen >= total:
                return

    # The follower's streams start with the first read: consume first, write once tail runs.
    consumer = asyncio.create_task(consume())
    try:
        await asyncio.sleep(1.0)
        line = "x" * 80
        writer = await asyncio.create_subprocess_exec(
            "sh", "-c", f"yes {line} | head -n {total} >> {path}"
        )
        await writer.wait()
        async with asyncio.timeout(120):
            await consumer
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await stream.aclose()
    return samples


async def throughput(
    pool: SshPool, server: SshServer, data: Path, lines: int, rounds: int
) -> list[str]:
    """(b): the three readers alternate for ``rounds`` rounds; their medians are compared."""
    runs: dict[str, list[float]] = {"openssh": [], "stream_batches": [], "stream": []}
    for _ in range(rounds):
        for name, times in runs.items():
            if name == "openssh":
                count, took = throughput_openssh(server, data)
            elif name == "stream_batches":
                count, took = await throughput_batches(pool, server, data)
            else:
                count, took = await throughput_lines(pool, server, data)
            assert count == lines, f"{name} counted {count} lines, not {lines}"
            times.append(took)
    took_by = {name: statistics.median(times) for name, times in runs.items()}
    reference = lines / took_by["openssh"]
    report = [f"    {'OpenSSH ssh':<22} {reference:>10,.0f} lines/s ({took_by['openssh']:.2f} s)"]
    for name in ("stream_batches", "stream"):
        rate = lines / took_by[name]
        ratio = rate / reference
        verdict = "met" if ratio >= 0.8 else "MISSED"
        report.append(
            f"    {'SshPool.' + name:<22} {rate:>10,.0f} lines/s ({took_by[name]:.2f} s) "
            f"= {ratio:.2f}x  (target >= 0.8x: {verdict})"
        )
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines for (b) and (c)")
    parser.add_argument("--latency-lines", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (b)")
    args = parser.parse_args()
    with SshServer() as server, tempfile.TemporaryDirectory(prefix="bgbench") as tmp:
        workdir = Path(tmp)
        settings = SshSettings(
            use_config=False, use_agent=False, known_hosts=str(server.known_hosts_path)
        )
        pool = SshPool(settings)
        try:
            delays = sorted(await latency(pool, server, workdir, args.latency_lines))
            p50 = statistics.median(delays)
            p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
            print(f"(a) line latency over {len(delays)} lines: p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms, max {delays[-1]:.1f} ms  (target p99 <= 50 ms: "
                  f"{'met' if p99 <= 50 else 'MISSED'})")  # fmt: skip

            data = workdir / "data.log"
            data.write_text(
                "".join(f"2024-01-01T00:00:00Z INFO request {i} served in 3 ms\n"
                        for i in range(args.lines))
            )  # fmt: skip
            size = data.stat().st_size / 1e6
            report = await throughput(pool, server, data, args.lines, args.rounds)
            print(f"(b) throughput of cat through one stream, {args.lines:,} lines ({size:.0f} "
                  f"MB), median of {args.rounds} alternating rounds:")  # fmt: skip
            print("\n".join(report))

            samples = await memory(pool, server, workdir, args.lines)
            first = max(mib for n, mib in samples if n <= args.lines // 2)
            second = max(mib for n, mib in samples if n > args.lines // 2)
            growth = second - first
            shown = samples[::4] + ([samples[-1]] if (len(samples) - 1) % 4 else [])
            print(f"(c) RSS while following {args.lines:,} lines: "
                  + ", ".join(f"{n:,}: {mib:.0f} MiB" for n, mib in shown)
                  + f"; peak {first:.0f} MiB in the first half, {second:.0f} MiB in the second: "
                  f"growth {growth:+.1f} MiB  (target bounded: "
                  f"{'met' if growth < 20 else 'MISSED'})")  # fmt: skip
        finally:
            await pool.aclose()
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
