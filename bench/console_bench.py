"""The console under load, headless: start time, key-to-effect latency, memory, idle CPU.

Runs the Textual app with Pilot (``run_test``) on fixed-data services (tests/ui_support:
no network), so what is measured is the console itself:

- **cold start**: a fresh Python process, from launch to the first complete dashboard
  (status, flags and events shown), imports included;
- **key-to-effect**: ``f``, ``?``, ``e``, ``l`` pressed on the logs screen while it follows
  20,000 lines/s (batches every 10 ms), timed until the screen they open is on top (``l``
  from the flags screen, back to the open logs screen); ``s`` on the dashboard (its
  confirmation), which has no log pane of its own;
- **RSS** after 1,000,000 lines through the log pane (it keeps ``[console] log_lines``);
- **idle CPU**: the dashboard polling every second for 10 s, process CPU time / wall time.

    .venv/bin/python bench/console_bench.py [--keys 40] [--lines 1000000]

Prints ``measured / target`` lines. Headless rendering (no terminal I/O) flatters the
latencies a little; the relative cost of the log load is what it shows.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO, REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from textual.pilot import Pilot  # noqa: E402
from ui_support import FixedServices, fake_config, fixed_app  # noqa: E402

from console.core.logs import LogLine  # noqa: E402
from console.core.models import Colour  # noqa: E402
from console.screens.confirm import ConfirmScreen  # noqa: E402
from console.screens.events import EventsScreen  # noqa: E402
from console.screens.flags import FlagsScreen  # noqa: E402
from console.screens.help import HelpScreen  # noqa: E402
from console.screens.logs import LogsScreen  # noqa: E402
from console.widgets.log_pane import LogPane  # noqa: E402

RATE = 20_000
"""Log lines per second during the key-latency runs."""
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


class FloodServices(FixedServices):
    """Fixed data, plus logs that arrive at ``RATE`` lines per second."""

    def logs(
        self, colours: tuple[Colour, ...], *, lines: int = 50, grep: str | None = None
    ) -> AsyncGenerator[LogLine, None]:
        return _flood(colours)


async def _flood(colours: tuple[Colour, ...]) -> AsyncGenerator[LogLine, None]:
    batch = RATE // 100
    n = 0
    while True:
        started = time.perf_counter()
        for _ in range(batch):
            n += 1
            colour = colours[n % len(colours)]
            text = (
                f'10.0.0.{n % 250} - - "GET /item/{n} HTTP/1.1" {500 if n % 97 == 0 else 200} 812'
            )
            yield LogLine(colour, "app1", "access", text, time.time())
        await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - started)))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _until(pilot: Pilot[None], done: Callable[[], bool], limit: float = 5.0) -> bool:
    # Not pilot.pause(): Pilot waits for the screen to go idle, which a log flood never
    # lets it do; polling the condition measures what the operator sees.
    deadline = time.perf_counter() + limit
    while not done():
        if time.perf_counter() > deadline:
            return False  # counted as the limit: "no effect within 5 s"
        await asyncio.sleep(0.001)
    return True


async def _key(pilot: Pilot[None], key: str) -> None:
    """Press ``key`` the way a terminal does: queued, without waiting for idle."""
    pilot.app.simulate_key(key)
    await asyncio.sleep(0)


async def key_latencies(rounds: int) -> dict[str, list[float]]:
    """ms from a key press to its screen on top, per key, under the log flood."""
    tmp = Path(tempfile.mkdtemp())
    from console.app import ConsoleApp
    from console.screens.dashboard import DashboardScreen

    services = FloodServices.build(fake_config(tmp))
    app = ConsoleApp(
        services, dashboard=lambda s: DashboardScreen(s, poll_interval=1, live_updates=False)
    )
    found: dict[str, list[float]] = {k: [] for k in ("s", "f", "question_mark", "e", "l")}
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.pause(0.5)
        await _key(pilot, "l")
        await _until(pilot, lambda: isinstance(app.screen, LogsScreen))
        await asyncio.sleep(1.0)  # the flood is running
        logs = app.screen
        for _ in range(rounds):
            for key, kind in (
                ("f", FlagsScreen),
                ("question_mark", HelpScreen),
                ("e", EventsScreen),
            ):
                started = time.perf_counter()
                await _key(pilot, key)
                await _until(pilot, lambda kind=kind: isinstance(app.screen, kind))  # type: ignore[misc]
                found[key].append((time.perf_counter() - started) * 1000)
                if not isinstance(app.screen, kind):
                    continue  # the flood starved the key; nothing to go back from
                if key == "f":
                    started = time.perf_counter()
                    await _key(pilot, "l")
                    await _until(pilot, lambda: app.screen is logs)
                    found["l"].append((time.perf_counter() - started) * 1000)
                else:
                    await _key(pilot, "escape")
                    await _until(pilot, lambda: app.screen is logs)
                await asyncio.sleep(0.05)
        shown = len(logs.query_one(LogPane).lines)
        await _key(pilot, "escape")
        await _until(pilot, lambda: not isinstance(app.screen, LogsScreen))
        await asyncio.sleep(0.2)
        for _ in range(rounds):
            started = time.perf_counter()
            await _key(pilot, "s")
            await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            found["s"].append((time.perf_counter() - started) * 1000)
            await _key(pilot, "n")
            await asyncio.sleep(0.05)
    print(f"  (log pane held {shown} lines at the end)")
    return found


async def rss_after(lines: int) -> float:
    """MB of resident memory after ``lines`` lines went through one log pane."""
    app = fixed_app(Path(tempfile.mkdtemp()))
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.press("l")
        await pilot.pause(0.3)
        pane = app.screen.query_one(LogPane)
        # In batches, as the logs screen writes them (one view update per batch).
        for start in range(0, lines, 2000):
            pane.write_many(
                [
                    LogLine(Colour.BLUE, "app1", "access", f'"GET /item/{n} HTTP/1.1" 200 812', 0.0)
                    for n in range(start, min(lines, start + 2000))
                ]
            )
            await pilot.pause(0)
        await pilot.pause(0.2)
    return _rss_mb()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=40, help="presses per key")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines for the RSS run")
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args()

    cold = cold_start(args.cold_runs)
    print(
        f"cold start to a complete dashboard: median {statistics.median(cold):.2f} s "
        f"(max {max(cold):.2f}) / target <= 1.0 s"
    )
    keys = asyncio.run(key_latencies(args.keys))
    for key, values in keys.items():
        load = "" if key == "s" else f", logs following {RATE:,} lines/s"
        print(
            f"key {key!r} to effect: p99 {_p99(values):.0f} ms, median "
            f"{statistics.median(values):.0f} ms{load} / target p99 <= 100 ms"
        )
    rss = asyncio.run(rss_after(args.lines))
    print(f"RSS after {args.lines:,} followed lines: {rss:.0f} MB / target <= 200 MB")
    cpu = asyncio.run(idle_cpu(10.0))
    print(f"idle dashboard CPU: {cpu:.1f} % of a core / target <= 5 %")


if __name__ == "__main__":
    main()
