"""Fleets: deploys to 20 hosts in batches, and logs from 20 hosts, on real OpenSSH.

Twenty hosts ``app1`` ... on 127.0.0.2-127.0.0.21 (an sshd and an HTTP app each, see
``tests/fleet_support.py``) and a redis-server on 127.0.0.1. Measures:

- deploy (two steps per host: write VERSION, tell the app its new version) to one host,
  then to 20 with ``--parallel 5`` behind a canary (1+5+5+5+4: five waves), the same as
  the runner was before the fleet work (no pre-connect, every host of both colours probed
  each health round), without a canary (4 batches), 20 one after another
  (``--parallel 1``), and 20 at once. The issue's target: 20 hosts at ``--parallel 5``
  within 1.5x one host x 4 batches. Rounds are interleaved (the machine is shared) and
  medians reported with the load average.
- what the machine itself does: the same steps over the OpenSSH client plus a curl of
  /health, one host vs 5 at once (no bgconsole): on 2 cores running 20 sshd and 20 apps,
  a wave of 5 costs about 2x one host whatever runs it.
- the same deploys with a restart that takes 0.5 s (``sleep``: I/O-bound, as real
  restarts mostly are), where the waves overlap as they would on separate machines.
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
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fleet_support import Fleet, FleetHost, fleet_config_data, release_steps  # noqa: E402
from servers import RedisServer  # noqa: E402

from console.core.config import Config, parse_config  # noqa: E402
from console.core.control import ControlPlane  # noqa: E402
from console.core.deploy import DeployRunner, HealthSource, render_step  # noqa: E402
from console.core.health import HealthChecker  # noqa: E402
from console.core.logs import PER_HOST_LINES, LogFollower  # noqa: E402
from console.core.models import Colour, HealthSnapshot  # noqa: E402
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


class EveryHost:
    """A health source that can only probe every host of both colours (``check_all``):
    how the deploy's health waits worked before they probed just the hosts concerned."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    async def check_all(self) -> HealthSnapshot:
        return await self.checker.check_all()


async def deploy(
    cfg: Config, ref: str, parallel: int, canary: bool = True, *, before: bool = False
) -> tuple[float, int, float, float]:
    """Seconds for one deploy (fresh connections, as the CLI has), its waves, the CPU
    seconds bgconsole itself used (the rest of the machine's work is the "hosts"), and
    the seconds spent in health waits between batches. ``before``: as the runner was
    before the fleet work (no pre-connect, every host of both colours probed each round).
    """
    control = ControlPlane(cfg.control.redis, cfg.console.name, actor="bench")
    pool = SshPool(cfg.ssh)
    health = HealthChecker(cfg, hysteresis=False)
    try:
        source: HealthSource = EveryHost(health) if before else health
        runner = DeployRunner(
            cfg, control, pool, source, parallel=parallel, canary=canary, preconnect=not before
        )
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


async def reference(fleet: Fleet, hosts: list[FleetHost], ref: str) -> float:
    """The same work without bgconsole: per host, the OpenSSH client runs both steps (one
    connection, one session), then curl asks the app's /health; hosts concurrently.
    What a wave costs on this machine whatever runs it."""

    async def run(argv: list[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"reference: {argv[0]} exited {proc.returncode}: {err.decode()}")

    async def one(host: FleetHost) -> None:
        steps = " && ".join(render_step(step, ref) for step in release_steps(host))
        await run([
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={fleet.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes", "-i", str(fleet.client_key_path),
            "-p", str(host.ssh.port), f"{host.ssh.user}@{host.address}",
            f"cd {shlex.quote(str(host.workdir))} && {steps}",
        ])  # fmt: skip
        await run(["curl", "-sSf", "-m", "5", "-o", "/dev/null", f"{host.app.url}/health"])

    started = time.monotonic()
    await asyncio.gather(*(one(h) for h in hosts))
    return time.monotonic() - started


def _slow_restart(host: FleetHost) -> list[str]:
    """The steps with a restart that takes 0.5 s (I/O: the host waits, no CPU)."""
    return [*release_steps(host), "sleep 0.5"]


async def deploys(fleet: Fleet, redis: RedisServer, repeat: int) -> None:
    print("## deploy (2 steps per host; health wait after each wave)")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start)")
    # Interleaved rounds: the machine is shared, so each round measures every case under
    # about the same load, and the medians compare like with like.
    cases: list[tuple[str, int, int, bool, bool, bool]] = [
        # name, hosts, parallel, canary, slow restart, before
        ("1 host", 1, 5, True, False, False),
        ("20 hosts, --parallel 5, canary", 20, 5, True, False, False),
        ("20 hosts, --parallel 5, canary, as before", 20, 5, True, False, True),
        ("20 hosts, --parallel 5 --no-canary (4 batches)", 20, 5, False, False, False),
        ("1 host, restart 0.5 s", 1, 5, True, True, False),
        ("20 hosts, --parallel 5, canary, restart 0.5 s", 20, 5, True, True, False),
    ]
    once = [
        ("20 hosts, --parallel 1 (sequential)", 20, 1, True, False, False),
        ("20 hosts, --parallel 20 --no-canary (all at once)", 20, 20, False, False, False),
    ]
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    healths: dict[str, list[float]] = {}
    waves: dict[str, int] = {}
    refs: dict[int, list[float]] = {1: [], 5: []}
    loads = [os.getloadavg()[0]]
    for i in range(repeat):
        for name, hosts, parallel, canary, slow, before in cases + (once if i == 0 else []):
            cfg = config(fleet, redis, hosts, steps=_slow_restart if slow else release_steps)
            took, waves[name], cpu, health = await deploy(
                cfg, f"r{_runs}-{i}", parallel, canary, before=before
            )
            times.setdefault(name, []).append(took)
            cpus.setdefault(name, []).append(cpu)
            healths.setdefault(name, []).append(health)
        for n in refs:
            refs[n].append(await reference(fleet, fleet.hosts[1 : 1 + n], f"ref{i}"))
        loads.append(os.getloadavg()[0])
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        spread = ", ".join(f"{x:.2f}" for x in t)
        print(
            f"{name:<52} {median[name]:6.2f} s  ({waves[name]} wave(s); runs: {spread}; "
            f"bgconsole CPU {statistics.median(cpus[name]):.2f} s; health waits "
            f"{statistics.median(healths[name]):.2f} s)"
        )
    ref1, ref5 = statistics.median(refs[1]), statistics.median(refs[5])
    print(
        f"reference without bgconsole (ssh + curl): 1 host {ref1:.2f} s, 5 hosts at once "
        f"{ref5:.2f} s = {ref5 / ref1:.2f}x one host (what a wave of 5 costs this machine)"
    )
    one, five = median["1 host"], median["20 hosts, --parallel 5, canary"]
    old = median["20 hosts, --parallel 5, canary, as before"]
    n = waves["20 hosts, --parallel 5, canary"]
    print(
        f"20 hosts --parallel 5: {five:.2f} s = {five / (one * 4):.2f}x one host x 4 batches "
        f"(target <= 1.5x); {five / (one * n):.2f}x one host x {n} waves (the canary is a "
        f"wave); as before: {old:.2f} s = {old / (one * 4):.2f}x; "
        f"{median['20 hosts, --parallel 1 (sequential)'] / five:.1f}x faster than sequential"
    )
    plain = median["20 hosts, --parallel 5 --no-canary (4 batches)"]
    print(
        f"  without the canary (exactly 4 batches of 5): {plain:.2f} s = "
        f"{plain / (one * 4):.2f}x one host x 4 batches"
    )
    # One host alone, then 4 waves of 5 at what a wave of 5 costs this machine.
    fair = one * (1 + 4 * ref5 / ref1)
    print(
        f"  the machine's share: a wave of 5 costs {ref5 / ref1:.2f}x one host without "
        f"bgconsole, so 1 + 4 such waves = {fair:.2f} s; bgconsole took {five / fair:.2f}x that"
    )
    slow1 = median["1 host, restart 0.5 s"]
    slow5 = median["20 hosts, --parallel 5, canary, restart 0.5 s"]
    print(
        f"restart of 0.5 s (I/O-bound steps): 20 hosts --parallel 5 {slow5:.2f} s = "
        f"{slow5 / (slow1 * 4):.2f}x one host ({slow1:.2f} s) x 4 batches; "
        f"{slow5 / (slow1 * n):.2f}x x {n} waves"
    )
    print(
        f"(load average during the rounds: {min(loads):.1f}-{max(loads):.1f}; "
        f"{os.cpu_count()} cores; 20 sshd + 20 apps on the same machine)"
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
    parser.add_argument("--repeat", type=int, help="deploy rounds (default 3, 1 with --quick)")
    args = parser.parse_args()
    started = time.monotonic()
    with RedisServer() as redis, Fleet(20) as fleet:
        print(
            f"fleet of 20 hosts (sshd + app on 127.0.0.2-21) up in "
            f"{time.monotonic() - started:.1f} s"
        )
        if not args.skip_deploy:
            await deploys(fleet, redis, args.repeat or (1 if args.quick else 3))
        if not args.skip_logs:
            await logs(fleet, redis, 5.0 if args.quick else 10.0)


if __name__ == "__main__":
    asyncio.run(main())
