"""Faults under load: what breaks, what clients see, and whether everything agrees after.

Run from the repository root: ``python bench/faults.py [--rate 300] [--only NAME ...]``.

Each fault runs on a fresh rig: a redis-server (control plane), two HTTP apps (blue live,
green stand-by; small Python servers that accept GET and POST), and ``bgconsole serve``
(the agent with the builtin proxy) as its own process. A fixed-rate load of keep-alive
requests (3 GETs : 1 POST) goes through the proxy while the fault is injected. Printed
per fault:

- failed requests, idempotent (GET) / other (POST): any answer that is not 2xx, or none;
- time until consistent: from the fault to the moment the front door, the control plane
  and (at the end) ``bgconsole status --json`` all name the same live colour;
- the events the control plane recorded during the fault;
- consistent at the end: front door == control plane == ``status`` (router and live).

Targets (issue 9): consistent at the end in every trial; 0 failed idempotent requests in
every fault but "both down" and "agent SIGKILL" (the builtin proxy IS the agent: while it
is dead nothing answers; an external router keeps serving); failover working <= 2 s after
the control plane returns; nothing left running on hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from common import HOST, REPO, Process, free_port, redis_server

sys.path.insert(0, str(REPO / "tests"))
from deploy_support import deploy_config
from procscan import processes_with, unique_marker
from servers import HAProxyServer, HttpBackend, NginxServer, RedisServer, SshServer

from console.core.control import ControlPlane
from console.core.deploy import DeployRunner
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.ssh import SshPool

APP = "faults"


@dataclass
class Tally:
    """What the load saw."""

    get_failed: int = 0
    post_failed: int = 0
    sent: int = 0
    samples: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Row:
    fault: str
    tally: Tally
    consistent_after_s: float | None
    events: list[str]
    consistent: bool
    note: str = ""


class Rig:
    """redis + blue/green apps + one or two agents, blue live for an hour (no dwell)."""

    def __init__(self, *, agents: int = 1) -> None:
        self.redis = redis_server()
        self.blue = HttpBackend("blue", "1.0")
        self.green = HttpBackend("green", "2.0")
        self.ports = [free_port() for _ in range(agents)]
        self.agents: list[Process] = []
        self.config_path = Path("/tmp") / f"bgfaults-{os.getpid()}-{id(self)}.toml"

    def config(self, port: int) -> dict[str, Any]:
        return {
            "console": {"name": APP},
            "control": {"redis": f"redis://{HOST}:{self.redis.port}/0", "timeout": 0.5},
            "router": {"kind": "builtin", "listen": f"{HOST}:{port}", "verify_requests": 2},
            "failover": {
                "interval": 0.2,
                "timeout": 0.3,
                "fall": 2,
                "rise": 1,
                "min_dwell": 5.0,
                "restart_grace": 0.0,
            },
            "agent": {"heartbeat_interval": 0.3, "leader_lease": 2.0},
            "env": {"blue": {"url": self.blue.url}, "green": {"url": self.green.url}},
        }

    def agent(self, index: int) -> Process:
        path = self.config_path.with_suffix(f".{index}.toml")
        path.write_text(tomli_w.dumps(self.config(self.ports[index])))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "console", "serve", "-c", str(path)]
        return Process(argv, self.ports[index], env=env, name=f"agent{index}")

    async def start(self) -> None:
        self.redis.start()
        self.blue.start()
        self.green.start()
        control = self.control()
        try:  # blue live since an hour ago: min_dwell does not hold the first failover
            await control._redis.hset(
                control.key("active"),
                mapping={
                    "colour": "blue",
                    "epoch": 5,
                    "updated_at": time.time() - 3600,
                    "actor": "bench",
                    "reason": "",
                    "kind": "switch",
                },
            )
            await control._redis.set(control.key("failover:armed"), "1")
        finally:
            await control.aclose()
        for index in range(len(self.ports)):
            self.agents.append(self.agent(index).start())
        await asyncio.sleep(1.0)  # leadership and first probes

    def control(self) -> ControlPlane:
        return ControlPlane(f"redis://{HOST}:{self.redis.port}/0", APP, timeout=0.5)

    def close(self) -> None:
        for agent in self.agents:
            agent.close()
        for server in (self.blue, self.green):
            server.close()
        self.redis.close()
        for path in self.config_path.parent.glob(self.config_path.stem + "*"):
            path.unlink(missing_ok=True)


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _request(conn: Conn | None, port: int, method: str) -> Conn | None:
    """One request on a keep-alive connection (opened if needed); raises unless 2xx."""
    body = b"x" * 16 if method == "POST" else b""
    request = f"{method} / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n\r\n"
    if conn is None:
        conn = await asyncio.open_connection(HOST, port)
    conn[1].write(request.encode() + body)
    head = await conn[0].readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await conn[0].readexactly(length)
    if b"connection: close" in head.lower():
        conn[1].close()
        conn = None
    if not 200 <= status < 300:
        raise ValueError(f"HTTP {status}")
    return conn


async def load(port: int, rate: float, stop: asyncio.Event, tally: Tally) -> None:
    """GET/POST at a fixed rate over 16 keep-alive connections until ``stop`` is set."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def worker() -> None:
        conn: Conn | None = None
        while (method := await queue.get()) is not None:
            try:
                async with asyncio.timeout(10.0):
                    conn = await _request(conn, port, method)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
                if method == "GET":
                    tally.get_failed += 1
                else:
                    tally.post_failed += 1
                if len(tally.samples) < 3:
                    tally.samples.append(f"{method}: {type(e).__name__} {e}"[:80])
                if conn is not None:
                    conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait("POST" if i % 4 == 3 else "GET")
        tally.sent += 1
        i += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)


async def front_colour(port: int) -> str | None:
    try:
        async with asyncio.timeout(1.0):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-bg-env":
            return value.strip().decode()
    return None


async def cp_colour(rig: Rig) -> str | None:
    control = rig.control()
    try:
        state = await control.active()
        return state.colour.value if state else None
    except Exception:
        return None
    finally:
        await control.aclose()


async def wait_consistent(rig: Rig, port: int, since: float, limit: float = 20.0) -> float | None:
    """Seconds from ``since`` until the front door and the control plane agree."""
    while time.monotonic() - since < limit:
        front, cp = await front_colour(port), await cp_colour(rig)
        if front is not None and front == cp:
            return time.monotonic() - since
        await asyncio.sleep(0.05)
    return None


def status_json(rig: Rig, index: int = 0) -> dict[str, Any]:
    path = rig.config_path.with_suffix(f".{index}.toml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "console", "status", "--json", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    try:
        data: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        return {"error": (out.stderr or out.stdout).strip()[:200]}
    data["exit"] = out.returncode
    return data


async def events_since(rig: Rig, since_wall: float) -> list[str]:
    control = rig.control()
    try:
        return [
            f"{e.kind}/{e.outcome}"
            for e in await control.events(200)
            if e.at >= since_wall - 1.0 and e.kind not in ("lock",)
        ]
    except Exception as e:
        return [f"(events unreadable: {e})"]
    finally:
        await control.aclose()


Inject = Callable[[Rig], Awaitable[str]]


async def run_fault(name: str, inject: Inject, rate: float, *, agents: int = 1,
                    load_port: int = 0) -> Row:  # fmt: skip
    rig = Rig(agents=agents)
    try:
        await rig.start()
        port = rig.ports[load_port]
        stop, tally = asyncio.Event(), Tally()
        loader = asyncio.create_task(load(port, rate, stop, tally))
        await asyncio.sleep(1.0)
        wall, since = time.time(), time.monotonic()
        note = await inject(rig)
        settled = await wait_consistent(rig, port, since)
        await asyncio.sleep(1.0)
        stop.set()
        await loader
        status = await asyncio.to_thread(status_json, rig, load_port)
        front, cp = await front_colour(port), await cp_colour(rig)
        live = (status.get("active") or {}).get("colour")
        router = (status.get("router") or {}).get("live")
        # With both colours down nothing answers at the front door: consistent then
        # means the control plane, status and the router agree, and status raises the alarm.
        if name == "both colours down":
            alarm = (status.get("failover") or {}).get("alarm")
            consistent = cp == live == router and status.get("exit") == 1 and bool(alarm)
        else:
            consistent = front is not None and front == cp == live == router
        if not consistent:
            note += f" [front={front} cp={cp} status.live={live} status.router={router}"
            note += f" status: {str(status.get('error') or '')[:120]}]"
        if tally.samples and (tally.get_failed or tally.post_failed):
            note += " e.g. " + "; ".join(tally.samples[:2])
        events = await events_since(rig, wall)
        return Row(name, tally, settled, events, consistent, note.strip())
    finally:
        rig.close()


# -- the faults ---------------------------------------------------------------------------


async def live_sigkill(rig: Rig) -> str:
    rig.blue.kill()
    return ""


async def live_sigstop(rig: Rig) -> str:
    assert rig.blue.pid is not None
    os.kill(rig.blue.pid, signal.SIGSTOP)
    await asyncio.sleep(3.0)
    os.kill(rig.blue.pid, signal.SIGCONT)
    return "hung 3 s"


async def cp_sigkill_empty(rig: Rig) -> str:
    rig.redis.kill()
    await asyncio.sleep(1.0)
    rig.redis.start()
    back = time.monotonic()
    control = rig.control()
    try:  # failover must work again: kill the live app and time it from Redis's return
        await asyncio.sleep(0.5)
        rig.blue.kill()
        while time.monotonic() - back < 15:
            with contextlib.suppress(Exception):
                state = await control.active()
                if state is not None and state.colour is Colour.GREEN:
                    return f"failover {time.monotonic() - back:.2f} s after Redis returned"
            await asyncio.sleep(0.05)
        return "NO failover within 15 s of Redis returning"
    finally:
        await control.aclose()


async def cp_sigstop(rig: Rig) -> str:
    assert rig.redis.proc is not None
    os.kill(rig.redis.proc.pid, signal.SIGSTOP)
    await asyncio.sleep(10.0)
    os.kill(rig.redis.proc.pid, signal.SIGCONT)
    return "frozen 10 s"


async def agent_sigkill(rig: Rig) -> str:
    rig.agents[0].kill()
    await asyncio.sleep(1.0)  # systemd's RestartSec=1
    rig.agents[0] = rig.agent(0).start()
    return "restarted after 1 s"


async def leader_sigstop(rig: Rig) -> str:
    leader = rig.agents[0]
    assert leader.proc is not None
    os.kill(leader.proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(3.0)  # the stand-by agent takes the lease
        rig.blue.kill()
        control = rig.control()
        try:
            started = time.monotonic()
            while time.monotonic() - started < 10:
                state = await control.active()
                if state is not None and state.colour is Colour.GREEN:
                    return f"stand-by agent failed over in {time.monotonic() - started:.2f} s"
                await asyncio.sleep(0.05)
        finally:
            await control.aclose()
        return "NO failover by the stand-by agent"
    finally:
        os.kill(leader.proc.pid, signal.SIGCONT)


async def both_down(rig: Rig) -> str:
    rig.blue.kill()
    rig.green.kill()
    await asyncio.sleep(2.0)
    status = await asyncio.to_thread(status_json, rig)
    alarm = (status.get("failover") or {}).get("alarm")
    return f"status exit {status.get('exit')}, alarm: {alarm}"


async def switch_races(kind: str, trials: int) -> Row:
    """Opposite ``bgconsole switch`` commands at the same moment, as two processes."""
    return await asyncio.to_thread(_switch_races, kind, trials)


def _switch_races(kind: str, trials: int) -> Row:
    redis = redis_server().start()
    blue, green = HttpBackend("blue").start(), HttpBackend("green").start()
    router: HAProxyServer | NginxServer
    if kind == "haproxy":
        router = HAProxyServer(blue, green).start()
        extra = {"socket": str(router.socket_path), "state_file": str(router.state_file)}
    else:
        router = NginxServer(blue).start()
        extra = {
            "upstream_file": str(router.upstream_file),
            "reload_command": router.reload_command(),
            "test_command": router.test_command(),
        }
    front = f"http://{HOST}:{router.port}"
    path = Path(f"/tmp/bgraces-{os.getpid()}.toml")
    path.write_text(
        tomli_w.dumps(
            {
                "console": {"name": APP},
                "control": {"redis": f"redis://{HOST}:{redis.port}/0", "timeout": 1.0},
                "router": {"kind": kind, "public_url": front, "verify_requests": 2, **extra},
                "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tally, winners, settled, events, ok = Tally(), 0, 0.0, [], True
    try:
        for trial in range(trials):
            first, second = ("green", "blue") if trial % 2 == 0 else ("blue", "green")
            started = time.monotonic()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "console", "switch", colour, "--yes", "-c", str(path)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for colour in (first, second)
            ]
            outs = [p.communicate(timeout=60)[0] for p in procs]
            codes = [p.returncode for p in procs]
            winners += codes.count(0)
            status = _status_at(path)
            live = (status.get("active") or {}).get("colour")
            router_live = (status.get("router") or {}).get("live")
            served = asyncio.run(front_colour(router.port))
            settled = max(settled, time.monotonic() - started)
            if not (live == router_live == served) or codes.count(0) == 0:
                ok = False
                events.append(
                    f"trial {trial}: codes {codes} live={live} router={router_live} "
                    f"served={served} {outs[0][-80:]!r}"
                )
            bad = [o for c, o in zip(codes, outs, strict=True) if c not in (0, 1)]
            if bad:
                ok = False
                events.append(f"trial {trial}: {bad[0][-120:]!r}")
    finally:
        router.close()
        blue.close()
        green.close()
        redis.close()
        path.unlink(missing_ok=True)
    note = f"{winners} switches applied in {trials} trials of two"
    return Row(f"{trials}x opposite switches ({kind})", tally, settled, events[:3], ok, note)


def _status_at(path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "console", "status", "--json", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    try:
        data: dict[str, Any] = json.loads(out.stdout)
        return data
    except ValueError:
        return {}


async def deploy_fault(kind: str) -> Row:
    """A deploy over real sshd whose host dies, or whose lock expires, mid-step."""
    redis, ssh = RedisServer().start(), SshServer().start()
    app = HttpBackend("blue").start()
    workdir = Path(tempfile.mkdtemp(prefix="bgdeploy", dir="/tmp"))
    marker = unique_marker("bgbench")
    steps = [f"sh -c 'sleep 3' {marker}", "touch STEP2"]
    config = deploy_config(ssh, workdir, redis.url, app, steps=steps, health_timeout=2.0)
    control = ControlPlane(redis.url, config.console.name, timeout=1.0, actor="bench@here")
    other = ControlPlane(redis.url, config.console.name, timeout=1.0, actor="eve@there")
    pool, health = SshPool(config.ssh), HealthChecker(config, hysteresis=False)
    runner = DeployRunner(config, control, pool, health, lock_ttl=1.0, lock_renew_every=0.2)
    started = time.monotonic()
    note, ok = "", True
    try:
        task = asyncio.create_task(runner.deploy(Colour.BLUE, live_ok=True))
        await asyncio.sleep(1.0)
        if kind == "ssh":
            ssh.kill()
        else:  # the lock vanishes under the holder (it froze past the TTL) and is taken
            await control._redis.delete(control.key("lock:deploy:blue"))
            await other.acquire_lock("deploy:blue", "someone else", 30)
        try:
            result = await task
            outcome = (
                "unknown"
                if any(h.unknown for h in result.hosts)
                else ("ok" if result.ok else "failed")
            )
            note = f"deploy: {outcome}"
        except Exception as e:
            note = f"deploy raised: {str(e)[:90]}"
        leftovers = processes_with(marker)
        await asyncio.sleep(2.5 if kind == "ssh" else 0.5)
        leftovers = processes_with(marker)
        holder = await other.lock_info("deploy:blue")
        step2 = await asyncio.to_thread(os.path.exists, workdir / "STEP2")
        ok = not leftovers and not step2 and (kind == "ssh" or "lock lost" in note)
        if kind == "ssh":
            ok = ok and holder is None
        note += f"; left running: {len(leftovers)}; step 2 ran: {step2}"
        events = [f"{e.kind}/{e.outcome}" for e in await other.events(20)]
    finally:
        await pool.aclose()
        await health.aclose()
        await control.aclose()
        await other.aclose()
        for server in (app, ssh, redis):
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    name = "SSH host killed mid-deploy" if kind == "ssh" else "lock expiry mid-deploy"
    return Row(name, Tally(), time.monotonic() - started, events, ok, note)


FAULTS: dict[str, tuple[Inject, dict[str, int]]] = {
    "live app SIGKILL": (live_sigkill, {}),
    "live app SIGSTOP (hung)": (live_sigstop, {}),
    "control plane SIGKILL + empty restart": (cp_sigkill_empty, {}),
    "control plane SIGSTOP 10 s": (cp_sigstop, {}),
    "agent SIGKILL + restart": (agent_sigkill, {}),
    "two agents, leader SIGSTOPped": (leader_sigstop, {"agents": 2, "load_port": 1}),
    "both colours down": (both_down, {}),
}


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'fault':<40} {'failed GET/POST':>16} {'sent':>6} {'consistent in':>14} "
        f"{'at end':>7}  events / note"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        failed = f"{row.tally.get_failed} / {row.tally.post_failed}"
        settled = (
            f"{row.consistent_after_s:.2f} s" if row.consistent_after_s is not None else "never"
        )
        events = ", ".join(row.events[:6]) + (" ..." if len(row.events) > 6 else "")
        print(
            f"{row.fault:<40} {failed:>16} {row.tally.sent:>6} {settled:>14} "
            f"{'yes' if row.consistent else 'NO':>7}  {events}"
        )
        if row.note:
            print(f"{'':<40} {'':>16} {'':>6} {'':>14} {'':>7}  {row.note}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--trials", type=int, default=10, help="switch race trials")
    parser.add_argument("--only", nargs="*", default=None, help="substring of fault names")
    args = parser.parse_args()
    rows: list[Row] = []
    for name, (inject, opts) in FAULTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        print(f"== {name}", flush=True)
        rows.append(await run_fault(name, inject, args.rate, **opts))
    for kind, label in (("ssh", "SSH host killed mid-deploy"), ("lock", "lock expiry mid-deploy")):
        if args.only and not any(o in label for o in args.only):
            continue
        print(f"== {label}", flush=True)
        rows.append(await deploy_fault(kind))
    for kind in ("haproxy", "nginx"):
        if args.only and not any(o in f"switches ({kind})" for o in args.only):
            continue
        print(f"== {args.trials}x opposite switches ({kind})", flush=True)
        rows.append(await switch_races(kind, args.trials))
    print()
    print_table(rows)
    return 0 if all(r.consistent for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
