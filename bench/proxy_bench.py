"""Benchmark of the builtin reverse proxy (``bgconsole serve``) against HAProxy and direct.

Run from the repository root: ``.venv/bin/python bench/proxy_bench.py`` (about a minute).

Backends are nginx (1 worker, fixed small body) so they are never the bottleneck. In one
go it measures, for direct-to-nginx, HAProxy (``nbthread 1``) and the builtin proxy:

- throughput with wrk -t2 -c64 -d5s (target: builtin >= 10 000 req/s and >= 20 % of HAProxy);
- p99 latency at a fixed 1 000 req/s (target: builtin <= 5 ms);
- the live backend killed under 1 000 req/s: client-visible errors (target 0) and the
  slowest request (target <= 100 ms).
"""

from __future__ import annotations

import asyncio
import sys
import time

from common import (
    HOST,
    Process,
    bgconsole_serve,
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


def serve_config(redis_url: str, port: int, blue: str, green: str) -> str:
    return f"""
[console]
name = "bench"
[control]
redis = "{redis_url}"
[router]
kind = "builtin"
listen = "{HOST}:{port}"
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


def main() -> int:
    passed = True
    with started(nginx_backend("blue"), nginx_backend("green"), redis_server()) as procs:
        blue, green, redis = procs
        print(f"backends: blue {blue.address}, green {green.address} (nginx, 1 worker)")
        direct = run_wrk(blue.url, duration=DURATION)
        print(f"direct nginx: {direct.rps:.0f} req/s, p99 {direct.p99_ms:.2f} ms")
        with started(haproxy([blue.address])) as (hap,):
            ref = run_wrk(hap.url, duration=DURATION)
            ref_rate = asyncio.run(fixed_rate(HOST, hap.port, rate=1000, duration=DURATION))
        print(
            f"haproxy nbthread 1: {ref.rps:.0f} req/s, p99 {ref.p99_ms:.2f} ms; "
            f"at 1000 req/s p99 {ref_rate.p99_ms:.2f} ms"
        )
        port = free_port()
        config = serve_config(f"redis://{redis.address}/0", port, blue.url, green.url)
        with started(bgconsole_serve(config, port)) as (serve,):
            time.sleep(0.5)  # first health round
            mine = run_wrk(serve.url, duration=DURATION)
            print(f"builtin: {mine.rps:.0f} req/s, p99 {mine.p99_ms:.2f} ms, errors {mine.errors}")
            rate = asyncio.run(fixed_rate(HOST, port, rate=1000, duration=DURATION))
            print(
                f"builtin at 1000 req/s: p50 {rate.p50_ms:.2f} ms, p99 {rate.p99_ms:.2f} ms, "
                f"max {rate.max_ms:.2f} ms, errors {rate.errors}"
            )
            errors, slowest, colours = asyncio.run(kill_live_under_load(port, blue))
            print(f"kill live under load: errors {errors}, slowest {slowest:.1f} ms, {colours}")
            time.sleep(0.3)
            log = serve.log_path.read_text()
            failover = [line for line in log.splitlines() if "event=failover" in line]
            print("failover logged:", failover[0] if failover else "none")
        print()
        passed &= report("builtin throughput (wrk -t2 -c64)", mine.rps, 10_000, "req/s")
        pct = ratio("builtin vs HAProxy nbthread 1", mine.rps, ref.rps, "HAProxy")
        passed &= report("builtin / HAProxy", pct, 20, "%")
        ratio("builtin vs direct nginx", mine.rps, direct.rps, "direct")
        passed &= report("builtin p99 at 1000 req/s", rate.p99_ms, 5.0, "ms", higher=False)
        passed &= report("kill live under load: errors", errors, 0, "", higher=False)
        passed &= report("kill live under load: slowest request", slowest, 100, "ms", higher=False)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
