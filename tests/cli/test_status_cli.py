"""``bgconsole status``, ``events``, ``check`` and ``init`` run as a user would (subprocess)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import bgconsole
from configs import config_data, write_config
from servers import HttpBackendFactory, RedisServer

from console.core.control import ControlPlane
from console.core.errors import ControlPlaneUnavailable
from console.core.models import Colour

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_path(
    tmp_path: Path, redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> Path:
    blue = http_backend_factory("blue", "1.4.0")
    green = http_backend_factory("green", "1.5.0")
    path = tmp_path / "bg.toml"
    state = tmp_path / "router-state"
    state.write_text("blue\n")
    data = config_data(
        redis_url=redis_server.url,
        blue_url=blue.url,
        green_url=green.url,
        router={
            "kind": "command",
            "switch_command": f"echo {{colour}} > {state}",
            "state_command": f"cat {state}",
        },
    )
    write_config(path, data)
    return path


async def set_live(redis_url: str, colour: Colour) -> None:
    control = ControlPlane(redis_url, "test", actor="tester@ci")
    try:
        state = await control.ensure_active(Colour.BLUE)
        if state.colour is not colour:
            await control.switch(colour, expected_epoch=state.epoch, reason="test")
    finally:
        await control.aclose()


async def test_status_json_reports_both_environments(
    config_path: Path, redis_server: RedisServer
) -> None:
    await set_live(redis_server.url, Colour.BLUE)
    result = bgconsole("status", "--json", "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["active"]["colour"] == "blue"
    assert report["active"]["actor"] == "tester@ci"
    assert report["control"]["ok"] is True
    assert report["router"] == {
        "kind": "command",
        "live": "blue",
        "detail": report["router"]["detail"],
        "error": None,
        "drift": None,
    }
    assert report["envs"]["blue"]["verdict"] == "healthy"
    assert report["envs"]["blue"]["live"] is True
    assert report["envs"]["green"]["hosts"][0]["version"] == "1.5.0"
    assert report["envs"]["green"]["hosts"][0]["status"] == 200


async def test_status_shows_drift_and_down_hosts(
    config_path: Path, redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> None:
    await set_live(redis_server.url, Colour.GREEN)  # the router file still says blue
    result = bgconsole("status", "-c", str(config_path))
    assert result.returncode == 1
    assert "DRIFT: router sends traffic to blue, control plane says green" in result.stdout
    assert "live: green (epoch 2, by tester@ci" in result.stdout


async def test_status_shows_who_holds_a_deploy_lock(
    config_path: Path, redis_server: RedisServer
) -> None:
    await set_live(redis_server.url, Colour.BLUE)
    control = ControlPlane(redis_server.url, "test", actor="bob@jump2")
    try:
        await control.acquire_lock("deploy:green", "deploy v2.1", ttl=60)
        text = bgconsole("status", "-c", str(config_path))
        as_json = json.loads(bgconsole("status", "--json", "-c", str(config_path)).stdout)
    finally:
        await control.aclose()
    assert "in progress: deploy v2.1 (deploy:green) by bob@jump2" in text.stdout
    assert as_json["locks"][0]["holder"] == "bob@jump2"


def test_status_with_redis_down_is_one_clear_line(
    config_path: Path, redis_server: RedisServer
) -> None:
    redis_server.stop()
    result = bgconsole("status", "-c", str(config_path))
    assert result.returncode == 1
    assert "control plane: UNAVAILABLE" in result.stdout
    assert "Traceback" not in result.stderr
    assert "blue" in result.stdout  # health is still reported


def test_events_lists_what_happened(config_path: Path, redis_server: RedisServer) -> None:
    import asyncio

    asyncio.run(set_live(redis_server.url, Colour.GREEN))
    result = bgconsole("events", "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "init" in lines[0]
    assert "switch blue -> green (epoch 2)" in lines[-1]
    assert 'reason="test"' in lines[-1]
    as_json = bgconsole("events", "--json", "-n", "1", "-c", str(config_path))
    assert json.loads(as_json.stdout)["after"] == "green"


def test_check_sample_and_broken_configs(tmp_path: Path) -> None:
    ok = bgconsole("check", "-c", str(ROOT / "sample.toml"))
    assert ok.returncode == 0
    assert "sample.toml: ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[console]\nname = "x"\n[control]\nredis = "redis://h"\n[router]\nkind = "f5"\n')
    result = bgconsole("check", "-c", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"bgconsole: {bad}: router.kind: unknown router kind 'f5'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_init_writes_a_valid_starter_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "new.toml"
    assert bgconsole("init", str(target)).returncode == 0
    assert target.read_text().startswith("# bgconsole configuration")
    assert bgconsole("check", "-c", str(target)).returncode == 0
    again = bgconsole("init", str(target))
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_no_config_anywhere_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "console", "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "no configuration found" in result.stderr


async def test_events_follow_rides_out_a_redis_restart(
    config_path: Path, redis_server: RedisServer
) -> None:
    await set_live(redis_server.url, Colour.BLUE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "events", "--follow", "-c", str(config_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"init" in first
        redis_server.stop()
        marker = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert b"unavailable" in marker
        assert b"retrying --" in marker
        redis_server.start()  # empty: no persistence in the fixture
        control = ControlPlane(redis_server.url, "test", actor="tester@ci")
        try:
            for _ in range(100):
                try:
                    await control.record("flag", "after the outage")
                    break
                except ControlPlaneUnavailable:
                    await asyncio.sleep(0.1)
        finally:
            await control.aclose()
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"after the outage" in line
        back = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert b"control plane back after" in back
        assert proc.returncode is None  # still following
    finally:
        proc.kill()
        await proc.wait()


async def test_status_exits_1_with_an_alarm_when_live_is_down_and_nothing_will_fail_over(
    tmp_path: Path, redis_server: RedisServer, http_backend_factory: HttpBackendFactory
) -> None:
    blue = http_backend_factory("blue", "1.4.0")
    green = http_backend_factory("green", "1.5.0")
    state = tmp_path / "router-state"
    state.write_text("blue\n")
    path = tmp_path / "bg.toml"
    router = {
        "kind": "command",
        "switch_command": f"echo {{colour}} > {state}",
        "state_command": f"cat {state}",
    }
    data = config_data(
        redis_url=redis_server.url, blue_url=blue.url, green_url=green.url, router=router
    )
    write_config(path, data)
    await set_live(redis_server.url, Colour.BLUE)
    healthy = bgconsole("status", "-c", str(path))
    # No agent runs: failover is not active, but nothing is wrong with traffic yet.
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "failover: NOT ACTIVE: no agent leads" in healthy.stdout
    assert "ALARM" not in healthy.stdout
    blue.kill()
    down = bgconsole("status", "-c", str(path))
    assert down.returncode == 1, down.stdout
    assert "ALARM: live blue is DOWN and nothing will fail over: no agent leads" in down.stdout
    report = json.loads(bgconsole("status", "--json", "-c", str(path)).stdout)
    assert report["failover"]["active"] is False
    assert report["failover"]["alarm"].startswith("live blue is DOWN")
    assert "no persistence" in (report["control"]["persistence_warning"] or "")
