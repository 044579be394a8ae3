"""Shared fixtures: real servers on 127.0.0.1 (see servers.py) and config isolation.

A missing server binary skips the test locally but fails it when CI=true: in CI a missing
server is an install bug, never a reason to skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import (
    SFTP_SERVER,
    HAProxyFactory,
    HttpBackendFactory,
    NginxFactory,
    RedisServer,
    SshServer,
    find_binary,
    find_redis_server,
    require,
)


def _redis_binary() -> str:
    return require(find_redis_server(), "redis-server", "redis-server")


def _sshd_binary() -> str:
    sshd = require(find_binary("sshd"), "sshd", "openssh-server")
    sftp = SFTP_SERVER if os.path.exists(SFTP_SERVER) else None
    require(sftp, SFTP_SERVER, "openssh-sftp-server")
    return sshd


@pytest.fixture(autouse=True)
def _isolate_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's bgconsole config. HOME stays (sshd needs the user)."""
    monkeypatch.delenv("BGCONSOLE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server: ``.port``, ``.url``, ``.stop()``, ``.start()`` (same port)."""
    with RedisServer(binary=_redis_binary()) as server:
        yield server


@pytest.fixture
def redis_pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two independent redis-servers (e.g. blue's and green's)."""
    binary = _redis_binary()
    with RedisServer(binary=binary) as first, RedisServer(binary=binary) as second:
        yield first, second


@pytest.fixture
def ssh_server() -> Iterator[SshServer]:
    """OpenSSH sshd accepting a generated key; use ``ssh_server.connect_kwargs()``."""
    with SshServer(binary=_sshd_binary()) as server:
        yield server


@pytest.fixture
def ssh_server_pair() -> Iterator[tuple[SshServer, SshServer]]:
    """(jump, target): two sshd sharing one client key (same ``client_key_path`` contents),
    each with its own host key and known_hosts file."""
    binary = _sshd_binary()
    jump = SshServer(binary=binary)
    with jump, SshServer(binary=binary, client_key=jump.client_key) as target:
        yield jump, target


@pytest.fixture
def http_backend_factory() -> Iterator[HttpBackendFactory]:
    """``http_backend_factory(colour, version)`` -> a started HttpBackend; all torn down."""
    factory = HttpBackendFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def haproxy_factory() -> Iterator[HAProxyFactory]:
    """``haproxy_factory(blue, green, green_enabled=False, health_check=False, ...)``."""
    require(find_binary("haproxy"), "haproxy", "haproxy")
    factory = HAProxyFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def nginx_factory() -> Iterator[NginxFactory]:
    """``nginx_factory(upstream)`` -> a started NginxServer proxying to ``upstream``."""
    require(find_binary("nginx"), "nginx", "nginx-light")
    factory = NginxFactory()
    try:
        yield factory
    finally:
        factory.close()
