"""Fleets: deploys to 20 hosts in batches, and logs from 20 hosts, on real OpenSSH.

Twenty hosts ``app1`` ... on 127.0.0.2-127.0.0.21 (an sshd and an HTTP app each, see
``tests/fleet_support.py``) and a redis-server on 127.0.0.1. Measures:

- deploy (two steps per host: write VERSION, tell the app its new version) to one host,
  then to 20 with ``--parallel 5`` behind a canary (1+5+5+5+4: five waves), 20 one after
  another (``--parallel 1``: every host its own wave), and 20 at once (no canary). The
  issue's target: 20 hosts at ``--parallel 5`` within 1.5x one host's time per wave.
- logs from 20 hosts, each writing about 1,000 lines/s (``--follow``, per-host buffers):
  lines/s delivered and the RSS of this process; then a reader that stalls (dropping
  oldest lines per host) with the buffered lines and RSS while it does; then how fast
  lines can come (every host ``seq`` flat out).

Run: ``.venv/bin/python bench/fleet_bench.py`` (``--quick`` for shorter log phases).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fleet_support import Fleet, fleet_config_data  # noqa: E402
from servers import RedisServer  # noqa: E402

from console.core.config import Config, parse_config  # noqa: E402
from console.core.control import ControlPlane  # noqa: E402
from console.core.deploy import DeployRunner  # noqa: E402
from console.core.health import HealthChecker  # noqa: E402
from console.core.logs import PER_HOST_LINES, LogFollower  # noqa: E402
from console.core.models import Colour  # noqa: E402
from console.core.ssh import SshPool  # noqa: E402

_runs = 0


def rss_mb() -> float:
    """This process's resident memory now, in MB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def config(fleet: Fleet, redis: RedisServer, hosts: int = 20, **kwargs: Any) -> Config:
    global _runs
    _runs += 1
    data = fleet_config_data(fleet, redis.url, name=f"bench{_runs}", **kwargs)
    data["env"]["blue"]["hosts"] = data["env"]["blue"]["hosts"][:hosts]
    return parse_config(data)


async def deploy(
    cfg: Config, ref: str, parallel: int, canary: bool = True
) -> tuple[float, int, float, float]:
    """Seconds for one deploy (fresh connections, as the CLI has), its waves, the CPU
    seconds bgconsole itself used (the rest of the machine's work is the "hosts"), and
    the seconds spent in health waits between batches."""
    control = ControlPlane(cfg.control.redis, cfg.console.name, actor="bench")
    pool = SshPool(cfg.ssh)
    health = HealthChecker(cfg, hysteresis=False)
    try:
        runner = DeployRunner(cfg, control, pool, health, parallel=parallel, canary=canary)
        started, cpu = time.monotonic(), time.process_time()
        waits: list[float] = []
        result = await runner.deploy(
            Colour.BLUE, ref=ref, on_batch=lambda b: waits.append(b.waited)
        )
        took, cpu = time.monotonic() - started, time.process_time() - cpu
        if not result.ok:
            raise SystemExit(f"deploy failed: {result.failure()}")
        return took, max(1, len(result.batches)), cpu, sum(waits)
    finally:
        await pool.aclose()
        await health.aclose()
        await control.aclose()


async def deploys(fleet: Fleet, redis: RedisServer, repeat: int) -> None:
    print("## deploy (2 steps per host; health wait after each wave)")
    rows: list[tuple[str, float, int]] = []
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    cases = [
        ("1 host", 1, 5, True),
        ("20 hosts, --parallel 5, canary", 20, 5, True),
        ("20 hosts, --parallel 1 (sequential)", 20, 1, True),
        ("20 hosts, --parallel 20 --no-canary (all at once)", 20, 20, False),
    ]
    for name, hosts, parallel, canary in cases:
        times, cpus, healths, waves = [], [], [], 0
        for i in range(repeat):
            took, waves, cpu, health = await deploy(
                config(fleet, redis, hosts), f"r{_runs}-{i}", parallel, canary
            )
            times.append(took)
            cpus.append(cpu)
            healths.append(health)
        median = statistics.median(times)
        rows.append((name, median, waves))
        spread = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"{name:<52} {median:6.2f} s  ({waves} wave(s); runs: {spread}; bgconsole CPU "
            f"{statistics.median(cpus):.2f} s; health waits {statistics.median(healths):.2f} s)"
        )
    one = rows[0][1]
    five = rows[1]
    print(
        f"20 hosts --parallel 5: {five[1]:.2f} s = {five[1] / (one * five[2]):.2f}x one host "
        f"x {five[2]} waves ({one * five[2]:.2f} s); target <= 1.5x; "
        f"{rows[2][1] / five[1]:.1f}x faster than sequential; "
        f"vs one host x 4 batches: {five[1] / (one * 4):.2f}x"
    )


async def follow(
    cfg: Config, seconds: float, stall: float = 0.0, count_only: bool = True
) -> dict[str, float]:
    """Follow blue's 20 logs for ``seconds``; with ``stall``, stop reading for that long
    halfway through. Returns lines/s, markers, dropped, peak buffered lines, peak RSS."""
    pool = SshPool(cfg.ssh)
    hosts = [(Colour.BLUE, h) for h in cfg.env(Colour.BLUE).hosts]
    follower = LogFollower(pool, hosts, "app", lines=0, follow=True, per_host_lines=PER_HOST_LINES)
    batches = follower.batches()
    lines = markers = 0
    peak_buffered, peak_rss = 0, rss_mb()
    try:
        # Connecting to 20 hosts is not part of the rate: count from the first line.
        await anext(batches)
        started = time.monotonic()
        stalled = False
        while (now := time.monotonic()) - started < seconds:
            if stall and not stalled and now - started > seconds / 2:
                stalled = True
                end = now + stall
                while time.monotonic() < end:
                    await asyncio.sleep(0.1)
                    peak_buffered = max(peak_buffered, follower.buffered)
                    peak_rss = max(peak_rss, rss_mb())
                started += stall  # the stall is not reading time
            batch = await anext(batches)
            if batch.marker:
                markers += 1
            else:
                lines += len(batch.lines)
            peak_buffered = max(peak_buffered, follower.buffered)
            if lines % 1000 < len(batch.lines):
                peak_rss = max(peak_rss, rss_mb())
        return {
            "lines_per_s": lines / seconds,
            "markers": markers,
            "dropped": follower.dropped,
            "peak_buffered": peak_buffered,
            "peak_rss_mb": peak_rss,
        }
    finally:
        await batches.aclose()
        await pool.aclose()


async def logs(fleet: Fleet, redis: RedisServer, seconds: float) -> None:
    print("## logs from 20 hosts (--follow, per-host buffers of 1,000 lines)")
    # About 1,000 lines/s per host: 100 lines every 0.1 s (the sleep adds a little drift).
    paced = (
        "while :; do seq -f '%g GET /item HTTP/1.1 200 512 \"Mozilla/5.0\"' 1 100; sleep 0.1; done"
    )
    cfg = config(fleet, redis, logs=lambda h: {"app": paced})
    base = rss_mb()
    got = await follow(cfg, seconds)
    print(
        f"paced (~1,000 lines/s per host): {got['lines_per_s']:,.0f} lines/s delivered "
        f"({got['lines_per_s'] / 20:,.0f} per host), dropped {got['dropped']:,.0f}, "
        f"peak buffered {got['peak_buffered']:,.0f} lines, RSS {base:.0f} -> "
        f"{got['peak_rss_mb']:.0f} MB"
    )
    got = await follow(cfg, seconds, stall=5.0)
    print(
        f"paced, reader stalled 5 s: dropped {got['dropped']:,.0f} lines "
        f"({got['markers']:.0f} markers), peak buffered {got['peak_buffered']:,.0f} lines "
        f"(bound {20 * PER_HOST_LINES:,}), peak RSS {got['peak_rss_mb']:.0f} MB"
    )
    flat = config(fleet, redis, logs=lambda h: {"app": "seq 1 100000000"})
    got = await follow(flat, seconds)
    print(
        f"flat out (seq on every host): {got['lines_per_s']:,.0f} lines/s delivered, "
        f"dropped {got['dropped']:,.0f} (the reader is the limit), peak buffered "
        f"{got['peak_buffered']:,.0f}, peak RSS {got['peak_rss_mb']:.0f} MB"
    )
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of the bench process over everything: {maxrss:.0f} MB")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--skip-deploy", action="store_true")
    parser.add_argument("--skip-logs", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    with RedisServer() as redis, Fleet(20) as fleet:
        print(
            f"fleet of 20 hosts (sshd + app on 127.0.0.2-21) up in "
            f"{time.monotonic() - started:.1f} s"
        )
        if not args.skip_deploy:
            await deploys(fleet, redis, 1 if args.quick else 3)
        if not args.skip_logs:
            await logs(fleet, redis, 5.0 if args.quick else 10.0)


if __name__ == "__main__":
    asyncio.run(main())
