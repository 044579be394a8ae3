"""Benchmark of the builtin reverse proxy (``bgconsole serve``) against HAProxy and direct.

Run from the repository root: ``.venv/bin/python bench/proxy_bench.py`` (about two
minutes). ``--quick`` skips the slowloris and 10 000-connection trials.

Backends are nginx (1 worker, fixed small body) so they are never the bottleneck. In one
go it measures, for direct-to-nginx, HAProxy (``nbthread 1``) and the builtin proxy on
uvloop (``bgconsole[fast]``) and on plain asyncio:

- throughput with wrk -t2 -c64 -d5s and the proxy's CPU time per request (utime+stime
  of the process over the run / requests): target builtin >= 50 % of HAProxy's req/s;
- p99 latency at a fixed 1 000 req/s: target <= 2 ms;
- the live backend SIGKILLed under 1 000 req/s of GETs: client-visible errors (target 0);
- 2 000 slowloris connections against an agent limited to 1 024 file descriptors: the
  share of legitimate requests answered (target 100 %) and the agent's log size;
- memory with 10 000 idle keep-alive connections (RSS growth per connection).

The machine's other load moves req/s a lot; CPU µs per request moves less, so compare
those when the numbers look odd.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    HOST,
    REPO,
    Process,
    WrkResult,
    fixed_rate,
    free_port,
    haproxy,
    nginx_backend,
    ratio,
    redis_server,
    report,
    run_wrk,
    started,
)

DURATION = 5.0
_TICK = os.sysconf("SC_CLK_TCK")
# ``bgconsole serve`` with uvloop installed as the loop policy first: what the CLI does
# when bgconsole[fast] is installed (console.core.proxy.fastloop).
_FAST = (
    "import sys; from console.core.proxy import fastloop; fastloop.install(); "
    "from console.cli import main; sys.argv[0] = 'bgconsole'; main()"
)


def serve_config(redis_url: str, port: int, blue: str, green: str, extra: str = "") -> str:
    return f"""
[console]
name = "bench"
[control]
redis = "{redis_url}"
[router]
kind = "builtin"
listen = "{HOST}:{port}"
{extra}
[failover]
interval = 0.25
timeout = 0.2
fall = 2
rise = 2
min_dwell = 0.0
[agent]
log_format = "logfmt"
[env.blue]
url = "{blue}"
health_path = "/health"
[env.green]
url = "{green}"
health_path = "/health"
"""


def serve(config_text: str, port: int, *, fast: bool, nofile: int | None = None) -> Process:
    """``bgconsole serve`` from this checkout; on uvloop when ``fast``; with a descriptor
    limit when ``nofile`` (prlimit execs the command, so the pid is the agent's)."""
    root = Path(tempfile.mkdtemp(prefix="bgs", dir="/tmp"))
    (root / "bgconsole.toml").write_text(config_text)
    python = [sys.executable, "-c", _FAST] if fast else [sys.executable, "-m", "console"]
    argv = [*python, "serve", "-c", str(root / "bgconsole.toml")]
    if nofile is not None:
        argv = ["prlimit", f"--nofile={nofile}:{nofile}", "--", *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return Process(argv, port, cwd=root, env=env, name="bgconsole-serve")


def cpu_seconds(proc: Process) -> float:
    assert proc.proc is not None
    stat = Path(f"/proc/{proc.proc.pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_kb(proc: Process) -> int:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Run:
    wrk: WrkResult
    cpu_us: float
    p99_1k: float


def measure(name: str, proc: Process, url: str) -> Run:
    before = cpu_seconds(proc)
    result = run_wrk(url, duration=DURATION)
    cpu_us = (cpu_seconds(proc) - before) * 1e6 / max(result.requests, 1)
    rate = asyncio.run(fixed_rate(HOST, proc.port, rate=1000, duration=DURATION))
    print(
        f"{name}: {result.rps:.0f} req/s (p99 {result.p99_ms:.2f} ms, errors {result.errors}), "
        f"{cpu_us:.1f} CPU us/request; at 1000 req/s p50 {rate.p50_ms:.2f} ms, "
        f"p99 {rate.p99_ms:.2f} ms, errors {rate.errors}",
        flush=True,
    )
    return Run(result, cpu_us, rate.p99_ms)


async def kill_live_under_load(port: int, live: Process) -> tuple[int, float, dict[str, int]]:
    """1 000 req/s for 4 s; SIGKILL the live backend after 1 s."""

    async def killer() -> None:
        await asyncio.sleep(1.0)
        live.kill()

    task = asyncio.create_task(killer())
    result = await fixed_rate(HOST, port, rate=1000, duration=4.0, connections=32)
    await task
    if result.error_samples:
        print("  error samples:", "; ".join(result.error_samples))
    return result.errors, result.max_ms, result.colours


async def slowloris(port: int, count: int = 2000, legit: int = 200) -> tuple[int, int]:
    """``count`` connections trickling a head, while ``legit`` GETs are sent; answered."""
    slow: list[asyncio.StreamWriter] = []
    for _ in range(count):
        try:
            _reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            continue
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow.append(writer)
    ok = 0

    async def one() -> bool:
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await reader.read()
                writer.close()
                return answer.startswith(b"HTTP/1.1 200")
        except (OSError, TimeoutError):
            return False

    for _ in range(legit // 20):
        ok += sum(await asyncio.gather(*(one() for _ in range(20))))
        for writer in slow:  # a byte now and then, as slowloris does
            if not writer.is_closing():
                writer.write(b"X")
        await asyncio.sleep(0.1)
    for writer in slow:
        writer.close()
    return ok, legit


async def idle_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` keep-alive connections that each made one request and stay idle."""
    writers = []
    for i in range(0, count, 500):
        pairs = await asyncio.gather(
            *(asyncio.open_connection(HOST, port) for _ in range(min(500, count - i)))
        )
        for _reader, writer in pairs:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for reader, writer in pairs:
            await reader.readuntil(b"\r\n\r\n")
            writers.append(writer)
    return writers


def trials(blue: Process, green: Process, redis: Process) -> tuple[dict[str, float], bool]:
    """Slowloris under a 1 024 fd limit, then 10 000 idle connections; numbers by name."""
    out: dict[str, float] = {}
    port = free_port()
    config = serve_config(f"redis://{redis.address}/0", port, blue.url, green.url,
                          'head_timeout = 5.0\nidle_timeout = 300.0')  # fmt: skip
    with started(serve(config, port, fast=True, nofile=1024)) as (agent,):
        time.sleep(0.5)
        ok, sent = asyncio.run(slowloris(port))
        lines = len(agent.log_path.read_text().splitlines())
        failover = "event=failover" in agent.log_path.read_text()
        print(f"slowloris 2000 vs 1024 fds: {ok}/{sent} legitimate GETs answered, agent log "
              f"{lines} lines, failover {'happened' if failover else 'none'}")  # fmt: skip
        out["slowloris"] = 100.0 * ok / sent
        out["slowloris_log"] = lines
    port = free_port()
    config = serve_config(f"redis://{redis.address}/0", port, blue.url, green.url,
                          "max_connections = 12000\nidle_timeout = 300.0")  # fmt: skip
    with started(serve(config, port, fast=True)) as (agent,):
        time.sleep(0.5)
        before = rss_kb(agent)

        async def hold() -> int:
            writers = await idle_connections(port, 10_000)
            await asyncio.sleep(1.0)
            after = rss_kb(agent)
            for writer in writers:
                writer.close()
            return after

        after = asyncio.run(hold())
        per = (after - before) / 10_000
        print(f"10 000 idle keep-alive connections: RSS {before} -> {after} KB "
              f"({per:.1f} KB per connection)")  # fmt: skip
        out["kb_per_idle"] = per
    return out, out["slowloris"] >= 100.0


def main() -> int:
    quick = "--quick" in sys.argv
    passed = True
    with started(nginx_backend("blue"), nginx_backend("green"), redis_server()) as procs:
        blue, green, redis = procs
        print(f"backends: blue {blue.address}, green {green.address} (nginx, 1 worker)")
        direct = run_wrk(blue.url, duration=DURATION)
        print(f"direct nginx: {direct.rps:.0f} req/s, p99 {direct.p99_ms:.2f} ms")
        with started(haproxy([blue.address])) as (hap,):
            ref = measure("haproxy nbthread 1", hap, hap.url)
        runs: dict[str, Run] = {}
        for fast in (True, False):
            port = free_port()
            config = serve_config(f"redis://{redis.address}/0", port, blue.url, green.url)
            name = "builtin (uvloop)" if fast else "builtin (asyncio)"
            with started(serve(config, port, fast=fast)) as (agent,):
                time.sleep(0.5)  # first health round
                runs[name] = measure(name, agent, agent.url)
                if fast:
                    errors, slowest, colours = asyncio.run(kill_live_under_load(port, blue))
                    print(f"kill live under 1000 req/s: errors {errors}, slowest "
                          f"{slowest:.1f} ms, {colours}")  # fmt: skip
                    blue.start()
        extra: dict[str, float] = {}
        if not quick:
            extra, ok = trials(blue, green, redis)
            passed &= ok
        print()
        mine = runs["builtin (uvloop)"]
        pct = ratio("builtin (uvloop) vs HAProxy nbthread 1", mine.wrk.rps, ref.wrk.rps, "HAProxy")
        passed &= report("builtin (uvloop) / HAProxy req/s", pct, 50, "%")
        plain = runs["builtin (asyncio)"]
        ratio("builtin (asyncio) vs HAProxy nbthread 1", plain.wrk.rps, ref.wrk.rps, "HAProxy")
        ratio("builtin (uvloop) vs direct nginx", mine.wrk.rps, direct.rps, "direct")
        print(f"{'CPU us/request: HAProxy / uvloop / asyncio':<44} {ref.cpu_us:>10.1f} / "
              f"{mine.cpu_us:.1f} / {plain.cpu_us:.1f}")  # fmt: skip
        passed &= report("builtin (uvloop) p99 at 1000 req/s", mine.p99_1k, 2.0, "ms", higher=False)
        passed &= report("kill live under load: errors", errors, 0, "", higher=False)
        if extra:
            passed &= report("slowloris: legitimate GETs answered", extra["slowloris"], 100, "%")
            report("10k idle connections: KB each", extra["kb_per_idle"], 20, "KB", higher=False)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
