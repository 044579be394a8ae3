"""The nginx router against a real nginx: rewrite + reload moves traffic; failures roll back."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import httpx
import pytest
from configs import config_data
from servers import HttpBackend, HttpBackendFactory, NginxServer, SshServer

from console.core.config import Config, parse_config
from console.core.errors import RouterError
from console.core.models import Colour
from console.core.remote_exec import SshExecutor
from console.core.router.nginx import NginxRouter, render

pytestmark = pytest.mark.integration


def nginx_config(nginx: NginxServer, blue_url: str, green_url: str, **router: Any) -> Config:
    settings: dict[str, Any] = {
        "kind": "nginx",
        "upstream_file": str(nginx.upstream_file),
        "reload_command": nginx.reload_command(),
        "test_command": nginx.test_command(),
    }
    settings.update(router)
    # Port 0 is refused by the configuration, as it must be; the tests that need nginx
    # itself to reject an upstream put it in after parsing.
    rejected = {c: u for c, u in ((Colour.BLUE, blue_url), (Colour.GREEN, green_url))
                if u.endswith(":0")}  # fmt: skip
    data = config_data(
        redis_url="redis://127.0.0.1:1/0",
        blue_url=blue_url.removesuffix(":0") + (":1" if blue_url.endswith(":0") else ""),
        green_url=green_url.removesuffix(":0") + (":1" if green_url.endswith(":0") else ""),
        router=settings,
    )
    config = parse_config(data)
    for colour, url in rejected.items():
        env = config.envs[colour]
        hosts = tuple(dataclasses.replace(h, url=url) for h in env.hosts)
        config.envs[colour] = dataclasses.replace(env, hosts=hosts)
    return config


async def wait_served_by(nginx: NginxServer, colour: str, within: float = 5.0) -> float:
    """Seconds until a fresh request through nginx is answered by ``colour``."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{nginx.port}", timeout=5) as client:
        while True:
            response = await client.get("/", headers={"Connection": "close"})
            if response.headers.get("X-BG-Env") == colour:
                return time.monotonic() - started
            assert time.monotonic() - started < within, f"still not {colour}: {response.text}"
            await asyncio.sleep(0.02)


@pytest.fixture
def setup(
    nginx_factory: Any, http_backend_factory: HttpBackendFactory
) -> tuple[NginxServer, HttpBackend, HttpBackend]:
    blue = http_backend_factory("blue")
    green = http_backend_factory("green")
    nginx: NginxServer = nginx_factory(blue)
    return nginx, blue, green


async def test_switch_rewrites_reloads_and_moves_traffic(
    setup: tuple[NginxServer, HttpBackend, HttpBackend],
) -> None:
    nginx, blue, green = setup
    router = NginxRouter(nginx_config(nginx, blue.url, green.url))
    assert (await router.state()).live is Colour.BLUE
    await wait_served_by(nginx, "blue")

    state = await router.switch(Colour.GREEN)
    assert state.live is Colour.GREEN
    await wait_served_by(nginx, "green")
    text = nginx.upstream_file.read_text()
    assert text.startswith("# managed by bgconsole: live=green")
    assert f"server {green.address};" in text
    assert blue.address not in text
    assert "keepalive 8;" in text  # the block's other directives are kept

    state = await router.state()
    assert state.live is Colour.GREEN
    targets = {t.colour: t.state for t in state.targets}
    assert targets == {Colour.GREEN: "active", Colour.BLUE: "standby"}

    await router.switch(Colour.BLUE)
    await wait_served_by(nginx, "blue")


async def test_rejected_config_restores_the_old_file_and_keeps_serving(
    setup: tuple[NginxServer, HttpBackend, HttpBackend],
) -> None:
    nginx, blue, _ = setup
    before = nginx.upstream_file.read_text()
    # Port 0 parses as a URL, but nginx rejects it in an upstream: the test command fails.
    router = NginxRouter(nginx_config(nginx, blue.url, "http://127.0.0.1:0"))
    with pytest.raises(RouterError, match=r"nginx test failed \(.*invalid port.*restored"):
        await router.switch(Colour.GREEN)
    assert nginx.upstream_file.read_text() == before
    await wait_served_by(nginx, "blue")


async def test_failed_reload_without_test_command_also_rolls_back(
    setup: tuple[NginxServer, HttpBackend, HttpBackend],
) -> None:
    nginx, blue, _ = setup
    before = nginx.upstream_file.read_text()
    router = NginxRouter(nginx_config(nginx, blue.url, "http://127.0.0.1:0", test_command=""))
    with pytest.raises(RouterError, match=r"nginx reload failed .*restored"):
        await router.switch(Colour.GREEN)
    assert nginx.upstream_file.read_text() == before
    await wait_served_by(nginx, "blue")
    # nginx is still alive and reloadable with the restored file.
    assert nginx.reload().returncode == 0


async def test_missing_file_and_missing_block_are_clear_errors(
    setup: tuple[NginxServer, HttpBackend, HttpBackend],
) -> None:
    nginx, blue, green = setup
    router = NginxRouter(
        nginx_config(nginx, blue.url, green.url, upstream_file=str(nginx.dir / "nope.conf"))
    )
    with pytest.raises(RouterError, match=r"nope\.conf does not exist"):
        await router.state()
    router = NginxRouter(nginx_config(nginx, blue.url, green.url, upstream_name="shop"))
    with pytest.raises(RouterError, match=r"no 'upstream shop \{ \.\.\. \}' block"):
        await router.switch(Colour.GREEN)


def test_render_keeps_everything_but_the_servers() -> None:
    old = (
        "# managed by bgconsole: live=blue, written at X by y\n"
        "upstream other { server 10.0.0.9:80; }\n"
        "upstream app {\n    server 10.0.0.1:80 max_fails=3;\n    least_conn;\n}\n"
    )
    new = render(old, "app", ["10.0.0.2:80", "10.0.0.3:80"], "# managed by bgconsole: live=green")
    assert new == (
        "# managed by bgconsole: live=green\n"
        "upstream other { server 10.0.0.9:80; }\n"
        "upstream app {\n    server 10.0.0.2:80;\n    server 10.0.0.3:80;\n    least_conn;\n}\n"
    )


async def test_over_ssh_the_file_goes_by_sftp_and_the_reload_by_exec(
    setup: tuple[NginxServer, HttpBackend, HttpBackend], ssh_server: SshServer
) -> None:
    nginx, blue, green = setup
    config = nginx_config(nginx, blue.url, green.url, ssh=ssh_server.target)
    assert config.router.ssh is not None
    router = NginxRouter(
        config,
        SshExecutor(config.router.ssh, config.ssh, connect_options=ssh_server.connect_kwargs()),
    )
    try:
        assert (await router.switch(Colour.GREEN)).live is Colour.GREEN
        await wait_served_by(nginx, "green")
        assert (await router.state()).live is Colour.GREEN
        # A rejected config over SSH is rolled back too.
        bad = NginxRouter(
            nginx_config(nginx, "http://127.0.0.1:0", green.url, ssh=ssh_server.target),
            SshExecutor(config.router.ssh, config.ssh, connect_options=ssh_server.connect_kwargs()),
        )
        with pytest.raises(RouterError, match="restored"):
            await bad.switch(Colour.BLUE)
        await bad.aclose()
        assert f"server {green.address};" in nginx.upstream_file.read_text()
    finally:
        await router.aclose()
