"""DeployRunner and the git pipeline against real sshd, redis-server and HTTP backends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from deploy_support import APP, commit_file, control_step, deploy_config, make_app_repo
from procscan import appears, describe, gone, kill_leftovers, processes_with, unique_marker
from servers import HttpBackend, HttpBackendFactory, RedisServer, SshServer, descendants

from console.core.config import Config, parse_config, parse_ssh_target
from console.core.control import ControlPlane
from console.core.deploy import (
    DeployResult,
    DeployRunner,
    StepStarted,
    check_ref,
    plan_method,
    render_step,
)
from console.core.errors import ConfigError, LockHeld, UsageError
from console.core.git_pipeline import GitPipeline, hook_script, ssh_url
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.ssh import OutputLine, SshPool

# --- pure unit tests ---------------------------------------------------------------------


def test_render_step_quotes_the_ref_and_keeps_shell_braces() -> None:
    assert render_step("git checkout {ref}", "v1; rm -rf /") == "git checkout 'v1; rm -rf /'"
    assert render_step("echo ${HOME}", None) == "echo ${HOME}"
    with pytest.raises(UsageError, match="--ref"):
        render_step("git checkout {ref}", None)


def _minimal(blue: dict[str, object]) -> Config:
    return parse_config(
        {
            "console": {"name": "x"},
            "control": {"redis": "redis://127.0.0.1:1/0"},
            "router": {"kind": "builtin"},
            "env": {"blue": {"url": "http://127.0.0.1:1", **blue}, "green": {"url": "http://h"}},
        }
    )


def test_plan_method_names_the_missing_key() -> None:
    with pytest.raises(ConfigError, match=r"env\.blue\.deploy"):
        plan_method(_minimal({}).env(Colour.BLUE), None)
    with pytest.raises(ConfigError, match=r"env\.blue\.git"):
        plan_method(_minimal({"deploy": ["true"]}).env(Colour.BLUE), "git")
    git_only = _minimal({"git": {"repo": "/r.git", "worktree": "/w"}})
    assert plan_method(git_only.env(Colour.BLUE), None) == "git"
    assert plan_method(_minimal({"deploy": "make"}).env(Colour.BLUE), None) == "steps"


def test_ssh_url_and_hook_script() -> None:
    config = _minimal({"git": {"repo": "~/app.git", "worktree": "/srv/app", "restart": "make"}})
    git = config.env(Colour.BLUE).git
    assert git is not None
    assert ssh_url(parse_ssh_target("u@h:2222"), "/srv/a.git") == "ssh://u@h:2222/srv/a.git"
    assert ssh_url(parse_ssh_target("h"), "~/a.git") == "ssh://h/~/a.git"
    hook = hook_script(git)
    assert hook.startswith("#!/bin/sh\n")
    assert 'repo="$HOME"/app.git' in hook
    assert "( cd /srv/app && make )" in hook


# --- integration: real sshd, redis-server, HTTP backend ----------------------------------


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, APP, actor="tester@ci")
    try:
        yield plane
    finally:
        await plane.aclose()


@pytest.fixture
def backend(http_backend_factory: HttpBackendFactory) -> HttpBackend:
    return http_backend_factory("blue", "1.0.0")


class Harness:
    """A DeployRunner over one config, closing its services afterwards."""

    def __init__(self, config: Config, control: ControlPlane) -> None:
        self.config = config
        self.pool = SshPool(config.ssh)
        self.health = HealthChecker(config, hysteresis=False)
        self.runner = DeployRunner(config, control, self.pool, self.health)
        self.lines: list[OutputLine] = []
        self.steps: list[StepStarted] = []

    async def deploy(self, ref: str | None = "v2", **kwargs: object) -> DeployResult:
        return await self.runner.deploy(
            Colour.BLUE,
            ref=ref,
            on_line=self.lines.append,
            on_step=self.steps.append,
            **kwargs,  # type: ignore[arg-type]
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.health.aclose()


MakeHarness = Callable[[Config], Harness]


@pytest.fixture
async def make_harness(control: ControlPlane) -> AsyncIterator[MakeHarness]:
    made: list[Harness] = []

    def make(config: Config) -> Harness:
        made.append(Harness(config, control))
        return made[-1]

    try:
        yield make
    finally:
        for harness in made:
            await harness.aclose()


@pytest.mark.integration
async def test_deploy_runs_steps_streams_output_records_events_and_reports_version(
    ssh_server: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    steps = ["echo deploying {ref}", "printf %s {ref} > VERSION", control_step(backend, "{ref}")]
    config = deploy_config(ssh_server, tmp_path, redis_server.url, backend, steps=steps, hosts=2)
    harness = make_harness(config)

    result = await harness.deploy(ref="v2", reason="release 2")

    assert result.ok, result.failure()
    assert result.version == "v2"
    assert [h.exit_status for h in result.hosts] == [0, 0]
    assert (tmp_path / "VERSION").read_text() == "v2"
    assert ("app1", "stdout", "deploying v2") in [(x.host, x.stream, x.text) for x in harness.lines]
    assert [(s.host, s.index, s.total) for s in harness.steps if s.host == "app1"] == [
        ("app1", 1, 3),
        ("app1", 2, 3),
        ("app1", 3, 3),
    ]
    events = [e for e in await control.events() if e.kind == "deploy"]
    assert [e.outcome for e in events] == ["started", "ok"]
    end = events[-1]
    assert end.reason == "release 2"
    assert end.details["ref"] == "v2"
    assert end.details["version"] == "v2"
    assert end.details["exit_status"] == "app1=0,app2=0"
    assert (end.before, end.after) == ("1.0.0", "v2")
    assert result.previous_version == "1.0.0"
    assert float(end.details["duration"]) > 0
    assert await control.lock_info("deploy:blue") is None


@pytest.mark.integration
async def test_failing_step_stops_the_host_and_keeps_the_last_lines(
    ssh_server: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    steps = ["echo step one", "echo about to fail; echo boom >&2; exit 3", "touch NEVER"]
    config = deploy_config(ssh_server, tmp_path, redis_server.url, backend, steps=steps)
    harness = make_harness(config)

    result = await harness.deploy()

    assert not result.ok
    assert result.health is None
    host = result.hosts[0]
    assert host.exit_status == 3
    assert host.steps_run == 2
    # stdout and stderr are separate channels: their relative order is not guaranteed.
    assert set(host.tail[-2:]) == {"about to fail", "boom"}
    assert not (tmp_path / "NEVER").exists()
    failure = result.failure()
    assert failure is not None
    assert "exited 3" in failure
    end = (await control.events())[-1]
    assert (end.kind, end.outcome) == ("deploy", "failed")
    assert end.details["exit_status"] == "blue=3"
    assert await control.lock_info("deploy:blue") is None


@pytest.mark.integration
async def test_lock_conflict_names_the_holder(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    other = ControlPlane(redis_server.url, APP, actor="alice@jump1")
    try:
        held = await other.acquire_lock("deploy:blue", "deploy v9", 30)
        config = deploy_config(ssh_server, tmp_path, redis_server.url, backend, steps=["touch RAN"])
        harness = make_harness(config)
        with pytest.raises(LockHeld, match="alice@jump1"):
            await harness.deploy()
        assert not (tmp_path / "RAN").exists()
        assert await other.release_lock(held)
    finally:
        await other.aclose()


@pytest.mark.integration
async def test_health_wait_times_out_when_the_app_stays_broken(
    ssh_server: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    backend.set_mode("500")
    config = deploy_config(
        ssh_server, tmp_path, redis_server.url, backend, steps=["true"], health_timeout=0.6
    )
    harness = make_harness(config)

    result = await harness.deploy()

    assert result.deployed
    assert not result.ok
    assert result.health is not None
    assert not result.health.healthy
    assert 0.5 <= result.health.waited < 3.0
    assert any("HTTP 500" in p for p in result.health.problems)
    failure = result.failure()
    assert failure is not None
    assert "did not turn healthy" in failure
    assert (await control.events())[-1].outcome == "failed"


@pytest.mark.integration
async def test_a_failover_during_a_bad_live_deploy_is_reported(
    ssh_server: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    state = await control.switch(Colour.BLUE, expected_epoch=0, reason="test")
    backend.set_mode("500")  # the release is bad: blue stops answering health checks
    config = deploy_config(
        ssh_server, tmp_path, redis_server.url, backend, steps=["true"], health_timeout=30
    )
    harness = make_harness(config)

    async def agent_fails_over() -> None:  # what the agent does while the deploy waits
        await asyncio.sleep(0.3)
        await control.switch(
            Colour.GREEN, expected_epoch=state.epoch, kind="failover", reason="blue is down"
        )

    failover = asyncio.create_task(agent_fails_over())
    result = await harness.deploy(live_ok=True)
    await failover
    assert not result.ok
    # The health wait stopped at the failover instead of waiting out its 30 s.
    assert result.health is not None
    assert result.health.waited < 10
    assert result.failure() == (
        "the agent failed over from blue to green during the deploy (epoch 2: blue is down); "
        "traffic is on green (epoch 2)"
    )
    assert (
        result.traffic() == "traffic: on green (epoch 2): failed over from blue during the deploy"
    )
    end = (await control.events())[-1]
    assert end.outcome == "failed"
    assert end.details["failover"] == "blue -> green (epoch 2)"


@pytest.mark.integration
async def test_deploying_to_the_live_colour_needs_live_ok(
    ssh_server: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    await control.switch(Colour.BLUE, expected_epoch=0, reason="test")
    # The restart reports the new version: a deploy waits for it (the ref here).
    steps = ["touch RAN", control_step(backend, "{ref}")]
    config = deploy_config(ssh_server, tmp_path, redis_server.url, backend, steps=steps)
    harness = make_harness(config)

    with pytest.raises(UsageError, match=r"blue is live.*--live"):
        await harness.deploy()
    assert not (tmp_path / "RAN").exists()
    assert (await control.events())[-1].outcome == "refused"

    result = await harness.deploy(live_ok=True)
    assert result.ok
    assert (tmp_path / "RAN").exists()


@pytest.mark.integration
async def test_git_pipeline_end_to_end(
    ssh_server: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    remote = tmp_path / "host"
    local = tmp_path / "local"
    first = make_app_repo(local, "release 1\n")
    git_table = {
        "repo": str(remote / "app.git"),
        "worktree": str(remote / "app"),
        # The app then reports the commit as its version ($new in the hook): the deploy
        # waits until the host serves the commit pushed.
        "restart": "cat app.txt > ../marker.txt && echo restarted >> ../restarts.log && "
        + control_step(backend, "$new"),
    }
    config = deploy_config(ssh_server, remote, redis_server.url, backend, git=git_table)
    harness = make_harness(config)
    pipeline = GitPipeline(config, harness.pool)

    for _ in range(2):  # setup is idempotent
        runs = await pipeline.setup(Colour.BLUE)
        assert [r.ok for r in runs] == [True], runs
    assert (remote / "app.git" / "hooks" / "post-receive").stat().st_mode & 0o111

    result = await harness.deploy(ref="main", repo=local)
    assert result.ok, (result.failure(), result.hosts)
    assert result.method == "git"
    assert (remote / "marker.txt").read_text() == "release 1\n"
    assert (remote / "app" / "app.txt").read_text() == "release 1\n"
    hook_lines = [x.text for x in harness.lines if x.text.startswith("remote: bgconsole-hook:")]
    assert any(first in line for line in hook_lines), harness.lines
    start = [e for e in await control.events() if e.outcome == "started"][-1]
    assert start.details["commit"] == first

    second = commit_file(local, "release 2\n")
    result = await harness.deploy(ref=second[:10], repo=local)
    assert result.ok, result.failure()
    assert (remote / "marker.txt").read_text() == "release 2\n"

    # The same commit again changes no ref; the hook still runs (a redeploy restarts).
    result = await harness.deploy(ref="main", repo=local)
    assert result.ok, result.failure()
    assert (remote / "restarts.log").read_text().count("restarted") == 3


@pytest.mark.integration
async def test_git_pipeline_reports_a_failing_restart(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    remote = tmp_path / "host"
    local = tmp_path / "local"
    make_app_repo(local, "broken\n")
    git_table = {
        "repo": str(remote / "app.git"),
        "worktree": str(remote / "app"),
        "restart": "echo cannot start >&2; exit 4",
    }
    config = deploy_config(ssh_server, remote, redis_server.url, backend, git=git_table)
    harness = make_harness(config)
    await GitPipeline(config, harness.pool).setup(Colour.BLUE)

    result = await harness.deploy(ref="main", repo=local)

    assert not result.ok
    assert result.health is None
    failure = result.failure()
    assert failure is not None
    assert "hook reported a failure" in failure
    assert any("cannot start" in line for line in result.hosts[0].tail)

    with pytest.raises(UsageError, match="nope"):
        await harness.deploy(ref="nope", repo=local)


@pytest.mark.integration
async def test_deploy_timeout_stops_a_hanging_host_and_keeps_the_lock_alive(
    ssh_server: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    marker = unique_marker()
    config = deploy_config(
        ssh_server,
        tmp_path,
        redis_server.url,
        backend,
        steps=[f"echo waiting; sh -c 'sleep 31' {marker} | cat", "touch NEVER"],
        deploy_timeout=1.5,
    )
    pool = SshPool(config.ssh)
    health = HealthChecker(config, hysteresis=False)
    # A lock that would expire mid-deploy unless renewed.
    runner = DeployRunner(config, control, pool, health, lock_ttl=0.5, lock_renew_every=0.1)
    other = ControlPlane(redis_server.url, APP, actor="eve@elsewhere")
    try:
        task = asyncio.create_task(runner.deploy(Colour.BLUE))
        await asyncio.sleep(1.0)
        with pytest.raises(LockHeld, match="tester@ci"):
            await other.acquire_lock("deploy:blue", "sneaky", 5)
        result = await task
    finally:
        await other.aclose()
        await pool.aclose()
        await health.aclose()

    assert not result.ok
    host = result.hosts[0]
    assert host.exit_status is None
    assert host.error is not None
    assert "timed out" in host.error
    assert "deploy_timeout" in host.error
    assert host.tail == ("waiting",)
    assert 1.4 < result.duration < 5
    assert not (tmp_path / "NEVER").exists()
    assert await control.lock_info("deploy:blue") is None
    # The hanging step was stopped on the host, not left running.
    for _ in range(50):
        if not _remote_commands(ssh_server, marker):
            break
        await asyncio.sleep(0.1)
    assert _remote_commands(ssh_server, marker) == []


def _remote_commands(server: SshServer, needle: str) -> list[int]:
    """Processes anywhere on the machine carrying ``needle``: a step whose wrapper died is
    re-parented to PID 1, out of sshd's tree."""
    del server  # every test host is this machine
    return processes_with(needle)


@pytest.mark.integration
async def test_git_push_failures_carry_a_fix(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    local = tmp_path / "local"
    make_app_repo(local, "x\n")
    git_table = {"repo": str(tmp_path / "none.git"), "worktree": str(tmp_path / "app")}
    config = deploy_config(ssh_server, tmp_path, redis_server.url, backend, git=git_table)

    result = await make_harness(config).deploy(ref="main", repo=local)
    error = result.hosts[0].error
    assert error is not None
    assert "deploy setup" in error

    # An untrusted host key is refused (no silent trust), with the fix named.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    strict = dataclasses.replace(
        config, ssh=dataclasses.replace(config.ssh, known_hosts=str(empty))
    )
    result = await make_harness(strict).deploy(ref="main", repo=local)
    error = result.hosts[0].error
    assert error is not None
    assert "ssh-keyscan" in error


def test_refs_that_a_remote_command_would_read_as_options_are_refused() -> None:
    for ref in ("--help", "-x", "", "v1\nv2", "v1\x1b[2J"):
        with pytest.raises(UsageError):
            check_ref(ref)
    for ref in ("v1.2.3", "main", "a1b2c3", "feature/x-y", "v1; rm -rf /"):
        check_ref(ref)  # odd but harmless: quoted, and never an option
    check_ref(None)


@pytest.mark.integration
async def test_an_option_like_ref_runs_nothing(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    control: ControlPlane,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    config = deploy_config(
        ssh_server, tmp_path, redis_server.url, backend, steps=["echo {ref} > REF"]
    )
    with pytest.raises(UsageError, match="starts with '-'"):
        await make_harness(config).deploy(ref="--help")
    assert not (tmp_path / "REF").exists()
    assert await control.events() == []


@pytest.mark.integration
async def test_a_hung_host_that_installed_the_release_is_not_recorded_failed(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    control: ControlPlane,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    """The last step installed the release, then the host stopped answering: the version
    probe shows the new release, so the deploy is not reported as failed."""
    config = deploy_config(
        ssh_server,
        tmp_path,
        redis_server.url,
        backend,
        steps=["echo fetch", control_step(backend, "{ref}") + "; sleep 30"],
        deploy_timeout=2.0,
    )
    result = await make_harness(config).deploy(ref="v2")

    assert result.outcome == "ok", result.failure()
    host = result.hosts[0]
    assert host.ok
    assert host.note is not None
    assert "installed" in host.note
    assert "v2" in host.note
    end = (await control.events())[-1]
    assert end.outcome == "ok"


@pytest.mark.integration
async def test_a_hung_host_whose_outcome_cannot_be_told_is_recorded_unknown(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    control: ControlPlane,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    marker = unique_marker()
    config = deploy_config(
        ssh_server,
        tmp_path,
        redis_server.url,
        backend,
        steps=[f"echo installing; sh -c 'sleep 30' {marker}"],
        deploy_timeout=1.5,
    )
    result = await make_harness(config).deploy(ref="v2")

    assert result.outcome == "unknown"
    assert not result.ok
    failure = result.failure()
    assert failure is not None
    assert "unknown" in failure
    assert result.hosts[0].unknown
    end = (await control.events())[-1]
    assert (end.kind, end.outcome) == ("deploy", "unknown")
    assert await gone(marker), describe(marker)


@pytest.mark.integration
async def test_a_lost_connection_mid_step_is_unknown_not_failed(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    control: ControlPlane,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    config = deploy_config(
        ssh_server, tmp_path, redis_server.url, backend, steps=["echo working; sleep 30"]
    )
    harness = make_harness(config)
    working = asyncio.Event()

    def on_line(line: OutputLine) -> None:
        if line.text == "working":
            working.set()

    task = asyncio.create_task(harness.runner.deploy(Colour.BLUE, ref="v2", on_line=on_line))
    async with asyncio.timeout(20):
        await working.wait()
    ssh_server.stop()  # the host goes away with the step running
    result = await task

    assert result.outcome == "unknown", result.failure()
    assert result.hosts[0].unknown
    end = (await control.events())[-1]
    assert end.outcome == "unknown"


@pytest.mark.integration
async def test_a_cancelled_deploy_leaves_nothing_running_on_the_host(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    control: ControlPlane,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    marker = unique_marker()
    config = deploy_config(
        ssh_server,
        tmp_path,
        redis_server.url,
        backend,
        steps=[f"cd . && sh -c 'sleep 30' {marker} | sh -c cat {marker}"],
    )
    task = asyncio.create_task(make_harness(config).deploy(ref="v2"))
    try:
        assert await appears(marker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await gone(marker), describe(marker)
    finally:
        kill_leftovers(marker)
    assert (await control.events())[-1].outcome == "cancelled"


@pytest.mark.integration
async def test_a_hung_ssh_host_is_unknown_and_stopped_once_it_wakes(
    ssh_server: SshServer,
    backend: HttpBackend,
    make_harness: MakeHarness,
    control: ControlPlane,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    """The host's sshd freezes mid-step (SIGSTOP): the deploy ends at its timeout with an
    unknown outcome; when the host wakes, the step is stopped, not left running."""
    marker = unique_marker()
    config = deploy_config(
        ssh_server,
        tmp_path,
        redis_server.url,
        backend,
        steps=[f"echo working; sh -c 'sleep 30' {marker}"],
        deploy_timeout=2.0,
    )
    harness = make_harness(config)
    working = asyncio.Event()

    def on_line(line: OutputLine) -> None:
        if line.text == "working":
            working.set()

    task = asyncio.create_task(harness.runner.deploy(Colour.BLUE, ref="v2", on_line=on_line))
    frozen: list[int] = []
    try:
        async with asyncio.timeout(20):
            await working.wait()
        frozen = [p for p in descendants(ssh_server.pid or 0) if _comm(p) == "sshd"]
        assert frozen, "no per-connection sshd to freeze"
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        result = await task
        assert result.outcome == "unknown", result.failure()
        assert (await control.events())[-1].outcome == "unknown"
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    try:
        assert await gone(marker, within=10), describe(marker)
    finally:
        kill_leftovers(marker)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
