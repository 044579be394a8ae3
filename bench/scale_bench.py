"""Scaling out: several routers, a Sentinel control plane, many apps.

Run from the repository root: ``python bench/scale_bench.py``. Prints measured / target:

1. switch across 3 HAProxy routers (``[[router]]``): time from the compare-and-set to all
   three confirming the new colour, median of 20 switches, target <= 50 ms; the same
   through one HAProxy as the reference;
2. control plane on Redis Sentinel: SIGKILL the primary, time from the sentinels'
   promotion to the first switch that succeeds again, target <= 10 s;
3. the overview of 50 apps on one control-plane Redis: one refresh (every app's control
   plane and leader agent read), median of 10, target <= 1 s.

Fleet figures (deploy to 20 hosts, logs from 20 hosts) are in ``bench/fleet_bench.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
from common import REPO, report

sys.path.insert(0, str(REPO / "tests"))
from sentinel_support import MASTER, SentinelSetup
from servers import HAProxyServer, HttpBackend, RedisServer, free_port

from console.core.apps import load_apps, summarize_all
from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import ConsoleError
from console.core.models import Colour
from console.core.router.factory import build_router
from console.core.router_sync import apply_live, wait_for_router


def routers_config(redis: RedisServer, blue: HttpBackend, green: HttpBackend,
                   fleet: list[HAProxyServer]) -> Config:  # fmt: skip
    return parse_config(
        {
            "console": {"name": "scale"},
            "control": {"redis": redis.url, "timeout": 1.0},
            "router": [
                {
                    "kind": "haproxy",
                    "name": f"lb{i + 1}",
                    "public_url": f"http://127.0.0.1:{ha.port}",
                    "socket": str(ha.socket_path),
                    "state_file": str(ha.state_file),
                }
                for i, ha in enumerate(fleet)
            ],
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )


async def flips(config: Config, control: ControlPlane, count: int) -> list[float]:
    """Milliseconds from each compare-and-set to every router confirming the colour."""
    router = build_router(config, control)
    times: list[float] = []
    try:
        for i in range(count):
            to = Colour.GREEN if i % 2 == 0 else Colour.BLUE
            state = await control.active()
            assert state is not None
            started = time.perf_counter()
            await control.switch(to, expected_epoch=state.epoch)
            await apply_live(control, router, purpose="bench", wait=5.0)
            confirmed = await wait_for_router(router, to, 5.0)
            assert confirmed.live is to, confirmed.detail
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await router.aclose()
    return times


async def several_routers() -> None:
    redis = RedisServer().start()
    blue, green = HttpBackend("blue").start(), HttpBackend("green").start()
    fleet = [HAProxyServer(blue, green).start() for _ in range(3)]
    try:
        config = routers_config(redis, blue, green, fleet)
        single = dataclasses.replace(config, routers=())
        control = ControlPlane(redis.url, "scale", actor="bench@here")
        try:
            await control.ensure_active(Colour.BLUE)
            one = statistics.median(await flips(single, control, 20))
            three = statistics.median(await flips(config, control, 20))
        finally:
            await control.aclose()
        print(f"{'switch confirmed, 1 HAProxy (reference)':<44} {one:>10.2f} ms")
        report("switch confirmed by all of 3 HAProxy", three, 50, "ms", higher=False)
    finally:
        for server in [*fleet, blue, green, redis]:
            server.close()


async def sentinel_recovery() -> None:
    setup = SentinelSetup()
    control = ControlPlane(
        "redis://", "scale", timeout=0.5, actor="bench@here",
        sentinels=tuple((h, int(p)) for h, p in (a.split(":") for a in setup.addresses)),
        master_name=MASTER,
    )  # fmt: skip
    try:
        await control.ensure_active(Colour.BLUE)
        setup.primary.kill()
        killed = time.monotonic()
        await asyncio.to_thread(setup.wait_promoted, 30.0)
        promoted = time.monotonic()
        while True:
            try:
                state = await control.active()
                if state is not None:
                    await control.switch(state.colour.other, expected_epoch=state.epoch)
                    break
            except ConsoleError:
                await asyncio.sleep(0.05)
        back = time.monotonic()
        print(f"{'sentinels promoted the replica after':<44} {promoted - killed:>10.2f} s")
        report("first switch works after the promotion", back - promoted, 10, "s", higher=False)
    finally:
        await control.aclose()
        setup.close()


async def overview(apps: int = 50) -> None:
    redis = RedisServer().start()
    directory = Path(tempfile.mkdtemp(prefix="bgapps", dir="/tmp"))
    try:
        for i in range(apps):
            data = {
                "console": {"name": f"app{i:02d}"},
                "control": {"redis": redis.url},
                "router": {"kind": "builtin", "listen": f"127.0.0.1:{free_port()}"},
                "env": {"blue": {"url": "http://127.0.0.1:1"},
                        "green": {"url": "http://127.0.0.1:2"}},
            }  # fmt: skip
            (directory / f"app{i:02d}.toml").write_text(tomli_w.dumps(data))
        entries = load_apps(directory)
        times = []
        for _ in range(10):
            started = time.perf_counter()
            summaries = await summarize_all(entries)
            times.append(time.perf_counter() - started)
            assert len(summaries) == apps
        report(f"overview of {apps} apps, one refresh", statistics.median(times), 1.0, "s",
               higher=False)  # fmt: skip
    finally:
        redis.close()
        shutil.rmtree(directory, ignore_errors=True)


async def main() -> None:
    await several_routers()
    await sentinel_recovery()
    await overview()


if __name__ == "__main__":
    asyncio.run(main())
