"""A deploy is done when the host serves the new release, not when the old one answers.

Real sshd, redis-server and HTTP backend; the backend's version is what the app reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deploy_support import control_step, deploy_config_data
from servers import HttpBackend, HttpBackendFactory, RedisServer, SshServer

from console.core.config import parse_config
from console.core.control import ControlPlane
from console.core.deploy import DeployResult, DeployRunner
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.ssh import SshPool

APP = "deploytest"


@pytest.fixture
async def control(redis_server: RedisServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(redis_server.url, APP, actor="tester@ci")
    try:
        yield plane
    finally:
        await plane.aclose()


async def _deploy(
    ssh: SshServer,
    backend: HttpBackend,
    control: ControlPlane,
    redis_url: str,
    tmp_path: Path,
    steps: list[str],
    *,
    health_timeout: float = 5.0,
    version: bool = True,
    ref: str = "v2",
) -> DeployResult:
    data = deploy_config_data(
        ssh, tmp_path, redis_url, backend, steps=steps, health_timeout=health_timeout
    )
    if not version:
        del data["env"]["blue"]["version"]
    config = parse_config(data)
    pool = SshPool(config.ssh)
    health = HealthChecker(config, hysteresis=False)
    try:
        return await DeployRunner(config, control, pool, health).deploy(Colour.BLUE, ref=ref)
    finally:
        await pool.aclose()
        await health.aclose()


def _later(backend: HttpBackend, version: str, delay: float) -> str:
    """A restart that lags: the old process answers for ``delay`` s, then the new one."""
    step = control_step(backend, version)
    return f"(sleep {delay}; {step}) >/dev/null 2>&1 </dev/null &"


@pytest.mark.integration
async def test_a_lagging_restart_is_waited_for_not_passed_on_the_old_release(
    ssh_server: SshServer,
    http_backend_factory: HttpBackendFactory,
    control: ControlPlane,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    backend = http_backend_factory("blue", "1.0.0")
    result = await _deploy(
        ssh_server, backend, control, redis_server.url, tmp_path, [_later(backend, "{ref}", 1.0)]
    )
    assert result.ok, result.failure()
    assert result.version == "v2"
    assert result.health is not None
    assert result.health.waited >= 0.8


@pytest.mark.integration
async def test_a_host_still_on_the_old_version_fails_with_what_it_serves(
    ssh_server: SshServer,
    http_backend_factory: HttpBackendFactory,
    control: ControlPlane,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    backend = http_backend_factory("blue", "1.1.0")
    result = await _deploy(
        ssh_server, backend, control, redis_server.url, tmp_path, ["true"], health_timeout=1.0
    )
    assert not result.ok
    assert result.outcome == "failed"
    failure = result.failure()
    assert failure is not None
    assert "blue: still serving 1.1.0 after 1 s" in failure
    end = (await control.events())[-1]
    assert (end.kind, end.outcome) == ("deploy", "failed")


@pytest.mark.integration
async def test_without_a_version_source_the_deploy_says_version_unknown(
    ssh_server: SshServer,
    http_backend_factory: HttpBackendFactory,
    control: ControlPlane,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    backend = http_backend_factory("blue", "1.0.0")
    result = await _deploy(
        ssh_server, backend, control, redis_server.url, tmp_path, ["true"], version=False
    )
    assert result.ok  # nothing can tell it failed...
    assert any(w.startswith("version unknown:") for w in result.warnings)  # ...and it says so
    assert any("bgconsole doctor" in w for w in result.warnings)


@pytest.mark.integration
async def test_a_moved_branch_deploys_the_new_commit_with_the_sample_steps(
    ssh_server: SshServer,
    http_backend_factory: HttpBackendFactory,
    control: ControlPlane,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """The sample's git steps on a host whose local branch is stale: the new commit wins."""
    import subprocess

    def git(cwd: Path, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=cwd, check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()  # fmt: skip

    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "--initial-branch=main")
    (origin / "VERSION").write_text("1.0.0")
    git(origin, "add", "VERSION")
    git(origin, "commit", "-qm", "one")
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    (origin / "VERSION").write_text("2.0.0")
    git(origin, "commit", "-qam", "two")  # main moved; the host's local main did not
    new = git(origin, "rev-parse", "HEAD")

    old = git(work, "rev-parse", "HEAD")
    backend = http_backend_factory("blue", "1.0.0")
    restart = control_step(backend, "$(cat VERSION)")

    # The steps the sample used to show: the host's stale local main is checked out, the
    # app restarts on 1.0.0 again, and the deploy says so instead of "ok".
    trap = ["git fetch --all", "git checkout --force {ref}", restart]
    result = await _deploy(
        ssh_server, backend, control, redis_server.url, work, trap, ref="main",
        health_timeout=1.0,
    )  # fmt: skip
    assert git(work, "rev-parse", "HEAD") == old
    assert not result.ok
    assert "blue: still serving 1.0.0 after 1 s" in (result.failure() or "")

    result = await _deploy(
        ssh_server, backend, control, redis_server.url, work, [*_sample_steps(), restart],
        ref="main",
    )  # fmt: skip
    assert result.ok, result.failure()
    assert git(work, "rev-parse", "HEAD") == new
    assert result.version == "2.0.0"


def _sample_steps() -> list[str]:
    """The deploy steps sample.toml shows, minus its restart step."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "sample.toml").read_text())
    steps: list[str] = data["env"]["blue"]["deploy"]
    git_steps = [s for s in steps if s.startswith("git ")]
    assert git_steps, steps
    return git_steps
