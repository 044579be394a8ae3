"""``bgconsole flag`` as a subprocess against two real redis-servers and a control plane."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from flags_support import APP, db, write_flag_config
from servers import RedisServer, free_port

from console.core.config import load_config
from console.core.control import ControlPlane
from console.core.models import Colour

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def bgconsole(config: Path, *args: str) -> Run:
    """Run ``python -m console -c CONFIG flag ARGS`` with no terminal on stdin."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "console",
        "-c",
        str(config),
        "flag",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    run = Run(proc.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in run.err, run.err
    return run


@pytest.fixture
def config_path(tmp_path: Path, redis_pair: tuple[RedisServer, RedisServer]) -> Path:
    blue, green = redis_pair
    return write_flag_config(tmp_path / "bg.toml", blue.url, green.url, db(blue.url, 1))


@pytest.fixture
async def control(config_path: Path) -> AsyncIterator[ControlPlane]:
    """The control plane, with blue recorded as the live colour."""
    plane = ControlPlane.from_config(load_config(config_path).control, APP)
    await plane.ensure_active(Colour.BLUE)
    yield plane
    await plane.aclose()


@pytest.fixture
async def apps(
    redis_pair: tuple[RedisServer, RedisServer],
) -> AsyncIterator[dict[str, aioredis.Redis]]:
    blue, green = redis_pair
    clients = {
        "blue": aioredis.Redis.from_url(blue.url, decode_responses=True),
        "green": aioredis.Redis.from_url(green.url, decode_responses=True),
    }
    yield clients
    for client in clients.values():
        await client.aclose()


async def test_list_table_and_json(
    config_path: Path, control: ControlPlane, apps: dict[str, aioredis.Redis]
) -> None:
    await apps["green"].set("flag:uploads", "ON")
    await apps["blue"].set("flag:legacy", "ON")
    run = await bgconsole(config_path, "list")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["FLAG", "BLUE", "(live)", "GREEN", "DESCRIPTION"]
    uploads = next(line for line in lines if " uploads " in line)
    assert uploads.startswith("*")
    assert "on" in uploads.split()
    legacy = next(line for line in lines if "legacy" in line)
    assert "(undeclared: flag:legacy)" in legacy
    assert "[kill switch]" in next(line for line in lines if "maintenance" in line)

    data = (await bgconsole(config_path, "list", "--json")).json()
    assert data["colours"]["blue"] == {"readable": True, "error": None, "live": True}
    by_name = {f["name"]: f for f in data["flags"]}
    assert by_name["uploads"]["values"]["green"] == {"state": "on", "raw": "ON", "note": ""}
    assert by_name["uploads"]["differs"] is True
    assert by_name["legacy"]["declared"] is False


async def test_set_on_standby_needs_no_confirmation_and_is_recorded(
    config_path: Path, control: ControlPlane, apps: dict[str, aioredis.Redis]
) -> None:
    run = await bgconsole(config_path, "set", "uploads", "on", "--env", "green", "--reason", "go")
    assert run.code == 0, run.err
    assert run.out.strip() == "green: uploads off -> on [recorded]"
    assert await apps["green"].get("flag:uploads") == "ON"
    assert await apps["blue"].get("flag:uploads") is None
    (event,) = [e for e in await control.events() if e.kind == "flag"]
    assert (event.before, event.after, event.reason) == ("off", "on", "go")
    assert event.details["colour"] == "green"


async def test_changing_the_live_colour_requires_yes(
    config_path: Path, control: ControlPlane, apps: dict[str, aioredis.Redis]
) -> None:
    refused = await bgconsole(config_path, "toggle", "uploads", "--env", "both")
    assert refused.code == 2
    assert "blue is live; pass --yes" in refused.err
    assert await apps["green"].get("flag:uploads") is None  # nothing applied, not even green

    run = await bgconsole(config_path, "toggle", "uploads", "--env", "both", "--yes", "--json")
    assert run.code == 0, run.err
    changes = run.json()["changes"]
    assert [(c["colour"], c["before"], c["after"]) for c in changes] == [
        ("blue", "off", "on"),
        ("green", "off", "on"),
    ]
    assert all(c["event_id"] for c in changes)
    assert await apps["blue"].get("flag:uploads") == "ON"


async def test_copy_and_diff(
    config_path: Path, control: ControlPlane, apps: dict[str, aioredis.Redis]
) -> None:
    await apps["green"].set("flag:uploads", "ON")
    await apps["green"].set("app:beta", "1")
    diff = await bgconsole(config_path, "diff", "--exit-code")
    assert diff.code == 1
    assert [line.split()[1] for line in diff.out.splitlines()[1:]] == ["uploads", "beta"]

    refused = await bgconsole(config_path, "copy", "--from", "green", "--to", "blue")
    assert refused.code == 2
    assert "pass --yes" in refused.err

    run = await bgconsole(config_path, "copy", "--from", "green", "--to", "blue", "uploads", "-y")
    assert run.code == 0, run.err
    assert "blue: uploads off -> on [recorded]" in run.out
    assert await apps["blue"].get("app:beta") is None  # only the named flag

    await bgconsole(config_path, "copy", "--from", "green", "--to", "blue", "-y")
    assert await apps["blue"].get("app:beta") == "1"
    same = await bgconsole(config_path, "diff", "--exit-code")
    assert same.code == 0
    assert "the same way" in same.out
    assert (await bgconsole(config_path, "diff", "--json")).json()["flags"] == []


async def test_one_colour_down(
    config_path: Path,
    control: ControlPlane,
    redis_pair: tuple[RedisServer, RedisServer],
    apps: dict[str, aioredis.Redis],
) -> None:
    _, green = redis_pair
    green.stop()
    listing = await bgconsole(config_path, "list")
    assert listing.code == 1
    assert "unknown" in next(line for line in listing.out.splitlines() if "uploads" in line)
    assert "green flags Redis" in listing.err

    run = await bgconsole(config_path, "set", "uploads", "on", "--env", "both", "-y")
    assert run.code == 1
    assert "blue: uploads off -> on" in run.out
    assert "applied on blue only" in run.err
    assert await apps["blue"].get("flag:uploads") == "ON"


async def test_undeclared_flag_is_refused(config_path: Path, control: ControlPlane) -> None:
    run = await bgconsole(config_path, "toggle", "legacy", "--env", "green")
    assert run.code == 2
    assert "add [flags.legacy]" in run.err


async def test_control_plane_down_means_every_colour_may_be_live(
    tmp_path: Path, redis_pair: tuple[RedisServer, RedisServer], apps: dict[str, aioredis.Redis]
) -> None:
    blue, green = redis_pair
    path = write_flag_config(
        tmp_path / "down.toml", blue.url, green.url, f"redis://127.0.0.1:{free_port()}/0"
    )
    refused = await bgconsole(path, "set", "uploads", "on", "--env", "green")
    assert refused.code == 2
    assert "may be live" in refused.err

    run = await bgconsole(path, "set", "uploads", "on", "--env", "green", "--yes")
    assert run.code == 0
    assert "[NOT recorded]" in run.out
    assert "warning: green: flag changed but NOT recorded" in run.err
    assert await apps["green"].get("flag:uploads") == "ON"


async def _with_terminal(config: Path, answer: str, *args: str) -> Run:
    """Run with a pseudo-terminal on stdin that types ``answer`` at the prompt."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode() + b"\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "-c", str(config), "flag", *args,
            cwd=ROOT, stdin=slave, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        os.close(slave)
        os.close(master)
    return Run(proc.returncode or 0, out.decode(), err.decode())


async def test_live_colour_change_asks_on_a_terminal(
    config_path: Path, control: ControlPlane, apps: dict[str, aioredis.Redis]
) -> None:
    declined = await _with_terminal(config_path, "n", "set", "uploads", "on", "--env", "blue")
    assert declined.code == 2
    assert "blue is live: set flag 'uploads' on there? [y/N]" in declined.out
    assert "not confirmed" in declined.err
    assert await apps["blue"].get("flag:uploads") is None

    accepted = await _with_terminal(config_path, "y", "set", "uploads", "on", "--env", "blue")
    assert accepted.code == 0, accepted.err
    assert await apps["blue"].get("flag:uploads") == "ON"
