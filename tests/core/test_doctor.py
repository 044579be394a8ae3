"""bgconsole doctor against real servers: each planted failure is found and named with its fix."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from doctor_support import setup_data, third_party_app
from servers import HttpBackendFactory, RedisServer, SshServer

from console.core.config import Config, parse_config
from console.core.doctor import Check, diagnose


def _config(data: dict[str, Any]) -> Config:
    return parse_config(data)


def _find(checks: Sequence[Check], area: str, subject: str) -> list[Check]:
    return [c for c in checks if c.area == area and c.subject == subject]


def _one(checks: Sequence[Check], area: str, subject: str) -> Check:
    found = _find(checks, area, subject)
    assert len(found) == 1, [c.line() for c in checks]
    return found[0]


@pytest.fixture
def setup(
    tmp_path: Path,
    redis_pair: tuple[RedisServer, RedisServer],
    ssh_server: SshServer,
    http_backend_factory: HttpBackendFactory,
) -> dict[str, Any]:
    control, flags = redis_pair
    workdir = tmp_path / "app"
    workdir.mkdir()
    (workdir / "app.log").write_text("started\n")
    redis.Redis.from_url(flags.url).set("flag:uploads", "ON")
    blue = http_backend_factory("blue", "1.0.0")
    green = http_backend_factory("green", "1.1.0")
    data = setup_data(control, flags, ssh_server, blue, green, workdir)
    data["router"] = {"kind": "command", "switch_command": "true", "state_command": "echo blue"}
    data["_servers"] = (control, flags, ssh_server, blue, green, workdir)
    return data


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}


async def test_a_working_setup_passes_with_every_check_named(setup: dict[str, Any]) -> None:
    report = await diagnose(_config(_clean(setup)))
    lines = [c.line() for c in report.checks]
    assert report.exit_code() == 0, "\n".join(lines)
    assert _one(report.checks, "control", "control plane").status == "ok"
    # The fixture's Redis runs without persistence: a warning, with the fix.
    persistence = _one(report.checks, "control", "persistence")
    assert persistence.status == "warn"
    assert "appendonly yes" in persistence.fix
    health = _one(report.checks, "health", "blue")
    assert health.status == "ok"
    assert "p95" in health.detail
    assert "probe timeout 400 ms" in health.detail
    assert _one(report.checks, "version", "green").detail == "json:version reads '1.1.0'"
    assert _one(report.checks, "ssh", "blue").status == "ok"
    files = _find(report.checks, "files", "blue")
    assert [c.status for c in files] == ["ok", "ok"]  # workdir, log file
    assert (
        _one(report.checks, "flags", "flag uploads").detail
        == "key 'flag:uploads': blue ON, green ON"
    )
    assert _one(report.checks, "router", "command").detail == "sends traffic to blue"
    assert report.duration < 5.0

    # The builtin router is the agent: with none running, traffic goes nowhere.
    report = await diagnose(_config({**_clean(setup), "router": {"kind": "builtin"}}))
    router = _one(report.checks, "router", "builtin")
    assert router.status == "fail"
    assert "no agent is running" in router.detail
    assert router.fix.startswith("start the agent, which is the builtin router: bgconsole serve")


async def test_a_third_party_app_slow_heavy_home_page_no_health_no_version(
    tmp_path: Path, setup: dict[str, Any]
) -> None:
    data = _clean(setup)
    with third_party_app(tmp_path, delay=0.5) as (url, _log):
        data["env"]["blue"].update(url=url)
        del data["env"]["blue"]["version"]
        # As the starter has it: /health, which this app does not have.
        report = await diagnose(_config(data))
        missing = _one(report.checks, "health", "blue")
        assert missing.status == "fail"
        assert missing.detail == f"GET {url}/health answered 404, want 200"
        assert missing.fix == "set env.blue.health_path to one that answers 200: /"
        version = _one(report.checks, "version", "blue")
        assert version.status == "warn"
        assert "version unknown" in version.detail

        # Pointed at /, as a new user would: slower than the probe timeout, and heavy.
        data["env"]["blue"]["health_path"] = "/"
        report = await diagnose(_config(data))
    found = _find(report.checks, "health", "blue")
    slow, home, heavy = found
    assert slow.status == "warn"
    assert "SLOWER than the timeout" in slow.detail
    assert "probe timeout 400 ms" in slow.detail
    assert "raise [failover] timeout above" in slow.fix
    assert home.status == "warn"
    assert "the health path is /" in home.detail
    assert heavy.status == "warn"
    assert "the health answer is 287 KB" in heavy.detail
    assert report.exit_code() == 0
    assert report.exit_code(strict=True) == 1


async def test_a_wrong_host_key_for_an_ssh_config_alias_names_the_resolved_host_and_port(
    tmp_path: Path, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh: SshServer = setup["_servers"][2]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host blueapp\n  HostName 127.0.0.1\n  Port {ssh.port}\n  User {ssh.user}\n"
        f"  IdentityFile {ssh.client_key_path}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    known = tmp_path / "known_hosts"
    known.write_text("")
    data = _clean(setup)
    data["ssh"].update(use_config=True, known_hosts=str(known))
    data["env"]["blue"].update(ssh="blueapp")
    del data["env"]["blue"]["identity"]
    report = await diagnose(_config(data))
    check = _one(report.checks, "ssh", "blue")
    assert check.status == "fail"
    assert "host key not in" in check.detail
    assert check.fix.startswith(f"ssh-keyscan -p {ssh.port} 127.0.0.1 >> {known} ")
    assert f"blueapp resolves to 127.0.0.1:{ssh.port}" in check.fix
    # The fix works as written.
    command = check.fix.split(" (")[0].split(";")[0]
    scan = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(scan.wait(), 10) == 0
    report = await diagnose(_config(data))
    assert _one(report.checks, "ssh", "blue").status == "ok"


async def test_missing_workdir_and_log_file_are_failures_with_the_path(
    tmp_path: Path, setup: dict[str, Any]
) -> None:
    data = _clean(setup)
    data["env"]["green"].update(workdir=str(tmp_path / "nowhere"))
    data["env"]["green"]["logs"] = {
        "app": f"tail -n 50 -F {tmp_path / 'nope.log'}",
        "system": "journalctl-not-here -f -u shop",
    }
    report = await diagnose(_config(data))
    workdir, log, system = _find(report.checks, "files", "green")
    assert system.status == "fail"
    assert system.detail == "logs.system: journalctl-not-here is not installed on the host"
    assert workdir.status == "fail"
    assert f"workdir {tmp_path / 'nowhere'} does not exist" in workdir.detail
    assert log.status == "fail"
    assert f"logs.app: {tmp_path / 'nope.log'} is missing" in log.detail
    assert report.exit_code() == 1


async def test_flags_missing_key_lists_lookalikes_and_a_wrong_password_is_named(
    setup: dict[str, Any],
) -> None:
    control, flags = setup["_servers"][0], setup["_servers"][1]
    data = _clean(setup)
    data["flags"] = {"recent": {"description": "recent uploads on the home page"}}
    client = redis.Redis.from_url(flags.url)
    client.set("RECENT", "ON")
    client.set("session:abc", "x")
    report = await diagnose(_config(data))
    flag = _one(report.checks, "flags", "flag recent")
    assert flag.status == "warn"
    assert flag.detail == "key 'flag:recent' is missing in every colour (reads as off there)"
    assert "set [flags.recent] key = 'RECENT'" in flag.fix
    assert "session" not in flag.fix

    # The app's Redis wants a password the URL does not carry.
    client.config_set("requirepass", "s3cret")
    try:
        report = await diagnose(_config(data))
        blue = _one(report.checks, "flags", "blue flags")
        assert blue.status == "fail"
        assert "redis://:PASSWORD@HOST:PORT/DB" in blue.fix
        data["env"]["blue"]["flags_redis"] = flags.url.replace("//", "//:wrong@")
        report = await diagnose(_config(data))
        blue = _one(report.checks, "flags", "blue flags")
        assert blue.status == "fail"
        assert "wrong" in blue.fix
        assert "wrong@" not in blue.detail  # passwords are never printed
    finally:
        redis.Redis.from_url(flags.url, password="s3cret").config_set("requirepass", "")
    assert control.ping()


async def test_the_control_plane_down_fails_with_the_fix_and_the_rest_still_runs(
    setup: dict[str, Any],
) -> None:
    control: RedisServer = setup["_servers"][0]
    control.stop()
    report = await diagnose(_config(_clean(setup)))
    check = _one(report.checks, "control", "control plane")
    assert check.status == "fail"
    assert "start redis-server" in check.fix
    assert _one(report.checks, "ssh", "blue").status == "ok"
    assert report.exit_code() == 1


async def test_sqlite_files_unreadable_and_tables_without_a_key_are_named(
    tmp_path: Path, setup: dict[str, Any]
) -> None:
    import sqlite3

    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table uploads (id integer primary key, name text)")
        conn.execute("create table tags (slug text not null unique, label text)")
        conn.execute("create table visits (path text, at text)")  # no key at all
    conn.close()
    data = _clean(setup)
    flags: RedisServer = setup["_servers"][1]
    data["env"]["blue"]["data"] = {"sqlite": [str(db)], "redis": flags.url}
    data["env"]["green"]["data"] = {
        "sqlite": [str(tmp_path / "missing.db")],
        "redis": "redis://127.0.0.1:9/0",
    }
    report = await diagnose(_config(data))
    blue_redis, green_redis = (
        c for c in report.checks if "redis://" in c.detail and c.area == "data"
    )
    assert blue_redis.status == "ok"
    assert green_redis.status == "fail"
    assert "env.green.data.redis" in green_redis.fix
    blue = _one([c for c in report.checks if "redis://" not in c.detail], "data", "blue")
    assert blue.status == "warn"
    assert blue.detail.startswith(f"{db}: table(s) visits have no primary key")
    assert "add a primary key" in blue.fix
    green = _one([c for c in report.checks if "redis://" not in c.detail], "data", "green")
    assert green.status == "fail"
    assert f"{tmp_path / 'missing.db'}: cannot open it read-only" in green.detail

    with sqlite3.connect(db) as conn:
        conn.execute("drop table visits")
    conn.close()
    data["env"]["green"]["data"] = {"sqlite": [str(db)], "redis": flags.url}
    report = await diagnose(_config(data))
    assert _one(report.checks, "data", "green").detail == f"{db}: 2 tables, each with a key"


async def test_a_changed_host_key_and_a_control_plane_password_are_failures_with_fixes(
    tmp_path: Path, setup: dict[str, Any]
) -> None:
    import asyncssh

    control: RedisServer = setup["_servers"][0]
    ssh: SshServer = setup["_servers"][2]
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    known = tmp_path / "known_hosts_changed"
    known.write_text(f"[127.0.0.1]:{ssh.port} {other.strip()}\n")
    data = _clean(setup)
    data["ssh"]["known_hosts"] = str(known)
    redis.Redis.from_url(control.url).config_set("requirepass", "s3cret")
    try:
        report = await diagnose(_config(data))
    finally:
        redis.Redis.from_url(control.url, password="s3cret").config_set("requirepass", "")
    changed = _one(report.checks, "ssh", "blue")
    assert changed.status == "fail"
    assert "host key CHANGED" in changed.detail
    assert "ssh-keygen -R" in changed.detail
    assert "confirm with the host's owner" in changed.fix
    plane = _one(report.checks, "control", "control plane")
    assert plane.status == "fail"
    assert "redis://:PASSWORD@HOST:PORT/DB" in plane.fix
