"""The console under load, headless: start time, key-to-effect latency, memory, idle CPU.

Runs the Textual app with Pilot (``run_test``) on fixed-data services (tests/ui_support:
no network). The hosts' logs come from a stand-in SSH pool that prints lines at a fixed
rate in 10 ms reads, through the real ``LogFollower`` (per-host buffers, gap markers)
and the real logs screen, so what is measured is the console itself:

- **cold start**: a fresh Python process, from launch to the first complete dashboard
  (status, flags and events shown), imports included;
- **key-to-effect** while the logs screen follows a flood: ``f``, ``?``, ``e`` pressed on
  the logs screen, ``l`` on the flags screen (back to the open logs screen), each timed
  from the key until the first frame showing the screen it opens (the console keeps the
  flags, events and help screens: the first press builds each, and is reported apart as
  well as counted; the others push it again and it reads its data again; back on the logs
  screen, the lines that came meanwhile follow a frame later); keys come 0.2 s apart,
  as an operator's would. Two floods: 2 hosts at 10,000 lines/s each (20,000
  lines/s, issue 11) and 20 hosts at 1,000 lines/s each (issue 14), and for reference
  the same keys over a quiet log (2 x 100 lines/s): the difference is the flood's share.
  Each key also reports the process CPU time it took (wall time on a busy machine also
  counts other processes' turns). ``s`` on the dashboard (its confirmation) is timed
  without a flood: the logs screen is closed there;
- **RSS** of the process after each flood has pushed 1,000,000 lines through it (each
  flood runs in its own process, so one does not inherit the other's memory);
- **idle CPU**: the dashboard polling every second for 10 s, process CPU time / wall time.

    .venv/bin/python bench/console_bench.py [--keys 40] [--lines 1000000]

Prints ``measured / target`` lines. Headless rendering (no terminal I/O) flatters the
latencies a little; the relative cost of the log load is what it shows. Experiments
with the collector (the console sets its own in ``ConsoleApp.on_ready``):
``BENCH_FREEZE=1`` calls ``gc.freeze()`` again once the dashboard is up, and
``BENCH_GC_THRESHOLD=700,10,10`` sets other thresholds (that one: Python's defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO, REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from configs import config_data, write_config  # noqa: E402
from textual.pilot import Pilot  # noqa: E402
from ui_support import FixedServices, fake_config  # noqa: E402

from console.core.config import Config, HostConfig  # noqa: E402
from console.core.logs import PER_HOST_LINES, LogFollower, LogLine  # noqa: E402
from console.core.models import Colour  # noqa: E402
from console.core.ssh import CommandExit, LineBatch  # noqa: E402
from console.screens.confirm import ConfirmScreen  # noqa: E402
from console.screens.events import EventsScreen  # noqa: E402
from console.screens.flags import FlagsScreen  # noqa: E402
from console.screens.help import HelpScreen  # noqa: E402
from console.screens.logs import LogsScreen  # noqa: E402
from console.widgets.log_pane import LogPane  # noqa: E402

FLOODS: dict[str, tuple[int, int]] = {"20k": (2, 10_000), "fleet": (20, 1_000), "quiet": (2, 100)}
"""Flood name -> (hosts, lines per second per host). ``quiet`` is the reference: the same
keys with the logs screen following 200 lines/s (what the keys cost without a flood)."""
TICK = 0.01
"""Seconds between two reads of a host's log command (a read carries rate * TICK lines)."""
GAP = 0.2
"""Seconds between an effect and the next key."""
TARGET_MS = 100
COLD_SCRIPT = """
import asyncio, sys, tempfile, time
from pathlib import Path
started = float(sys.argv[1])
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/tests"]
from ui_support import fixed_app
async def main():
    app = fixed_app(Path(tempfile.mkdtemp()))
    async with app.run_test(size=(120, 35)) as pilot:
        dash = app.screen
        while dash.report is None or dash.flags is None or not dash.events:
            await pilot.pause(0.005)
        await pilot.pause(0)
    print(time.time() - started)
asyncio.run(main())
"""


class FloodPool:
    """Stands in for ``SshPool``: every log command prints ``rate`` lines a second."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.sent = 0
        """Lines printed so far, over every host."""

    async def connection(self, host: HostConfig) -> None:
        return None

    async def stream_batches(
        self,
        host: HostConfig,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the SshPool signature)
    ) -> AsyncGenerator[LineBatch | CommandExit, None]:
        per_tick = max(1, round(self.rate * TICK))
        n = 0
        due = time.perf_counter()
        while True:
            lines = []
            for _ in range(per_tick):
                n += 1
                status = 500 if n % 97 == 0 else 200
                lines.append(f'10.0.0.{n % 250} - - "GET /item/{n} HTTP/1.1" {status} 812')
            self.sent += per_tick
            yield LineBatch(host.name, "stdout", tuple(lines), time.time())
            due += TICK
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

    async def aclose(self) -> None:
        return None


def flood_config(tmp: Path, hosts: int) -> Config:
    """A config with ``hosts`` hosts (half blue, half green), each with an access log."""
    data = config_data(
        redis_url="redis://127.0.0.1:9/0",
        blue_url="http://127.0.0.1:9",
        green_url="http://127.0.0.1:9",
        console={"name": "shop"},
        flags={"uploads": {"description": "Accept photo uploads"}},
    )
    for i, colour in enumerate(("blue", "green")):
        count = hosts // 2 + (hosts % 2 if i == 0 else 0)
        data["env"][colour] = {
            "hosts": [
                {
                    "name": f"app{n}",
                    "url": "http://127.0.0.1:9",
                    "ssh": "127.0.0.1",
                    "logs": {"access": "tail -F /var/log/app/access.log"},
                }
                for n in range(1, count + 1)
            ]
        }
    return write_config(tmp / "bgconsole.toml", data)


class FloodServices(FixedServices):
    """Fixed data; the hosts' logs come from a ``FloodPool``."""

    def logs(
        self, colours: tuple[Colour, ...], *, lines: int = 50, grep: str | None = None
    ) -> AsyncGenerator[LogLine, None]:
        # What Services.logs does, on the stand-in pool (screens that call it get the flood).
        hosts = [(c, host) for c in colours for host in self.config.env(c).hosts]
        follower = LogFollower(
            self.ssh, hosts, None, lines=lines, follow=True, per_host_lines=PER_HOST_LINES
        )
        return follower.stream()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Frames:
    """Records when each screen was last drawn (wraps ``App._display``)."""

    def __init__(self, app: Any) -> None:
        self.last: dict[int, float] = {}
        display = app._display

        def spy(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            if renderable is not None:
                self.last[id(screen)] = time.perf_counter()

        app._display = spy

    def drawn_since(self, screen: object, since: float) -> bool:
        return self.last.get(id(screen), 0.0) > since


async def _until(done: Callable[[], bool], limit: float = 5.0) -> bool:
    # Not pilot.pause(): Pilot waits for the screen to go idle, which a log flood never
    # lets it do; polling the condition measures what the operator sees.
    deadline = time.perf_counter() + limit
    while not done():
        if time.perf_counter() > deadline:
            return False  # counted as the limit: "no effect within 5 s"
        await asyncio.sleep(0.001)
    return True


CPU_MS: dict[str, list[float]] = {}
"""Per key: ms of this process's CPU time from the key to its effect (load-independent)."""


async def _press(pilot: Pilot[None], frames: Frames, key: str, target: Callable[[], Any]) -> float:
    """ms from ``key`` (queued, as a terminal sends it) to a frame of the screen it opens."""
    started, cpu = time.perf_counter(), time.process_time()
    pilot.app.simulate_key(key)

    def done() -> bool:
        screen = target()
        return screen is not None and frames.drawn_since(screen, started)

    await _until(done)
    CPU_MS.setdefault(key, []).append((time.process_time() - cpu) * 1000)
    return (time.perf_counter() - started) * 1000


def _on_top(app: Any, kind: type) -> Callable[[], Any]:
    return lambda: app.screen if isinstance(app.screen, kind) else None


async def flood_run(name: str, rounds: int, lines: int) -> dict[str, Any]:
    """Keys under one flood, then follow until ``lines`` lines were sent; RSS."""
    hosts, rate = FLOODS[name]
    services = FloodServices.build(flood_config(Path(tempfile.mkdtemp()), hosts))
    pool = FloodPool(rate)
    services.ssh = pool  # type: ignore[assignment]
    from console.app import ConsoleApp
    from console.screens.dashboard import DashboardScreen

    app = ConsoleApp(
        services, dashboard=lambda s: DashboardScreen(s, poll_interval=1, live_updates=False)
    )
    written = [0]
    # Lines reaching the pane (write_many where an older pane has no write_texts).
    method = "write_texts" if hasattr(LogPane, "write_texts") else "write_many"
    original = getattr(LogPane, method)

    def counting(pane: LogPane, texts: Any, *more: Any) -> None:
        written[0] += len(texts)
        original(pane, texts, *more)

    setattr(LogPane, method, counting)
    found: dict[str, list[float]] = {k: [] for k in ("f", "question_mark", "e", "l")}
    async with app.run_test(size=(120, 35)) as pilot:
        frames = Frames(app)
        await pilot.pause(0.5)
        if os.environ.get("BENCH_FREEZE"):
            gc.freeze()
        if os.environ.get("BENCH_GC_THRESHOLD"):
            gc.set_threshold(*map(int, os.environ["BENCH_GC_THRESHOLD"].split(",")))
        app.simulate_key("l")
        await _until(lambda: isinstance(app.screen, LogsScreen))
        logs = app.screen
        await asyncio.sleep(1.0)  # the flood is running
        started_sent, started_at, started_cpu = pool.sent, time.perf_counter(), time.process_time()
        written[0] = 0
        for _ in range(rounds):
            for key, kind in (
                ("f", FlagsScreen),
                ("question_mark", HelpScreen),
                ("e", EventsScreen),
            ):
                found[key].append(await _press(pilot, frames, key, _on_top(app, kind)))
                await asyncio.sleep(GAP)
                back = "l" if key == "f" else "escape"
                took = await _press(
                    pilot, frames, back, lambda: app.screen if app.screen is logs else None
                )
                if key == "f":
                    found["l"].append(took)
                await asyncio.sleep(GAP)
        keys_sent = pool.sent - started_sent
        keys_took = time.perf_counter() - started_at
        keys_cpu = time.process_time() - started_cpu
        keys_written = written[0]
        while pool.sent < lines:  # noqa: ASYNC110 (polling a counter)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        pane = logs.query_one(LogPane)
        follower = getattr(logs, "follower", None)
        result = {
            "hosts": hosts,
            "rate": hosts * rate,
            "keys": found,
            "cpu_ms": CPU_MS,
            "sent_during_keys": keys_sent,
            "written_during_keys": keys_written,
            "seconds_of_keys": keys_took,
            "cpu_of_keys": keys_cpu,
            "sent": pool.sent,
            "dropped": getattr(follower, "dropped", None),
            "superseded": getattr(logs, "superseded", None),
            "held": len(pane.lines),
            "rss_mb": _rss_mb(),
        }
        app.simulate_key("escape")
        await _until(lambda: not isinstance(app.screen, LogsScreen))
    return result


async def s_run(rounds: int) -> list[float]:
    """ms from ``s`` on the dashboard to a frame of its confirmation (no flood)."""
    from console.app import ConsoleApp
    from console.screens.dashboard import DashboardScreen

    services = FixedServices.build(fake_config(Path(tempfile.mkdtemp())))
    app = ConsoleApp(
        services, dashboard=lambda s: DashboardScreen(s, poll_interval=1, live_updates=False)
    )
    found = []
    async with app.run_test(size=(120, 35)) as pilot:
        frames = Frames(app)
        dash = app.screen
        await pilot.pause(1.0)
        for _ in range(rounds):
            found.append(await _press(pilot, frames, "s", _on_top(app, ConfirmScreen)))
            await asyncio.sleep(GAP)
            await _press(pilot, frames, "n", lambda: app.screen if app.screen is dash else None)
            await asyncio.sleep(GAP)
    return found


async def idle_cpu(seconds: float) -> float:
    """Percent of one core used by an idle dashboard polling every second."""
    from console.app import ConsoleApp
    from console.screens.dashboard import DashboardScreen

    services = FixedServices.build(fake_config(Path(tempfile.mkdtemp())))
    app = ConsoleApp(
        services, dashboard=lambda s: DashboardScreen(s, poll_interval=1, live_updates=False)
    )
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.pause(1.0)
        cpu, wall = time.process_time(), time.perf_counter()
        await pilot.pause(seconds)
        return (time.process_time() - cpu) / (time.perf_counter() - wall) * 100


def cold_start(runs: int) -> list[float]:
    """Seconds from launching a Python process to the first complete dashboard."""
    found = []
    for _ in range(runs):
        started = time.time()
        out = subprocess.run(
            [sys.executable, "-c", COLD_SCRIPT, repr(started), str(REPO)],
            capture_output=True,
            text=True,
            check=True,
        )
        found.append(float(out.stdout.strip().splitlines()[-1]))
    return found


def _in_child(case: str, rounds: int, lines: int) -> dict[str, Any]:
    """Run one case in a fresh process (its RSS is its own); its JSON result."""
    out = subprocess.run(
        [sys.executable, __file__, "--case", case, "--keys", str(rounds), "--lines", str(lines)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _key_line(key: str, values: list[float], load: str, cpu: list[float]) -> str:
    shown = "?" if key == "question_mark" else key
    return (
        f"key {shown!r} to effect: p99 {_p99(values):.0f} ms, median "
        f"{statistics.median(values):.0f} ms, max {max(values):.0f} ms, first {values[0]:.0f} ms"
        f" ({len(values)} presses"
        f"{load}; CPU per key median {statistics.median(cpu):.0f} ms, p99 {_p99(cpu):.0f} ms)"
        f" / target p99 <= {TARGET_MS} ms"
    )


def report_flood(name: str, result: dict[str, Any], rss_target: int | None) -> None:
    hosts, rate = FLOODS[name]
    load = f", {hosts} hosts x {rate:,} lines/s"
    for key, values in result["keys"].items():
        print(_key_line(key, values, load, result["cpu_ms"][key]))
    sent, written = result["sent_during_keys"], result["written_during_keys"]
    seconds = result["seconds_of_keys"]
    print(
        f"  followed during the keys: {sent / seconds:,.0f} lines/s sent, "
        f"{written / seconds:,.0f} lines/s written to the pane "
        f"({written / max(sent, 1):.0%}; over the whole run {result['dropped']} dropped by the "
        f"per-host buffers, {result['superseded']} superseded while the logs were covered), "
        f"pane holds {result['held']:,} lines; "
        f"CPU {result['cpu_of_keys'] / seconds:.0%} of a core"
    )
    if rss_target is None:
        return
    print(
        f"RSS after {result['sent']:,} followed lines ({hosts} hosts x {rate:,} lines/s): "
        f"{result['rss_mb']:.0f} MB / target <= {rss_target} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=40, help="presses per key")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines each flood sends")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--case", choices=sorted(FLOODS), help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=sorted(FLOODS), help="run only this flood")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(asyncio.run(flood_run(args.case, args.keys, args.lines))))
        return

    if not args.only:
        cold = cold_start(args.cold_runs)
        print(
            f"cold start to a complete dashboard: median {statistics.median(cold):.2f} s "
            f"(max {max(cold):.2f}) / target <= 1.0 s"
        )
    for name, rss_target in (("quiet", None), ("20k", 200), ("fleet", 300)):
        if args.only in (None, name):
            lines = 0 if rss_target is None else args.lines
            report_flood(name, _in_child(name, args.keys, lines), rss_target)
    if args.only:
        return
    print(_key_line("s", asyncio.run(s_run(args.keys)), ", no flood", CPU_MS["s"]))
    cpu = asyncio.run(idle_cpu(10.0))
    print(f"idle dashboard CPU: {cpu:.1f} % of a core / target <= 5 %")


if __name__ == "__main__":
    main()
