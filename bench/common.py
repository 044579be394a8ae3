"""Shared benchmark helpers: nginx backends, HAProxy, wrk runs, a fixed-rate load generator.

Bench scripts run as ``python bench/<name>.py`` from the repository root, so they import
this module as ``from common import ...`` (``bench/`` is ``sys.path[0]``); ``REPO`` is put
on ``sys.path`` here so ``import console`` works without installing the package.

Everything listens on 127.0.0.1 only, lives in a short temp dir under /tmp, runs in its
own session and is stopped by PID / process group, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from console.demo.processes import die_with_parent  # noqa: E402  (needs REPO on the path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until 127.0.0.1:port accepts connections; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s") from None
            time.sleep(0.01)


def need(binary: str) -> str:
    """The path of a required binary, or exit with an install hint."""
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/local/sbin/{binary}") if os.path.exists(p)),
        None,
    )
    if path is None:
        sys.exit(f"bench: {binary} not installed (apt-get install {binary})")
    return path


class Process:
    """A server process in its own session and temp dir, stopped by PID and group."""

    def __init__(self, argv: Sequence[str], port: int, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None, name: str = "proc") -> None:  # fmt: skip
        self.argv = list(argv)
        self.port = port
        self.name = name
        self.dir = cwd or Path(tempfile.mkdtemp(prefix="bgb", dir="/tmp"))
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def start(self, timeout: float = 10.0) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self.env,
                start_new_session=True,
                # Own session (stopped by process group), yet gone if the bench is killed.
                preexec_fn=die_with_parent,
            )
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the process group; SIGKILL after 5 s."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def nginx_backend(colour: str, body: str | None = None, port: int | None = None) -> Process:
    """An nginx (1 worker) answering every request with a small fixed body.

    Responses carry ``X-BG-Env: <colour>`` like the real app; nginx keeps client
    keep-alive connections open for 10 000 requests so the backend is never the
    bottleneck of a proxy benchmark.
    """
    binary = need("nginx")
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="bgn", dir="/tmp"))
    temp = root / "temp"
    temp.mkdir()
    text = body if body is not None else f"{colour} ok\n"
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join(f"    {k}_temp_path {temp}/{k};\n" for k in ("client_body", "proxy"))
    (root / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log crit;\n"
        "events { worker_connections 4096; }\n"
        "http {\n    access_log off;\n"
        f"{temps}"
        "    keepalive_requests 100000;\n"
        "    server {\n"
        f"        listen {HOST}:{port} backlog=4096;\n"
        "        location / {\n"
        f"            add_header X-BG-Env {colour};\n"
        "            default_type text/plain;\n"
        f"            return 200 {_nginx_quote(text)};\n"
        "        }\n    }\n}\n"
    )
    argv = [binary, "-p", f"{root}/", "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"]
    return Process(argv, port, cwd=root, name=f"nginx-{colour}")


def _nginx_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def haproxy(servers: Sequence[str], port: int | None = None, nbthread: int = 1) -> Process:
    """HAProxy (``nbthread``) on 127.0.0.1:port round-robin over ``servers`` (host:port)."""
    binary = need("haproxy")
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="bgh", dir="/tmp"))
    lines = "".join(f"    server s{i} {addr}\n" for i, addr in enumerate(servers))
    (root / "haproxy.cfg").write_text(
        f"global\n    nbthread {nbthread}\n    maxconn 4000\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n"
        "    timeout server 30s\n    option http-keep-alive\n"
        f"frontend fe\n    bind {HOST}:{port}\n    default_backend app\n"
        f"backend app\n    balance roundrobin\n    http-reuse always\n{lines}"
    )
    argv = [binary, "-f", str(root / "haproxy.cfg"), "-db"]
    return Process(argv, port, cwd=root, name="haproxy")


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses."""
    raw: str = field(repr=False, default="")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return math.nan
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    """Parse the text wrk 4.1 prints with ``--latency``."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx[1])
    return WrkResult(
        requests=int(total[1]) if total else 0,
        seconds=_ms(total[2] + total[3]) / 1000 if total else 0.0,
        rps=float(rps[1]) if rps else 0.0,
        p50_ms=_ms(p50[1]) if p50 else math.nan,
        p99_ms=_ms(p99[1]) if p99 else math.nan,
        errors=errors,
        raw=output,
    )


def run_wrk(
    url: str, *, threads: int = 2, connections: int = 64, duration: float = 5.0
) -> WrkResult:
    """Run wrk against ``url`` and parse its report."""
    binary = need("wrk")
    argv = [
        binary, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
        "--timeout", "5s", url,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    return parse_wrk(out.stdout + out.stderr)


@dataclass(frozen=True, slots=True)
class RateResult:
    """What a fixed-rate run measured; latency counts from each request's dispatch."""

    sent: int
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    seconds: float
    colours: dict[str, int] = field(default_factory=dict)
    """X-BG-Env of the answers: which colour served how many."""
    error_samples: tuple[str, ...] = ()


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, str]:
    """Read one HTTP/1.1 response (Content-Length bodies); its status and X-BG-Env."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    colour = ""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"x-bg-env":
            colour = value.strip().decode()
    if length:
        await reader.readexactly(length)
    return status, colour


async def fixed_rate(
    host: str,
    port: int,
    *,
    rate: float = 1000.0,
    duration: float = 5.0,
    connections: int = 32,
    path: str = "/",
    request_timeout: float = 5.0,
) -> RateResult:
    """Send GETs at a fixed rate over a pool of keep-alive connections; measure latency.

    wrk 4.1 has no fixed-rate mode (no ``-R``), hence this. Request ``i`` is scheduled
    at ``start + i / rate`` and handed to a free connection; its latency runs from that
    hand-out to the end of the response, including any wait for a free connection, so a
    stalled server shows up in the numbers instead of silently lowering the send rate
    (coordinated omission). A request that fails (connection error,
    timeout, non-2xx) counts as an error and its connection is replaced.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    total = int(rate * duration)
    latencies: list[float] = []
    colours: dict[str, int] = {}
    samples: list[str] = []
    errors = 0
    queue: asyncio.Queue[float | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal errors
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (scheduled := await queue.get()) is not None:
            try:
                async with asyncio.timeout(request_timeout):
                    if conn is None:
                        conn = await asyncio.open_connection(host, port)
                    conn[1].write(request)
                    status, colour = await read_response(conn[0])
                if not 200 <= status < 400:
                    raise ValueError(f"HTTP {status}")
                latencies.append((time.perf_counter() - scheduled) * 1000)
                colours[colour] = colours.get(colour, 0) + 1
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
                errors += 1
                if len(samples) < 5:
                    samples.append(f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # Stamp the request when it is handed out, not at its ideal instant: this loop's
        # own oversleeping is not the server's latency, but waiting for a free connection
        # (all busy with a stalled server) is, and still counts.
        queue.put_nowait(time.perf_counter())
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return RateResult(
        sent=total,
        ok=len(latencies),
        errors=errors,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=math.nan),
        seconds=time.perf_counter() - start,
        colours=colours,
        error_samples=tuple(samples),
    )


def report(name: str, measured: float, target: float, unit: str, *, higher: bool = True) -> bool:
    """Print ``name: measured / target unit  PASS|MISS`` and return whether it passed."""
    ok = measured >= target if higher else measured <= target
    sign = ">=" if higher else "<="
    verdict = "PASS" if ok else "MISS"
    print(f"{name:<44} {measured:>10.2f} / {sign} {target:g} {unit:<6} {verdict}", flush=True)
    return ok


def ratio(name: str, value: float, reference: float, reference_name: str) -> float:
    """Print and return ``value / reference`` as a percentage of a reference run."""
    pct = 100.0 * value / reference if reference else math.nan
    print(f"{name:<44} {pct:>10.1f} % of {reference_name} ({reference:.0f})", flush=True)
    return pct


@contextlib.contextmanager
def started(*procs: Process) -> Iterator[tuple[Process, ...]]:
    """Start processes in order; close them all (reverse order) on exit."""
    running: list[Process] = []
    try:
        for proc in procs:
            running.append(proc.start())
        yield tuple(running)
    finally:
        for proc in reversed(running):
            proc.close()


def redis_server(port: int | None = None) -> Process:
    """A throwaway redis-server (no persistence) on 127.0.0.1:port."""
    binary = need("redis-server")
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="bgr", dir="/tmp"))
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(root)]  # fmt: skip
    return Process(argv, port, cwd=root, name="redis")


def bgconsole_serve(config_text: str, port: int) -> Process:
    """``bgconsole serve`` (this checkout, via ``python -m console``) with a config text."""
    root = Path(tempfile.mkdtemp(prefix="bgs", dir="/tmp"))
    (root / "bgconsole.toml").write_text(config_text)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "console", "serve", "-c", str(root / "bgconsole.toml")]
    return Process(argv, port, cwd=root, env=env, name="bgconsole-serve")
