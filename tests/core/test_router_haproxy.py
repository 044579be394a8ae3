"""The HAProxy router against a real HAProxy: switch, state, persistence across reloads."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from configs import config_data
from servers import (
    HAProxyServer,
    HttpBackend,
    HttpBackendFactory,
    SshServer,
    free_port,
    short_tmpdir,
)

from console.core.config import Config, parse_config
from console.core.errors import RouterError
from console.core.models import Colour
from console.core.remote_exec import SshExecutor
from console.core.router.haproxy import HAProxyRouter, server_colour, target_state
from console.core.router.haproxy_api import ServerState, parse_servers_state

pytestmark = pytest.mark.integration


def haproxy_config(
    proxy: HAProxyServer, blue: HttpBackend, green: HttpBackend, **router: Any
) -> Config:
    settings: dict[str, Any] = {
        "kind": "haproxy",
        "socket": str(proxy.socket_path),
        "state_file": str(proxy.state_file),
    }
    settings.update(router)
    data = config_data(
        redis_url="redis://127.0.0.1:1/0", blue_url=blue.url, green_url=green.url, router=settings
    )
    return parse_config(data)


def served_by(proxy: HAProxyServer, requests: int = 6) -> set[str]:
    """The X-BG-Env of a few requests through HAProxy's frontend."""
    with httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}", timeout=5) as client:
        return {client.get("/").headers.get("X-BG-Env", "?") for _ in range(requests)}


@pytest.fixture
def setup(
    haproxy_factory: Any, http_backend_factory: HttpBackendFactory
) -> tuple[HAProxyServer, HttpBackend, HttpBackend]:
    blue = http_backend_factory("blue")
    green = http_backend_factory("green")
    proxy: HAProxyServer = haproxy_factory(blue, green)
    return proxy, blue, green


async def test_state_reports_the_configured_live_colour(
    setup: tuple[HAProxyServer, HttpBackend, HttpBackend],
) -> None:
    proxy, blue, green = setup
    router = HAProxyRouter(haproxy_config(proxy, blue, green))
    state = await router.state()
    assert state.live is Colour.BLUE
    by_colour = {t.colour: t for t in state.targets}
    assert by_colour[Colour.BLUE].state == "active"
    assert by_colour[Colour.GREEN].state == "maint"
    assert by_colour[Colour.BLUE].address == blue.address
    assert by_colour[Colour.BLUE].host == "blue"


async def test_switch_moves_traffic_and_survives_a_reload(
    setup: tuple[HAProxyServer, HttpBackend, HttpBackend],
) -> None:
    proxy, blue, green = setup
    router = HAProxyRouter(haproxy_config(proxy, blue, green))
    assert served_by(proxy) == {"blue"}

    state = await router.switch(Colour.GREEN)
    assert state.live is Colour.GREEN
    assert served_by(proxy) == {"green"}
    assert proxy.state_file.read_text().startswith("1\n# be_id")

    # A full stop/start: only the state file can bring green back.
    proxy.reload()
    assert (await router.state()).live is Colour.GREEN
    assert served_by(proxy) == {"green"}

    await router.switch(Colour.BLUE)
    proxy.reload()
    assert (await router.state()).live is Colour.BLUE
    assert served_by(proxy) == {"blue"}


async def test_without_state_file_a_reload_reverts_and_state_says_so(
    setup: tuple[HAProxyServer, HttpBackend, HttpBackend],
) -> None:
    proxy, blue, green = setup
    config = parse_config(
        config_data(
            redis_url="redis://127.0.0.1:1/0",
            blue_url=blue.url,
            green_url=green.url,
            router={"kind": "haproxy", "socket": str(proxy.socket_path)},
        )
    )
    router = HAProxyRouter(config)
    state = await router.switch(Colour.GREEN)
    assert state.live is Colour.GREEN
    assert "state_file not set" in state.detail
    proxy.reload()
    assert (await router.state()).live is Colour.BLUE


async def test_tcp_socket_drain_and_weights(
    setup: tuple[HAProxyServer, HttpBackend, HttpBackend],
) -> None:
    proxy, blue, green = setup
    router = HAProxyRouter(
        haproxy_config(proxy, blue, green, socket=f"tcp://127.0.0.1:{proxy.admin_tcp_port}")
    )
    state = await router.set_weights({Colour.BLUE: 1, Colour.GREEN: 1})
    assert state.live is None
    assert "both colours" in state.detail
    assert served_by(proxy, 10) == {"blue", "green"}

    state = await router.drain(Colour.BLUE)
    assert {t.colour: t.state for t in state.targets}[Colour.BLUE] == "drain"
    assert state.live is Colour.GREEN
    assert served_by(proxy) == {"green"}

    # A switch back undoes drain and weight 0 alike.
    await router.set_weights({Colour.BLUE: 0})
    state = await router.switch(Colour.BLUE)
    assert state.live is Colour.BLUE
    assert served_by(proxy) == {"blue"}


async def test_wrong_backend_name_is_a_clear_error(
    setup: tuple[HAProxyServer, HttpBackend, HttpBackend],
) -> None:
    proxy, blue, green = setup
    router = HAProxyRouter(haproxy_config(proxy, blue, green, backend="shop"))
    with pytest.raises(RouterError, match=r"no backend 'shop' \(router.backend"):
        await router.switch(Colour.GREEN)
    assert served_by(proxy) == {"blue"}


async def test_unreachable_socket_fails_fast() -> None:
    with short_tmpdir() as tmp:
        data = config_data(
            redis_url="redis://127.0.0.1:1/0",
            blue_url="http://127.0.0.1:1",
            green_url="http://127.0.0.1:2",
            router={"kind": "haproxy", "socket": str(tmp / "missing.sock")},
        )
        router = HAProxyRouter(parse_config(data))
        started = time.monotonic()
        with pytest.raises(RouterError, match=r"missing\.sock"):
            await router.state()
        port = free_port()
        router = HAProxyRouter(
            parse_config(
                {**data, "router": {"kind": "haproxy", "socket": f"tcp://127.0.0.1:{port}"}}
            )
        )
        with pytest.raises(RouterError, match="runtime API"):
            await router.switch(Colour.GREEN)
        assert time.monotonic() - started < 2


def test_server_names_map_to_colours() -> None:
    assert server_colour("blue") is Colour.BLUE
    assert server_colour("Green-web1") is Colour.GREEN
    assert server_colour("blue_2") is Colour.BLUE
    assert server_colour("bluebird") is None
    assert server_colour("canary") is None


def test_parse_servers_state_rejects_garbage() -> None:
    with pytest.raises(RouterError, match="Unknown command"):
        parse_servers_state("Unknown command.\n")
    text = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
        "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
        "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
        "srv_fqdn srv_port\n"
        "3 app 1 blue 10.0.0.1 2 8 1 1 0 1 0 2 0 0 0 0 - 8080\n"
    )
    (server,) = parse_servers_state(text).servers
    assert server == ServerState("app", "blue", "10.0.0.1", 8080, 2, 8, 1, 1)
    assert target_state(server) == "drain"


async def test_over_ssh_the_socket_and_state_file_are_reached_through_sshd(
    setup: tuple[HAProxyServer, HttpBackend, HttpBackend], ssh_server: SshServer
) -> None:
    proxy, blue, green = setup
    config = haproxy_config(proxy, blue, green, ssh=ssh_server.target)
    assert config.router.ssh is not None
    executor = SshExecutor(
        config.router.ssh, config.ssh, connect_options=ssh_server.connect_kwargs()
    )
    router = HAProxyRouter(config, executor)
    try:
        state = await router.switch(Colour.GREEN)
        assert state.live is Colour.GREEN
        assert served_by(proxy) == {"green"}
        saved = parse_servers_state(proxy.state_file.read_text())  # written over SFTP
        assert {s.name: s.maint for s in saved.servers} == {"blue": True, "green": False}
        proxy.reload()
        assert (await router.state()).live is Colour.GREEN
    finally:
        await router.aclose()
