"""Two operators flipping opposite ways at the same moment, through real HAProxy and nginx.

Every trial must end with one winner per starting state (two switches that read the same
state never both apply; the loser is told who won and where traffic is), no switch whose
verification another one broke, and a router that serves the control plane's colour
(never both colours in maintenance).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from servers import HAProxyFactory, HttpBackend, HttpBackendFactory, NginxFactory, RedisServer

from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import ConflictError
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.router.factory import build_router
from console.core.switching import SwitchResult, perform_switch

pytestmark = pytest.mark.integration
TRIALS = 10


def config_for(redis_url: str, blue: HttpBackend, green: HttpBackend, **router: Any) -> Config:
    return parse_config(
        {
            "console": {"name": "races"},
            "control": {"redis": redis_url, "timeout": 1.0},
            "router": {"confirm_timeout": 5.0, "verify_requests": 2, **router},
            "failover": {"interval": 0.1, "timeout": 0.3, "fall": 2, "rise": 1, "min_dwell": 0},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "races", actor="observer@ci")
    await plane.ensure_active(Colour.BLUE)
    yield plane
    await plane.aclose()


async def _switch(config: Config, actor: str, to: Colour, delay: float = 0.0) -> SwitchResult:
    await asyncio.sleep(delay)
    control = ControlPlane.from_config(config.control, config.console.name, actor=actor)
    router = build_router(config, control)
    health = HealthChecker(config, hysteresis=False)
    try:
        return await perform_switch(config, control, router, health, to=to, reason=actor)
    finally:
        await health.aclose()
        await router.aclose()
        await control.aclose()


async def _race(config: Config, control: ControlPlane, front: str) -> None:
    raced = 0
    for trial in range(TRIALS):
        before = await control.active()
        assert before is not None
        # Opposite colours, the second a few milliseconds behind (0-190 ms over the
        # trials): the window where one is between "ready new" and "maint old".
        first, second = (
            (Colour.GREEN, Colour.BLUE) if trial % 2 == 0 else (Colour.BLUE, Colour.GREEN)
        )
        results = await asyncio.gather(
            _switch(config, "alice@j1", first),
            _switch(config, "bob@j2", second, delay=0.02 * trial),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        unexpected = [e for e in errors if not isinstance(e, ConflictError)]
        assert not unexpected, f"trial {trial}: {unexpected!r}"
        changed = [r for r in results if isinstance(r, SwitchResult) and r.changed]
        if len(changed) == 2:
            # Both changed only if the later one saw the earlier one's finished switch
            # (sequential, not a race): it started from that epoch and colour.
            first_done, second_done = sorted(changed, key=lambda r: r.epoch)
            assert second_done.epoch == first_done.epoch + 1, f"trial {trial}: {results!r}"
            assert second_done.before is first_done.after, f"trial {trial}: {results!r}"
        else:
            raced += 1
            assert len(changed) == 1, f"trial {trial}: nobody switched: {results!r}"
        after = await control.active()
        assert after is not None
        for error in errors:
            # The loser is told who won and what production now serves.
            assert "first" in str(error), str(error)
            assert f"production now serves {after.colour}" in str(error), str(error)
        router = build_router(config, control)
        try:
            state = await router.state()
        finally:
            await router.aclose()
        assert state.live is after.colour, f"trial {trial}: router {state} vs {after}"
        async with httpx.AsyncClient() as http:
            served = (await http.get(front + "/", timeout=5.0)).headers["x-bg-env"]
        assert served == after.colour.value
    assert raced >= TRIALS // 2, f"only {raced} of {TRIALS} trials were real races"


async def test_opposite_concurrent_switches_through_haproxy(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = backends
    haproxy = haproxy_factory(blue, green)
    front = f"http://127.0.0.1:{haproxy.port}"
    config = config_for(
        redis_server.url,
        blue,
        green,
        kind="haproxy",
        public_url=front,
        socket=str(haproxy.socket_path),
        state_file=str(haproxy.state_file),
    )
    await _race(config, control, front)


async def test_opposite_concurrent_switches_through_nginx(
    redis_server: RedisServer,
    control: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    nginx_factory: NginxFactory,
) -> None:
    blue, green = backends
    nginx = nginx_factory(blue)
    front = f"http://127.0.0.1:{nginx.port}"
    config = config_for(
        redis_server.url,
        blue,
        green,
        kind="nginx",
        public_url=front,
        upstream_file=str(nginx.upstream_file),
        reload_command=nginx.reload_command(),
        test_command=nginx.test_command(),
    )
    await _race(config, control, front)
