"""Router flips under load: 100 switches at ~1,000 req/s: builtin, HAProxy, then nginx.

Run from the repository root: ``.venv/bin/python bench/router_flips_bench.py [--flips N]``.

Two nginx backends (blue, green) answer with ``X-BG-Env``. A fixed-rate client sends
GETs over keep-alive connections through the router while the router adapter flips the
live colour ``--flips`` times. Measured per router:

- failed requests (connection errors, resets, non-2xx) over the whole run;
- the time from ``switch()`` returning to the first response from the new colour
  (0 when one arrived before it returned), p50 / max;
- the duration of ``switch()`` itself (runtime API + state file, or rewrite + reload).

For the builtin router, ``switch()`` is what ``bgconsole switch`` does to it: the
compare-and-set in the control plane (Redis); the agent (``bgconsole serve``, a separate
process) follows through pub/sub.

Targets (the issue): builtin and HAProxy 0 failed requests, first response from the new
colour within 10 ms (builtin) / 50 ms (HAProxy) of switch returning; nginx: report the
per-flip time and resets.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    HOST,
    Process,
    bgconsole_serve,
    free_port,
    need,
    nginx_backend,
    percentile,
    read_response,
    redis_server,
    report,
    started,
)

from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import RouterError
from console.core.models import Colour
from console.core.router.base import Router, RouterState
from console.core.router.haproxy import HAProxyRouter
from console.core.router.nginx import NginxRouter

# The documented HAProxy setup (README): servers named after the colours, a runtime API
# socket at admin level, and the server-state file loaded at start so reloads keep the
# colour the console set.
HAPROXY_CFG = """\
global
    maxconn 4000
    stats socket {socket} mode 600 level admin
    server-state-file {state_file}

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    load-server-state-from-file global

frontend fe
    bind {host}:{port}
    default_backend app

backend app
    server blue {blue}
    server green {green} disabled
"""


@dataclass
class Load:
    """A fixed-rate keep-alive client recording every answer's colour and time."""

    port: int
    rate: float = 1000.0
    connections: int = 16
    answers: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    closed_idle: int = 0
    """Keep-alive connections the router closed while idle (seen before reuse, not failures)."""

    async def run(self, stop: asyncio.Event) -> None:
        request = f"GET / HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode()
        queue: asyncio.Queue[bool] = asyncio.Queue()

        async def worker() -> None:
            conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            while await queue.get():
                # Like any HTTP client, do not send on a keep-alive connection the server
                # has already closed: reconnect. A close racing the request still fails.
                if conn is not None and conn[0].at_eof():
                    self.closed_idle += 1
                    conn[1].close()
                    conn = None
                try:
                    async with asyncio.timeout(5):
                        if conn is None:
                            conn = await asyncio.open_connection(HOST, self.port)
                        conn[1].write(request)
                        status, colour = await read_response(conn[0])
                    if status != 200:
                        raise ValueError(f"HTTP {status}")
                    self.answers.append((time.perf_counter(), colour))
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
                    self.errors.append(f"{type(e).__name__}: {e}")
                    if conn is not None:
                        conn[1].close()
                    conn = None
            if conn is not None:
                conn[1].close()

        workers = [asyncio.create_task(worker()) for _ in range(self.connections)]
        start = time.perf_counter()
        while not stop.is_set():
            delay = start + self.sent / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(True)
            self.sent += 1
        for _ in workers:
            queue.put_nowait(False)
        await asyncio.gather(*workers)


@dataclass
class Flips:
    switch_ms: list[float] = field(default_factory=list)
    first_new_ms: list[float] = field(default_factory=list)
    """From switch() returning to the first answer from the new colour (0 if before)."""
    flip_ms: list[float] = field(default_factory=list)
    """From switch() being called to the first answer from the new colour."""


async def flip_under_load(router: Router, port: int, flips: int, gap: float) -> tuple[Load, Flips]:
    load = Load(port)
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(0.5)
    result = Flips()
    colour = Colour.BLUE
    for _ in range(flips):
        colour = colour.other
        began = time.perf_counter()
        await router.switch(colour)
        returned = time.perf_counter()
        result.switch_ms.append((returned - began) * 1000)
        await asyncio.sleep(gap)
        first = next((t for t, c in load.answers if t >= began and c == colour), math.nan)
        result.first_new_ms.append(max(0.0, (first - returned) * 1000))
        result.flip_ms.append((first - began) * 1000)
    stop.set()
    await task
    return load, result


def config_for(router: dict[str, str], blue: Process, green: Process) -> Config:
    return parse_config(
        {
            "console": {"name": "bench"},
            "control": {"redis": "redis://127.0.0.1:1/0"},
            "router": router,
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )


def summary(name: str, load: Load, flips: Flips) -> None:
    print(
        f"{name}: {len(flips.switch_ms)} flips, {load.sent} requests sent, "
        f"{len(load.answers)} answered, {len(load.errors)} failed "
        f"({', '.join(sorted(set(load.errors))[:3]) or 'none'})"
    )
    print(
        f"{name}: switch() p50 {percentile(flips.switch_ms, 50):.1f} ms, max "
        f"{max(flips.switch_ms):.1f} ms; first new-colour response after return p50 "
        f"{percentile(flips.first_new_ms, 50):.1f} ms, max {max(flips.first_new_ms):.1f} ms"
    )
    print(
        f"{name}: whole flip (switch() called -> first new-colour response) p50 "
        f"{percentile(flips.flip_ms, 50):.1f} ms, max {max(flips.flip_ms):.1f} ms; "
        f"idle keep-alive connections closed by the router: {load.closed_idle}"
    )


async def bench_haproxy(blue: Process, green: Process, flips: int) -> bool:
    root = Path(tempfile.mkdtemp(prefix="bgr", dir="/tmp"))
    port = free_port()
    socket, state_file = root / "admin.sock", root / "server-state"
    (root / "haproxy.cfg").write_text(
        HAPROXY_CFG.format(
            socket=socket,
            state_file=state_file,
            host=HOST,
            port=port,
            blue=blue.address,
            green=green.address,
        )
    )
    proxy = Process([need("haproxy"), "-f", str(root / "haproxy.cfg"), "-db"], port, cwd=root)
    with started(proxy):
        # HAProxy binds the stats socket before the frontend, so the port being open
        # (which started() waits for) means the socket is there.
        assert socket.exists(), f"haproxy made no runtime API socket at {socket}"
        config = config_for(
            {"kind": "haproxy", "socket": str(socket), "state_file": str(state_file)}, blue, green
        )
        load, result = await flip_under_load(HAProxyRouter(config), port, flips, 0.15)
    summary("haproxy", load, result)
    ok = report("haproxy failed requests", len(load.errors), 0, "req", higher=False)
    ok &= report(
        "haproxy first new response, max", max(result.first_new_ms), 50, "ms", higher=False
    )
    report("haproxy first new response, p50", percentile(result.first_new_ms, 50), 50, "ms",
           higher=False)  # fmt: skip
    return ok


class ControlPlaneFlip(Router):
    """The builtin router as ``bgconsole switch`` drives it: a CAS in the control plane."""

    kind = "builtin"

    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    async def state(self) -> RouterState:
        raise RouterError("not used by the bench")

    async def switch(self, to: Colour) -> RouterState:
        active = await self.control.ensure_active(Colour.BLUE)
        await self.control.switch(to, expected_epoch=active.epoch, reason="bench")
        return RouterState(self.kind, to)


async def bench_builtin(blue: Process, green: Process, flips: int) -> bool:
    port = free_port()
    redis = redis_server()
    config = f"""
[console]
name = "bench"
[control]
redis = "redis://127.0.0.1:{redis.port}/0"
[router]
kind = "builtin"
listen = "127.0.0.1:{port}"
[failover]
enabled = false
[env.blue]
url = "{blue.url}"
[env.green]
url = "{green.url}"
"""
    with started(redis), started(bgconsole_serve(config, port)):
        control = ControlPlane(f"redis://127.0.0.1:{redis.port}/0", "bench", actor="bench")
        try:
            load, result = await flip_under_load(ControlPlaneFlip(control), port, flips, 0.1)
        finally:
            await control.aclose()
    summary("builtin", load, result)
    ok = report("builtin failed requests", len(load.errors), 0, "req", higher=False)
    ok &= report("builtin first new response, max", max(result.first_new_ms), 10, "ms",
                 higher=False)  # fmt: skip
    ok &= report("builtin first new response, p50", percentile(result.first_new_ms, 50), 10,
                 "ms", higher=False)  # fmt: skip
    return ok


async def bench_nginx(blue: Process, green: Process, flips: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bgr", dir="/tmp"))
    port = free_port()
    temp = root / "temp"
    temp.mkdir()
    upstream = root / "upstream.conf"
    upstream.write_text(f"upstream app {{\n    server {blue.address};\n    keepalive 16;\n}}\n")
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join(f"    {k}_temp_path {temp}/{k};\n" for k in ("client_body", "proxy"))
    (root / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log crit;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n    access_log off;\n{temps}    include {upstream};\n"
        f"    server {{\n        listen {HOST}:{port};\n        location / {{\n"
        "            proxy_pass http://app;\n            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n        }\n    }\n}\n'
    )
    base = [need("nginx"), "-p", f"{root}/", "-c", "nginx.conf", "-e", "stderr"]
    proxy = Process([*base, "-g", "daemon off;"], port, cwd=root, name="nginx-front")
    with started(proxy):
        config = config_for(
            {
                "kind": "nginx",
                "upstream_file": str(upstream),
                "reload_command": " ".join([*base, "-s", "reload"]),
                "test_command": "",
            },
            blue,
            green,
        )
        load, result = await flip_under_load(NginxRouter(config), port, flips, 0.3)
    summary("nginx", load, result)
    per_flip = len(load.errors) / len(result.switch_ms)
    print(f"nginx: failed requests (resets) per flip {per_flip:.2f}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--skip-nginx", action="store_true")
    args = parser.parse_args()
    with started(nginx_backend("blue"), nginx_backend("green")) as (blue, green):
        ok = await bench_builtin(blue, green, args.flips)
        ok &= await bench_haproxy(blue, green, args.flips)
        if not args.skip_nginx:
            await bench_nginx(blue, green, args.flips)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
