"""The server fixtures work against the real servers and leave no process behind."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncssh
import httpx
import pytest
import redis.asyncio as aioredis
from servers import (
    HAProxyFactory,
    HAProxyServer,
    HttpBackend,
    HttpBackendFactory,
    ManagedServer,
    NginxFactory,
    RedisServer,
    SshServer,
    port_open,
    require,
    short_tmpdir,
)

pytestmark = pytest.mark.integration


def assert_gone(pids: list[int]) -> None:
    """Every pid is gone: os.kill(pid, 0) raises (zombies awaiting init count as gone)."""
    deadline = time.monotonic() + 5
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            if state == "Z":
                break
            assert time.monotonic() < deadline, f"process {pid} still alive"
            time.sleep(0.01)


def close_and_check(server: ManagedServer) -> None:
    pids = server.pids()
    assert pids, f"{server.name} is not running"
    directory = server.dir
    server.close()
    assert server.pid is None
    assert_gone(pids)
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def get(url: str, timeout: float = 5.0) -> httpx.Response:
    with httpx.Client(timeout=timeout) as client:
        return client.get(url)


def colour_via(url: str) -> str:
    return get(url).headers["X-BG-Env"]


def wait_for_colour(url: str, colour: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while colour_via(url) != colour:
        assert time.monotonic() < deadline, f"{url} never served {colour}"
        time.sleep(0.02)


# -- helpers -----------------------------------------------------------------------------


def test_short_tmpdir_is_short_and_removed() -> None:
    with short_tmpdir() as path:
        assert path.is_dir()
        assert len(str(path / "admin.sock")) < 40
    assert not path.exists()


@pytest.mark.parametrize("ci", ["true", None])
def test_missing_binary_skips_locally_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
        expected: type[BaseException] = pytest.skip.Exception
    else:
        monkeypatch.setenv("CI", ci)
        expected = pytest.fail.Exception
    with pytest.raises(expected, match="apt-get install haproxy"):
        require(None, "haproxy", "haproxy")
    assert require("/usr/sbin/haproxy", "haproxy", "haproxy") == "/usr/sbin/haproxy"


def test_config_discovery_is_isolated(tmp_path: Path) -> None:
    assert "BGCONSOLE_CONFIG" not in os.environ
    assert os.environ["XDG_CONFIG_HOME"] == str(tmp_path)


# -- redis ---------------------------------------------------------------------------------


async def test_redis_ping_stop_and_restart_on_same_port(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = aioredis.from_url(redis_server.url)
    try:
        assert await client.ping()
        await client.set("k", "v")
        port, old_pid = redis_server.port, redis_server.pid
        assert old_pid is not None

        redis_server.stop()
        assert_gone([old_pid])
        assert not port_open(port)
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()

        redis_server.start()
        assert redis_server.port == port
        assert await client.ping()
        assert await client.get("k") is None  # no persistence
    finally:
        await client.aclose()
    close_and_check(redis_server)


def test_redis_pair_is_independent(redis_pair: tuple[RedisServer, RedisServer]) -> None:
    first, second = redis_pair
    assert first.port != second.port
    assert first.ping()
    assert second.ping()
    first.stop()
    assert second.ping()
    close_and_check(second)


# -- sshd ----------------------------------------------------------------------------------


async def test_ssh_exec_and_sftp(ssh_server: SshServer) -> None:
    assert ssh_server.target == f"{ssh_server.user}@127.0.0.1:{ssh_server.port}"
    known = ssh_server.known_hosts_path.read_text()
    assert known.startswith(f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 AAAA")
    assert ssh_server.host_key_fingerprint.startswith("SHA256:")
    assert ssh_server.client_key_path.stat().st_mode & 0o777 == 0o600

    async with asyncssh.connect(**ssh_server.connect_kwargs()) as conn:
        result = await conn.run("echo hi", check=True)
        assert result.stdout == "hi\n"
        remote = str(ssh_server.dir / "sftp.txt")
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(remote, "w") as f:
                await f.write("via sftp")
            assert await sftp.exists(remote)
        cat = await conn.run(f"cat {remote}", check=True)
        assert cat.stdout == "via sftp"
    close_and_check(ssh_server)


async def test_ssh_wrong_known_hosts_is_rejected(ssh_server: SshServer, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_server.port} {other}")
    kwargs = ssh_server.connect_kwargs() | {"known_hosts": str(wrong)}
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with asyncssh.connect(**kwargs):
            pass


async def test_ssh_stop_ends_sessions_and_restart_keeps_keys(ssh_server: SshServer) -> None:
    async with asyncssh.connect(**ssh_server.connect_kwargs()) as conn:
        proc = await conn.create_process(f"tail -F {ssh_server.known_hosts_path}")
        line = await asyncio.wait_for(proc.stdout.readline(), 5)
        assert line.startswith("[127.0.0.1]")
        pids = ssh_server.pids()
        assert len(pids) >= 2  # listener + session processes (incl. tail)
        ssh_server.stop()
        assert_gone(pids)
        await asyncio.wait_for(conn.wait_closed(), 5)

    ssh_server.start()
    async with asyncssh.connect(**ssh_server.connect_kwargs()) as conn:  # same host key
        result = await conn.run("echo again", check=True)
        assert result.stdout == "again\n"
    close_and_check(ssh_server)


async def test_ssh_pair_jump_host(ssh_server_pair: tuple[SshServer, SshServer]) -> None:
    jump, target = ssh_server_pair
    assert jump.port != target.port
    assert jump.host_key_fingerprint != target.host_key_fingerprint
    async with (
        asyncssh.connect(**jump.connect_kwargs()) as tunnel,
        asyncssh.connect(**target.connect_kwargs(), tunnel=tunnel) as conn,
    ):
        result = await conn.run("echo through", check=True)
        assert result.stdout == "through\n"


# -- haproxy -------------------------------------------------------------------------------


def server_op_state(proxy: HAProxyServer, name: str) -> str:
    for line in proxy.command("show servers state app").splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "app" and fields[3] == name:
            return fields[5]
    raise AssertionError(f"no server app/{name}")


def test_haproxy_routes_and_switches_over_runtime_api(
    haproxy_factory: HAProxyFactory, http_backend_factory: HttpBackendFactory
) -> None:
    blue = http_backend_factory("blue", "1.0")
    green = http_backend_factory("green", "2.0")
    proxy = haproxy_factory(blue, green)
    url = f"http://127.0.0.1:{proxy.port}/"
    assert len(str(proxy.socket_path)) < 97
    assert proxy.state_file.parent == proxy.dir
    assert colour_via(url) == "blue"

    assert proxy.command("set server app/green state ready").strip() == ""
    assert proxy.command("set server app/blue state maint").strip() == ""
    assert colour_via(url) == "green"

    stats = proxy.command("show stat", tcp=True)  # the TCP admin socket works too
    assert stats.startswith("# pxname,svname,")

    proxy.save_state()
    proxy.reload()
    assert colour_via(url) == "green"  # persisted through the server-state file

    proxy.state_file.unlink()
    proxy.reload()
    assert colour_via(url) == "blue"  # without it the config (green disabled) wins
    close_and_check(proxy)


def test_haproxy_health_check_marks_failed_backend_down(
    haproxy_factory: HAProxyFactory, http_backend_factory: HttpBackendFactory
) -> None:
    blue = http_backend_factory("blue")
    green = http_backend_factory("green")
    proxy = haproxy_factory(blue, green, green_enabled=True, health_check=True)
    assert "option httpchk GET /health" in proxy.config_path.read_text()
    blue.set_mode("500")
    deadline = time.monotonic() + 5
    while server_op_state(proxy, "blue") != "0":  # 0 = stopped (down)
        assert time.monotonic() < deadline, "blue never marked DOWN"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{proxy.port}/"
    assert {colour_via(url) for _ in range(4)} == {"green"}


# -- nginx ---------------------------------------------------------------------------------


def test_nginx_routes_and_switches_by_reload(
    nginx_factory: NginxFactory, http_backend_factory: HttpBackendFactory
) -> None:
    blue = http_backend_factory("blue", "1.0")
    green = http_backend_factory("green", "2.0")
    proxy = nginx_factory(blue)
    url = f"http://127.0.0.1:{proxy.port}/"
    response = get(url)
    assert response.headers["X-BG-Env"] == "blue"
    assert response.headers["X-BG-Upstream"] == blue.address
    assert f"server {blue.address};" in proxy.upstream_file.read_text()
    assert str(proxy.prefix) in proxy.reload_command()
    assert proxy.reload_command().endswith("-s reload")
    assert proxy.test_command().endswith(" -t")

    proxy.write_upstream(green)
    proxy.reload()
    wait_for_colour(url, "green")

    # A broken include: the test command fails and the old config keeps serving.
    proxy.upstream_file.write_text("upstream app { server ; }\n")
    rc = os.system(proxy.test_command() + " 2>/dev/null")
    assert rc != 0
    # Old workers may answer briefly after a reload; wait rather than race them.
    wait_for_colour(url, "green")
    close_and_check(proxy)  # master and worker gone


# -- http backend ------------------------------------------------------------------------


def test_backend_endpoints_and_modes(http_backend_factory: HttpBackendFactory) -> None:
    backend = http_backend_factory("green", "2.1")
    health = get(backend.url + "/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "colour": "green", "version": "2.1"}
    page = get(backend.url + "/anything")
    assert page.headers["X-BG-Env"] == "green"
    assert page.headers["X-Version"] == "2.1"
    assert "green" in page.text
    with httpx.Client(timeout=5) as client:  # keep-alive: one connection, two requests
        posted = client.post(backend.url + "/orders", content=b"x" * 1234)
        assert "1234 bytes" in posted.text
        assert client.get(backend.url + "/").status_code == 200

    backend.set_mode("500")
    assert get(backend.url + "/").status_code == 500
    assert get(backend.url + "/health").status_code == 500

    backend.set_mode("slow", delay=0.3)
    started = time.monotonic()
    assert get(backend.url + "/").status_code == 200
    assert time.monotonic() - started >= 0.3

    backend.set_mode("hang")
    with pytest.raises(httpx.ReadTimeout):
        get(backend.url + "/", timeout=0.3)

    backend.set_mode("ok")
    assert get(backend.url + "/").status_code == 200
    assert backend.requests_served() >= 7


def test_backend_kill_and_start_on_same_port(http_backend_factory: HttpBackendFactory) -> None:
    backend: HttpBackend = http_backend_factory("blue")
    port, pid = backend.port, backend.pid
    assert pid is not None
    backend.kill()
    assert_gone([pid])
    with pytest.raises(httpx.ConnectError):
        get(backend.url + "/")

    backend.start()
    assert backend.port == port
    assert colour_via(backend.url + "/") == "blue"
    close_and_check(backend)
