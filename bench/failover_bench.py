"""Failover under load: kill the live colour, or make it answer 500, at a fixed 1,000 req/s.

Run from the repository root: ``python bench/failover_bench.py [--rate 1000]``.

Each scenario starts a fresh redis-server (control plane), two nginx backends (blue
live, green stand-by), and ``bgconsole serve`` (the agent with the builtin proxy, default
``[failover]`` settings) in its own process, then sends GETs through the proxy at a fixed
rate, recording every answer with its time:

1. kill: SIGKILL blue's nginx. Measured: client errors, worst latency, and the time from
   the kill to the failover event in the control plane (target <= 1 s).
2. bad release: blue starts answering 500 (health too). Measured: 500s seen by clients
   and the time from the bad release to the last one (target <= interval x fall = 1 s).
3. the same with ``[router] retry_on_5xx = true``: target no 500 at all.

The active colour is written as if blue had been live for an hour, so the 30 s
``min_dwell`` after a switch does not hold the failover back (as in production).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import tomli_w
from common import HOST, REPO, Process, free_port, need, read_response, report, wait_for_port

APP = "bench"


def redis_process() -> Process:
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="bgr", dir="/tmp"))
    argv = [need("redis-server"), "--port", str(port), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--dir", str(root)]  # fmt: skip
    return Process(argv, port, cwd=root, name="redis")


def nginx_app(colour: str) -> tuple[Process, Path]:
    """An nginx "app" for one colour; creating the returned file makes it answer 500.

    nginx checks the file on every request (``if (-f ...)``), so a bad release takes
    effect at once and for every path, /health included, like a real broken deploy.
    """
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="bgn", dir="/tmp"))
    (root / "temp").mkdir()
    bad = root / "bad-release"
    user = "user root;\n" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log crit;\n"
        "events { worker_connections 4096; }\n"
        "http {\n    access_log off;\n"
        f"    client_body_temp_path {root}/temp/cb;\n    proxy_temp_path {root}/temp/px;\n"
        "    keepalive_requests 100000;\n"
        "    server {\n"
        f"        listen {HOST}:{port} backlog=4096;\n"
        "        default_type text/plain;\n"
        f"        add_header X-BG-Env {colour} always;\n"
        "        location / {\n"
        f'            if (-f {bad}) {{ return 500 "{colour} broken\\n"; }}\n'
        f'            return 200 "{colour} ok\\n";\n'
        "        }\n    }\n}\n"
    )
    argv = [need("nginx"), "-p", f"{root}/", "-c", "nginx.conf", "-e", "stderr",
            "-g", "daemon off;"]  # fmt: skip
    return Process(argv, port, cwd=root, name=f"nginx-{colour}"), bad


@dataclass(frozen=True, slots=True)
class Answer:
    at: float
    """Monotonic time the request was handed out."""
    status: int | None
    colour: str
    latency_ms: float
    error: str = ""


async def load(port: int, rate: float, duration: float, connections: int = 32) -> list[Answer]:
    """Fixed-rate GETs over keep-alive connections; every answer with its hand-out time.

    Like bench/common.fixed_rate, but keeping each answer's time, which the failover
    figures (time of the last 500) need.
    """
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    answers: list[Answer] = []
    queue: asyncio.Queue[float | None] = asyncio.Queue()

    async def worker() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (at := await queue.get()) is not None:
            try:
                async with asyncio.timeout(5.0):
                    if conn is None:
                        conn = await asyncio.open_connection(HOST, port)
                    conn[1].write(request)
                    status, colour = await read_response(conn[0])
                answers.append(Answer(at, status, colour, (time.monotonic() - at) * 1000))
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
                answers.append(Answer(at, None, "", (time.monotonic() - at) * 1000, repr(e)))
                if conn is not None:
                    conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.monotonic()
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(time.monotonic())
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return answers


class Rig:
    """redis + blue/green nginx + the agent, with blue live for an hour."""

    def __init__(self, retry_on_5xx: bool = False) -> None:
        self.redis = redis_process()
        self.blue, self.blue_bad = nginx_app("blue")
        self.green, self.green_bad = nginx_app("green")
        self.proxy_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bgf", dir="/tmp"))
        self.retry_on_5xx = retry_on_5xx
        self.agent: Process | None = None

    async def __aenter__(self) -> Rig:
        for proc in (self.redis, self.blue, self.green):
            proc.start()
        config: dict[str, Any] = {
            "console": {"name": APP},
            "control": {"redis": self.redis_url},
            "router": {
                "kind": "builtin",
                "listen": f"{HOST}:{self.proxy_port}",
                "retry_on_5xx": self.retry_on_5xx,
            },
            "env": {"blue": {"url": self.blue.url}, "green": {"url": self.green.url}},
        }
        path = self.dir / "bgconsole.toml"
        path.write_text(tomli_w.dumps(config))
        client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            await client.hset(
                f"bg:{APP}:active",
                mapping={"colour": "blue", "epoch": 1, "updated_at": time.time() - 3600,
                         "actor": "bench", "reason": "live for an hour"},
            )  # fmt: skip
        finally:
            await client.aclose()
        self.agent = Process(
            [sys.executable, "-m", "console", "serve", "-c", str(path)],
            self.proxy_port,
            cwd=self.dir,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            name="agent",
        ).start()
        wait_for_port(self.proxy_port)
        await asyncio.sleep(1.5)  # a few health rounds and a heartbeat: leader, hosts up
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in (self.agent, self.green, self.blue, self.redis):
            if proc is not None:
                proc.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis.port}/0"

    async def failover_event_at(self) -> float | None:
        """Wall-clock time of the first failover event, if any."""
        client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            events = await client.xrange(f"bg:{APP}:events")
        finally:
            await client.aclose()
        for _id, fields in events or []:
            if fields and fields.get("kind") == "failover" and fields.get("outcome") == "ok":
                return float(fields["at"])
        return None


async def scenario_kill(rate: float) -> dict[str, float]:
    async with Rig() as rig:
        task = asyncio.create_task(load(rig.proxy_port, rate, 6.0))
        # Land the kill anywhere in the probe interval: detection takes between
        # (fall - 1) and fall intervals depending on that phase.
        await asyncio.sleep(2.0 + random.uniform(0.0, 0.5))
        killed_wall, killed = time.time(), time.monotonic()
        rig.blue.kill()
        answers = await task
        event_at = await rig.failover_event_at()
        log = rig.agent.log_path.read_text() if rig.agent else ""
    if os.environ.get("BENCH_DEBUG"):
        print(log[-3000:])
    after = [a for a in answers if a.at >= killed]
    errors = [a for a in answers if a.status is None or a.status >= 500]
    return {
        "failover_s": (event_at - killed_wall) if event_at else float("inf"),
        "errors": float(len(errors)),
        "max_latency_ms": max(a.latency_ms for a in after),
        "green_after": float(sum(a.colour == "green" for a in after)),
        "requests": float(len(answers)),
    }


async def scenario_bad_release(rate: float, retry: bool) -> dict[str, float]:
    async with Rig(retry_on_5xx=retry) as rig:
        task = asyncio.create_task(load(rig.proxy_port, rate, 6.0))
        await asyncio.sleep(2.0 + random.uniform(0.0, 0.5))
        bad_wall, bad = time.time(), time.monotonic()
        rig.blue_bad.touch()
        answers = await task
        event_at = await rig.failover_event_at()
    fives = [a for a in answers if a.status is not None and a.status >= 500]
    other_errors = [a for a in answers if a.status is None]
    last_500 = max((a.at + a.latency_ms / 1000 for a in fives), default=bad) - bad
    return {
        "failover_s": (event_at - bad_wall) if event_at else float("inf"),
        "fives": float(len(fives)),
        "window_s": last_500,
        "other_errors": float(len(other_errors)),
        "requests": float(len(answers)),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the kill scenario")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    ok = True

    print(f"failover bench at {args.rate:g} req/s, default [failover] (0.5 s x fall 2)")
    # The detection delay depends on where in the probe interval the kill lands, so the
    # kill runs several times; the target applies to the worst run.
    kills = [await scenario_kill(args.rate) for _ in range(args.runs)]
    worst = max(kills, key=lambda k: k["failover_s"])
    results["kill"] = worst
    times = ", ".join(f"{k['failover_s']:.3f}" for k in kills)
    ok &= report("kill live: failover event after kill (worst)", worst["failover_s"], 1.0, "s",
                 higher=False)  # fmt: skip
    print(f"{'  each run (s)':<44} {times}")
    errors = sum(k["errors"] for k in kills)
    latency = max(k["max_latency_ms"] for k in kills)
    requests = sum(k["requests"] for k in kills)
    print(f"{'  client errors / max latency':<44} {errors:>10.0f} errors, "
          f"max {latency:.0f} ms, {requests:.0f} requests")  # fmt: skip

    bad = results["bad"] = await scenario_bad_release(args.rate, retry=False)
    ok &= report("bad release: 500s until none", bad["window_s"], 1.0, "s", higher=False)
    print(
        f"{'  500s seen by clients':<44} {bad['fives']:>10.0f} "
        f"(window {bad['window_s']:.3f} s, failover after {bad['failover_s']:.3f} s, "
        f"other errors {bad['other_errors']:.0f})"
    )

    retry = results["retry"] = await scenario_bad_release(args.rate, retry=True)
    ok &= report("bad release + retry_on_5xx: 500s seen", retry["fives"], 0, "", higher=False)
    print(f"{'  failover after':<44} {retry['failover_s']:>10.2f} s, "
          f"other errors {retry['other_errors']:.0f}")  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
