"""``bgconsole deploy`` as a real subprocess against real sshd, redis-server and backends."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deploy_support import APP, control_step, make_app_repo, write_deploy_config
from servers import HttpBackend, HttpBackendFactory, RedisServer, SshServer

from console.core.control import ControlPlane
from console.core.models import Colour

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cli:
    ssh: SshServer
    backend: HttpBackend
    redis: RedisServer
    control: ControlPlane
    tmp: Path
    config_path: Path

    def configure(self, **kwargs: Any) -> None:
        write_deploy_config(
            self.config_path, self.ssh, self.tmp, self.redis.url, self.backend, **kwargs
        )

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
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

    async def run(self, *args: str) -> tuple[int, str, str]:
        """Run ``bgconsole ARGS -c CONFIG``; (exit code, stdout, stderr)."""
        proc = await self.start(*args)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def cli(
    ssh_server: SshServer,
    http_backend_factory: HttpBackendFactory,
    redis_server: RedisServer,
    tmp_path: Path,
) -> AsyncIterator[Cli]:
    control = ControlPlane(redis_server.url, APP, actor="tester@ci")
    backend = http_backend_factory("blue", "1.0.0")
    work = tmp_path / "work"
    work.mkdir()
    try:
        yield Cli(ssh_server, backend, redis_server, control, work, tmp_path / "bg.toml")
    finally:
        await control.aclose()


async def test_deploy_streams_output_and_reports_the_new_version(cli: Cli) -> None:
    cli.configure(steps=["echo deploying {ref}", control_step(cli.backend, "{ref}")])

    code, out, err = await cli.run("deploy", "blue", "--ref", "v2", "--reason", "ship it")

    assert code == 0, err
    assert "blue/blue | deploying v2" in out
    assert "blue/blue $ echo deploying 'v2'" in out or "blue/blue $ echo deploying v2" in out
    assert "deploy v2 -> blue (steps): ok" in out
    assert "version 1.0.0 -> v2" in out
    outcomes = [e.outcome for e in await cli.control.events() if e.kind == "deploy"]
    assert outcomes == ["started", "ok"]


async def test_failed_step_exits_1_with_the_last_lines(cli: Cli) -> None:
    cli.configure(steps=["echo compiling; echo 'error: missing semicolon' >&2; exit 2"])

    code, out, err = await cli.run("deploy", "blue", "--ref", "v3")

    assert code == 1
    assert "FAILED" in out
    assert "last lines from blue/blue:" in err
    assert "blue/blue | error: missing semicolon" in err
    assert err.strip().splitlines()[-1].startswith("bgconsole: deploy to blue failed on blue")
    assert "exited 2" in err
    assert "Traceback" not in err


async def test_json_output_and_health_failure(cli: Cli) -> None:
    cli.backend.set_mode("500")
    cli.configure(steps=["echo hi"], health_timeout=0.5)

    code, out, err = await cli.run("deploy", "blue", "--json")

    assert code == 1
    data = json.loads(out)
    assert data["deployed"] is True
    assert data["ok"] is False
    assert data["health"]["healthy"] is False
    assert data["hosts"][0]["exit_status"] == 0
    assert "blue/blue | hi" in err  # live output moved to stderr under --json
    assert "did not turn healthy" in err


async def test_refusals_lock_and_usage(cli: Cli) -> None:
    cli.configure(steps=["touch RAN"])
    await cli.control.switch(Colour.BLUE, expected_epoch=0)

    code, _, err = await cli.run("deploy", "blue")
    assert code == 2
    assert "blue is live" in err
    assert "--live" in err

    other = ControlPlane(cli.redis.url, APP, actor="bob@ci-runner")
    try:
        await other.acquire_lock("deploy:blue", "deploy v7", 30)
        code, _, err = await cli.run("deploy", "blue", "--live", "--yes")
    finally:
        await other.aclose()
    assert code == 1
    assert "bob@ci-runner" in err
    assert not (cli.tmp / "RAN").exists()

    for args, needle in (
        (("deploy", "setup"), "needs a colour"),
        (("deploy", "purple"), "not a colour"),
        (("deploy", "blue", "green"), "unexpected argument"),
        (("deploy", "setup", "blue", "--ref", "x"), "only COLOUR"),
    ):
        code, _, err = await cli.run(*args)
        assert code == 2, args
        assert needle in err, (args, err)


async def test_git_setup_then_push(cli: Cli, tmp_path: Path) -> None:
    local = tmp_path / "local"
    make_app_repo(local, "hello from git\n")
    cli.configure(
        git={
            "repo": str(cli.tmp / "app.git"),
            "worktree": str(cli.tmp / "app"),
            # The app then reports the pushed commit as its version, which the deploy
            # waits for.
            "restart": "cp app.txt ../marker.txt && " + control_step(cli.backend, "$new"),
        }
    )

    code, out, err = await cli.run("deploy", "setup", "blue")
    assert code == 0, err
    assert "ready on 1/1 host(s)" in out

    code, out, err = await cli.run("deploy", "blue", "--ref", "main", "--repo", str(local))
    assert code == 0, out + err
    assert "blue/blue | remote: bgconsole-hook: DEPLOYED" in out
    assert (cli.tmp / "marker.txt").read_text() == "hello from git\n"


async def test_ctrl_c_releases_the_lock_and_records_cancellation(cli: Cli) -> None:
    cli.configure(steps=["echo started; sleep 30"])
    proc = await cli.start("deploy", "blue", "--ref", "v5")
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while b"blue/blue | started" not in await proc.stdout.readline():
            pass
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(20):
        _, err = await proc.communicate()

    assert proc.returncode == 130
    assert b"cancelled" in err
    assert b"Traceback" not in err
    assert await cli.control.lock_info("deploy:blue") is None
    last = (await cli.control.events())[-1]
    assert (last.kind, last.outcome) == ("deploy", "cancelled")


async def test_a_ref_that_looks_like_an_option_is_refused(cli: Cli) -> None:
    cli.configure(steps=["echo {ref} > REF"])

    for ref in ("--ref=--help", "--ref=-x"):
        code, _, err = await cli.run("deploy", "blue", ref)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert "starts with '-'" in err
    assert not (cli.tmp / "REF").exists()
    assert [e for e in await cli.control.events() if e.kind == "deploy"] == []


async def test_live_deploy_asks_says_what_happens_to_traffic_and_where_it_is(cli: Cli) -> None:
    cli.configure(steps=["echo v > RAN", control_step(cli.backend, "{ref}")])
    await cli.control.switch(Colour.BLUE, expected_epoch=0)

    # No terminal and no --yes: a clear one-line refusal, nothing run.
    code, _, err = await cli.run("deploy", "blue", "--live", "--ref", "v2")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "blue is live" in err
    assert "--yes" in err
    assert not (cli.tmp / "RAN").exists()

    code, out, err = await cli.run("deploy", "blue", "--live", "--yes", "--ref", "v2")
    assert code == 0, err
    # Before: what will happen to traffic. After: where it is.
    assert "blue is LIVE" in err
    assert "fails over to green" in err
    assert out.strip().splitlines()[-1] == "traffic: on blue (epoch 1), as before the deploy"

    # A stand-by deploy says where traffic is too.
    await cli.control.switch(Colour.GREEN, expected_epoch=1)
    code, out, err = await cli.run("deploy", "blue", "--ref", "v3")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "traffic: on green (epoch 2), as before the deploy"


async def test_a_failover_during_a_live_deploy_exits_1_and_says_where_traffic_is(
    cli: Cli,
) -> None:
    cli.configure(steps=["echo restarting; sleep 1.5", control_step(cli.backend, "{ref}")])
    await cli.control.switch(Colour.BLUE, expected_epoch=0)

    proc = await cli.start("deploy", "blue", "--live", "--yes", "--ref", "v2")
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while b"blue/blue | restarting" not in await proc.stdout.readline():
            pass
    # The agent's decision, as the agent writes it.
    await cli.control.switch(
        Colour.GREEN, expected_epoch=1, kind="failover", reason="live blue is down", actor="agent"
    )
    async with asyncio.timeout(30):
        rest, err_bytes = await proc.communicate()
    out, err = rest.decode(), err_bytes.decode()

    assert proc.returncode == 1, out + err
    sentence = "the agent failed over from blue to green during the deploy"
    assert sentence in err.strip().splitlines()[-1]
    assert "traffic is on green (epoch 2)" in err.strip().splitlines()[-1]
    assert "traffic: on green (epoch 2)" in out
    end = [e for e in await cli.control.events() if e.kind == "deploy"][-1]
    assert end.outcome == "failed"
    assert sentence in end.details.get("error", "")


async def test_a_host_lost_mid_step_is_reported_unknown_not_failed(cli: Cli) -> None:
    cli.configure(steps=["echo installing; sleep 30"], deploy_timeout=1.0)

    code, out, err = await cli.run("deploy", "blue", "--ref", "v2", "--json")

    assert code == 1
    data = json.loads(out)
    assert data["outcome"] == "unknown"
    assert data["hosts"][0]["unknown"] is True
    assert "outcome unknown" in err.strip().splitlines()[-1]
    assert data["traffic"].startswith("traffic:")
    end = [e for e in await cli.control.events() if e.kind == "deploy"][-1]
    assert end.outcome == "unknown"
