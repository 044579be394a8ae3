"""A switch whose control plane freezes or dies around the compare-and-set."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from servers import HAProxyFactory, HAProxyServer, HttpBackend, HttpBackendFactory, RedisServer

from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import ControlPlaneUnavailable
from console.core.health import HealthChecker
from console.core.models import ActiveState, Colour
from console.core.router.factory import build_router
from console.core.switching import SwitchResult, perform_switch

pytestmark = pytest.mark.integration


def haproxy_config(
    redis: RedisServer, blue: HttpBackend, green: HttpBackend, ha: HAProxyServer
) -> Config:
    return parse_config(
        {
            "console": {"name": "faults"},
            "control": {"redis": redis.url, "timeout": 0.5},
            "router": {
                "kind": "haproxy",
                "public_url": f"http://127.0.0.1:{ha.port}",
                "socket": str(ha.socket_path),
                "state_file": str(ha.state_file),
                "confirm_timeout": 3.0,
                "verify_requests": 2,
            },
            "failover": {"interval": 0.1, "timeout": 0.3, "fall": 2, "rise": 1, "min_dwell": 0},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
        }
    )


class FaultyPlane(ControlPlane):
    """A real control-plane client with a hook that fires a fault around the CAS."""

    def __init__(
        self, *args: Any, before_cas: Any = None, after_cas: Any = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.before_cas = before_cas
        self.after_cas = after_cas

    async def switch(self, to: Colour, **kwargs: Any) -> ActiveState:
        if self.before_cas is not None:
            self.before_cas()
        state = await super().switch(to, **kwargs)
        if self.after_cas is not None:
            self.after_cas()
        return state


@pytest.fixture
def backends(http_backend_factory: HttpBackendFactory) -> tuple[HttpBackend, HttpBackend]:
    return http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")


@pytest.fixture
async def observer(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, "faults", timeout=0.5, actor="observer@ci")
    await plane.ensure_active(Colour.BLUE)
    yield plane
    await plane.aclose()


async def _run(config: Config, control: ControlPlane, to: Colour) -> SwitchResult:
    router = build_router(config, control)
    health = HealthChecker(config, hysteresis=False)
    try:
        return await perform_switch(config, control, router, health, to=to, reason="fault")
    finally:
        await health.aclose()
        await router.aclose()


async def _served(front: str) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(front + "/", timeout=5.0)).headers["x-bg-env"]


async def test_a_switch_frozen_in_redis_never_lands_later(
    redis_server: RedisServer,
    observer: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = backends
    ha = haproxy_factory(blue, green)
    config = haproxy_config(redis_server, blue, green, ha)
    assert redis_server.pid is not None
    pid = redis_server.pid
    control = FaultyPlane(
        redis_server.url, "faults", timeout=0.5, actor="alice@j1",
        before_cas=lambda: os.kill(pid, signal.SIGSTOP),
    )  # fmt: skip
    try:
        with pytest.raises(ControlPlaneUnavailable) as caught:
            await _run(config, control, Colour.GREEN)
        assert "UNKNOWN" in str(caught.value) or "nothing changed" in str(caught.value)
    finally:
        os.kill(pid, signal.SIGCONT)
        await control.aclose()
    # Redis wakes up with the compare-and-set queued: its deadline has passed.
    await asyncio.sleep(1.5)
    state = await observer.active()
    assert state is not None
    assert (state.colour, state.epoch) == (Colour.BLUE, 1)
    assert await _served(f"http://127.0.0.1:{ha.port}") == "blue"


async def test_router_is_told_even_when_redis_dies_right_after_the_cas(
    redis_server: RedisServer,
    observer: ControlPlane,
    backends: tuple[HttpBackend, HttpBackend],
    haproxy_factory: HAProxyFactory,
) -> None:
    blue, green = backends
    ha = haproxy_factory(blue, green)
    config = haproxy_config(redis_server, blue, green, ha)
    control = FaultyPlane(
        redis_server.url, "faults", timeout=0.5, actor="alice@j1", after_cas=redis_server.kill
    )
    try:
        result = await _run(config, control, Colour.GREEN)
    finally:
        await control.aclose()
    # The epoch moved, so the router must follow and the result must say so.
    assert result.changed
    assert result.after is Colour.GREEN
    assert result.verification is not None
    assert result.verification.ok
    assert await _served(f"http://127.0.0.1:{ha.port}") == "green"
