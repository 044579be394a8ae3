"""``bgconsole switch`` and ``bgconsole failover`` run as real subprocesses against real Redis."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from servers import HttpBackend, HttpBackendFactory, RedisServer
from traffic_helpers import ColourFile, FrontDoor

from console.core.control import ControlPlane
from console.core.models import Colour

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cli:
    config_path: Path
    control: ControlPlane
    colour_file: ColourFile
    blue: HttpBackend
    green: HttpBackend
    front: FrontDoor

    async def run(self, *args: str) -> tuple[int, str, str]:
        """Run ``bgconsole ARGS -c CONFIG`` without a terminal; (exit code, stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "console",
            *args,
            "-c",
            str(self.config_path),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def cli(
    redis_server: RedisServer, http_backend_factory: HttpBackendFactory, tmp_path: Path
) -> AsyncIterator[Cli]:
    blue = http_backend_factory("blue", "1.0")
    green = http_backend_factory("green", "2.0")
    colour_file = ColourFile(tmp_path / "live")
    front = await FrontDoor(
        lambda: (blue if colour_file.read() == "blue" else green).address
    ).start()
    config: dict[str, Any] = {
        "console": {"name": "clitest"},
        "control": {"redis": redis_server.url},
        "router": {
            "kind": "command",
            "switch_command": colour_file.switch_command,
            "state_command": colour_file.state_command,
            "public_url": front.url,
            "confirm_timeout": 3.0,
        },
        "failover": {"interval": 0.5, "timeout": 0.5},
        "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
    }
    path = tmp_path / "bgconsole.toml"
    path.write_text(tomli_w.dumps(config))
    control = ControlPlane(redis_server.url, "clitest")
    await control.ensure_active(Colour.BLUE)
    try:
        yield Cli(path, control, colour_file, blue, green, front)
    finally:
        await front.aclose()
        await control.aclose()


async def test_switch_prints_before_after_and_verification(cli: Cli) -> None:
    code, out, err = await cli.run("switch", "green", "--yes", "--reason", "release 2.0")
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("blue -> green (epoch 2): router confirmed in ")
    assert last.endswith("5/5 verification requests served by green")
    assert "control plane: blue -> green (epoch 2)" in out
    assert cli.colour_file.read() == "green"
    active = await cli.control.active()
    assert active is not None
    assert (active.colour, active.reason) == (Colour.GREEN, "release 2.0")


async def test_switch_json(cli: Cli) -> None:
    code, out, err = await cli.run("switch", "green", "--yes", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["before"], data["after"], data["epoch"]) == ("blue", "green", 2)
    assert data["verification"]["ok"] is True
    assert data["verification"]["served_by_target"] == 5
    assert "probing green" in err


async def test_switch_already_live_exits_zero(cli: Cli) -> None:
    code, out, _err = await cli.run("switch", "blue", "--yes")
    assert code == 0
    assert "blue is already live (epoch 1); nothing to do" in out


async def test_switch_without_terminal_needs_yes(cli: Cli) -> None:
    code, out, err = await cli.run("switch", "green")
    assert code == 2
    assert err.strip() == "bgconsole: pass --yes to switch non-interactively"
    assert out == ""
    assert cli.colour_file.read() == "blue"


async def test_switch_bad_colour_is_a_usage_error(cli: Cli) -> None:
    code, _out, err = await cli.run("switch", "purple", "--yes")
    assert code == 2
    assert "'purple' is not a colour" in err


async def test_switch_refuses_unhealthy_target(cli: Cli) -> None:
    cli.green.set_mode("500")
    code, _out, err = await cli.run("switch", "green", "--yes")
    assert code == 1
    assert err.startswith("bgconsole: green is not healthy (green/green: HTTP 500")
    assert err.strip().endswith("use --force to switch anyway")
    assert "Traceback" not in err
    assert cli.colour_file.read() == "blue"


async def test_forced_switch_to_failing_target_fails_verification(cli: Cli) -> None:
    cli.green.set_mode("500")
    code, _out, err = await cli.run("switch", "green", "--yes", "--force")
    assert code == 1
    assert "0/5 verification requests served by green" in err
    assert err.strip().endswith("revert with: bgconsole switch blue --force")
    assert len(err.strip().splitlines()) == 1

    cli.green.set_mode("ok")
    code, out, err = await cli.run("switch", "blue", "--yes", "--force")
    assert code == 0, err
    assert "green -> blue (epoch 3)" in out


async def test_failover_arm_disarm_status(cli: Cli) -> None:
    code, out, err = await cli.run("failover", "disarm", "--reason", "maintenance")
    assert code == 0, err
    assert out.startswith("automatic failover disarmed (was armed)")
    assert not await cli.control.armed()
    events = await cli.control.events()
    assert (events[-1].kind, events[-1].reason) == ("armed", "maintenance")

    code, out, _err = await cli.run("failover", "status", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["armed"] is False
    assert data["effective"] is False
    assert data["live"] == "blue"
    assert data["agents"] == []

    code, out, _err = await cli.run("failover", "arm")
    assert code == 0
    assert "automatic failover armed (was disarmed)" in out
    assert "agents:   none running (start one with: bgconsole serve)" in out
    assert "automatic failover is NOT ACTIVE" in out
    assert await cli.control.armed()
