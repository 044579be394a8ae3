"""SSH streaming benchmarks against a real OpenSSH sshd on loopback.

Measures, and prints next to each target:

(a) line latency: a line appended to a file on the host -> yielded by ``SshPool.stream``
    running ``tail -F`` (target p99 <= 50 ms);
(b) throughput: lines per second of ``cat FILE`` through one ``SshPool.stream`` versus the
    OpenSSH client running the same command in the same run (target >= 0.8x);
(c) memory: RSS while ``LogFollower`` follows 1M appended lines (target: bounded, i.e. no
    growth with the number of lines).

Run: ``.venv/bin/python bench/ssh_bench.py [--lines 1000000]``.
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
sys.path.insert(0, str(ROOT))

from console.core.config import HostConfig, SshSettings, parse_ssh_target  # noqa: E402
from console.core.logs import LogFollower  # noqa: E402
from console.core.models import Colour  # noqa: E402
from console.core.ssh import CommandExit, OutputLine, SshPool  # noqa: E402
from tests.servers import SshServer  # noqa: E402


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


async def throughput_ours(pool: SshPool, server: SshServer, path: Path) -> tuple[int, float]:
    lines = 0
    started = time.perf_counter()
    async for item in pool.stream(host_for(server), f"cat {path}"):
        if isinstance(item, OutputLine):
            lines += 1
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
    """RSS (MiB) at quarters of ``total`` lines followed through LogFollower."""
    path = workdir / "memory.log"
    path.write_text("")
    follower = LogFollower(
        pool, [(Colour.BLUE, host_for(server, {"app": f"tail -F {path}"}))], lines=0, follow=True
    )
    stream = follower.stream()
    samples: list[tuple[int, float]] = [(0, rss_mib())]

    async def consume() -> None:
        seen = 0
        async for item in stream:
            if item.marker:
                continue
            seen += 1
            if seen % (total // 4) == 0:
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines for (b) and (c)")
    parser.add_argument("--latency-lines", type=int, default=400)
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
            ours_n, ours_s = await throughput_ours(pool, server, data)
            ref_n, ref_s = throughput_openssh(server, data)
            ours_rate, ref_rate = ours_n / ours_s, ref_n / ref_s
            ratio = ours_rate / ref_rate
            print(f"(b) throughput, {ours_n} lines ({size:.0f} MB): SshPool.stream "
                  f"{ours_rate:,.0f} lines/s ({ours_s:.2f} s) vs OpenSSH ssh {ref_rate:,.0f} "
                  f"lines/s ({ref_s:.2f} s) = {ratio:.2f}x  (target >= 0.8x: "
                  f"{'met' if ratio >= 0.8 else 'MISSED'})")  # fmt: skip

            samples = await memory(pool, server, workdir, args.lines)
            growth = samples[-1][1] - samples[1][1]
            shown = ", ".join(f"{n:,}: {mib:.0f} MiB" for n, mib in samples)
            print(f"(c) RSS while following {args.lines:,} lines: {shown}; growth after the "
                  f"first quarter {growth:+.1f} MiB  (target bounded: "
                  f"{'met' if growth < 20 else 'MISSED'})")  # fmt: skip
        finally:
            await pool.aclose()
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
