"""Fleets: 20 OpenSSH hosts on 127.0.0.2-127.0.0.21 (one app each), shared by the module.

Deploys in batches behind a canary, logs multiplexed over every host with a bounded
buffer per host, and status collapsing a colour of many hosts to one line.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from deploy_support import commit_file, git, make_app_repo
from fleet_support import FLEET_SIZE, Fleet, FleetHost, fleet_config_data, release_steps
from servers import RedisServer

from console.cli.logs import format_batch
from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.deploy import BatchProgress, DeployRunner, plan_batches
from console.core.fleet import name_list, summarize
from console.core.health import HealthChecker
from console.core.logs import LogBatch, LogFollower, _StreamBuffers
from console.core.models import Colour, EnvHealth, HostHealth, Probe, Verdict
from console.core.ssh import OutputLine, SshPool

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count(1)


# --- pure ----------------------------------------------------------------------------


def test_plan_batches_canary_alone_then_batches_of_parallel() -> None:
    hosts = [f"app{i}" for i in range(1, 21)]
    plan = plan_batches(hosts, 5, canary=True)
    assert [len(b) for b in plan] == [1, 5, 5, 5, 4]
    assert plan[0] == ("app1",)
    assert plan[1] == ("app2", "app3", "app4", "app5", "app6")
    assert [len(b) for b in plan_batches(hosts, 5, canary=False)] == [5, 5, 5, 5]
    assert plan_batches(["app1"], 5, canary=True) == [("app1",)]
    assert [len(b) for b in plan_batches(hosts, 100, canary=True)] == [1, 19]
    assert [h for b in plan for h in b] == hosts  # every host once, in config order


def test_name_list_shortens_long_lists() -> None:
    assert name_list(["a", "b"]) == "a, b"
    names = [f"app{i}" for i in range(1, 13)]
    assert name_list(names, 3) == "app1, app2, app3 and 9 more"


def _host(name: str, up: bool, error: str | None = None, version: str = "1.1.0") -> HostHealth:
    probe = Probe(0.0, up, 200 if up else None, 1.0, version if up else None, error)
    return HostHealth(Colour.GREEN, name, "http://x", up, probe, 0, 0, (probe,))


def test_fleet_summary_line_names_the_down_hosts_with_their_cause() -> None:
    hosts = [
        _host(f"app{i}", i != 7, None if i != 7 else "connection refused") for i in range(1, 21)
    ]
    env = EnvHealth(Colour.GREEN, Verdict.DEGRADED, tuple(hosts))
    assert summarize(env).line() == (
        "green: 20 hosts, 19 up, 1 down: app7 (connection refused); version 1.1.0"
    )
    # Several causes: grouped, the most common first; a mixed rollout shows its versions.
    hosts[2] = _host("app3", False, "HTTP 500 (want 200)")
    hosts[3] = _host("app4", False, "HTTP 500 (want 200)")
    hosts[4] = _host("app5", True, version="1.0.0")
    line = summarize(EnvHealth(Colour.GREEN, Verdict.DEGRADED, tuple(hosts))).line()
    assert line == (
        "green: 20 hosts, 17 up, 3 down: app3, app4 (HTTP 500 (want 200)); "
        "app7 (connection refused); versions 1.1.0 (16), 1.0.0 (1)"
    )


def test_log_lines_of_a_fleet_line_up_and_markers_are_bracketed() -> None:
    line = LogBatch(Colour.BLUE, "app1", "app", ("GET /",), 0.0)
    gap = LogBatch(Colour.BLUE, "app7", "app", ("blue/app7: 1,234 lines dropped",), 0.0, True)
    assert format_batch(line, False, width=len("blue/app10")) == "blue/app1  | GET /\n"
    assert format_batch(gap, False, width=10) == "[blue/app7: 1,234 lines dropped]\n"


def _batch(host: str, *lines: str) -> LogBatch:
    return LogBatch(Colour.BLUE, host, "app", lines, 0.0)


async def test_stream_buffers_take_turns_and_mark_the_gap_where_it_is() -> None:
    buffers = _StreamBuffers(5)
    a, b = ("blue", "app1", "app"), ("blue", "app2", "app")
    buffers.put(a, _batch("app1", "1", "2", "3"))
    buffers.put(a, _batch("app1", "4", "5", "6", "7"))  # 7 lines > 5: "1" and "2" go
    buffers.put(b, _batch("app2", "x"))
    buffers.put(a, None)
    assert buffers.lines == 6
    assert buffers.dropped == 2
    got = [await buffers.get() for _ in range(5)]
    assert [(g.host, g.lines, g.marker) if g else None for g in got] == [
        ("app1", ("blue/app1: 2 lines dropped (the reader fell behind)",), True),
        ("app1", ("3",), False),  # the marker stays next to the lines after the gap
        ("app2", ("x",), False),  # then the turn goes round
        ("app1", ("4", "5", "6", "7"), False),
        None,
    ]
    assert buffers.lines == 0


async def test_stream_buffers_bound_characters_too() -> None:
    buffers = _StreamBuffers(1000, max_chars=10)
    key = ("blue", "app1", "app")
    buffers.put(key, _batch("app1", "aaaaaa", "bbbbbb"))
    buffers.put(key, _batch("app1", "cccccc", "dddddd"))
    # 24 characters, 10 allowed: only the newest line is left (never none).
    assert (buffers.lines, buffers.dropped) == (1, 3)
    gap, last = await buffers.get(), await buffers.get()
    assert gap is not None
    assert gap.lines == ("blue/app1: 3 lines dropped (the reader fell behind)",)
    assert last is not None
    assert last.lines == ("dddddd",)


# --- the fleet -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(FLEET_SIZE) as started:
        yield started


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh(fleet: Fleet) -> Fleet:
    """The shared fleet with every app back at 1.0.0, healthy, and no VERSION files."""
    fleet.reset("1.0.0")
    for host in fleet.hosts:
        (host.workdir / "VERSION").unlink(missing_ok=True)
    return fleet


def _config(fleet: Fleet, redis: RedisServer, **kwargs: Any) -> Config:
    # A console name per test: the tests share one Redis, not their events and locks.
    return parse_config(fleet_config_data(fleet, redis.url, name=f"fleet{next(_names)}", **kwargs))


def _deployed(host: FleetHost) -> str | None:
    path = host.workdir / "VERSION"
    return path.read_text() if path.exists() else None


class Runner:
    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.config = config
        self.control = ControlPlane(config.control.redis, config.console.name, actor="t@ci")
        self.pool = SshPool(config.ssh)
        self.health = HealthChecker(config, hysteresis=False)
        self.runner = DeployRunner(config, self.control, self.pool, self.health, **kwargs)
        self.batches: list[BatchProgress] = []

    async def deploy(self, ref: str) -> Any:
        return await self.runner.deploy(Colour.BLUE, ref=ref, on_batch=self.batches.append)

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.health.aclose()
        await self.control.aclose()


@pytest.fixture
async def runners() -> AsyncIterator[list[Runner]]:
    made: list[Runner] = []
    yield made
    for runner in made:
        await runner.aclose()


@pytest.mark.integration
async def test_deploy_twenty_hosts_canary_then_batches_of_five(
    fresh: Fleet, redis: RedisServer, runners: list[Runner]
) -> None:
    runner = Runner(_config(fresh, redis), parallel=5)
    runners.append(runner)

    result = await runner.deploy("v2")

    assert result.ok, result.failure()
    assert result.version == "v2"
    assert [len(b) for b in result.batches] == [1, 5, 5, 5, 4]
    assert all(_deployed(h) == "v2" for h in fresh.hosts)
    # In order: each batch started only once the one before was healthy.
    states = [(b.index, b.state) for b in runner.batches]
    assert states == [(i, s) for i in range(1, 6) for s in ("started", "healthy")]
    assert runner.batches[0].canary
    assert runner.batches[0].hosts == ("app1",)
    end = [e for e in await runner.control.events() if e.kind == "deploy"][-1]
    assert end.outcome == "ok"
    assert end.details["batches"] == "1+5+5+5+4"
    assert end.details["canary"] == "app1"
    assert end.details["rollout"].startswith("20 of 20 host(s) deployed")
    assert end.details["untouched_hosts"] == ""


@pytest.mark.integration
async def test_a_broken_canary_stops_the_rollout_with_19_hosts_untouched(
    fresh: Fleet, redis: RedisServer, runners: list[Runner]
) -> None:
    def steps(host: FleetHost) -> list[str]:
        return release_steps(host, broken=host.name == "app1")

    runner = Runner(_config(fresh, redis, steps=steps, health_timeout=1.0), parallel=5)
    runners.append(runner)
    asked = [h.app.control()["requests"] for h in fresh.hosts]

    result = await runner.deploy("v3")

    assert not result.ok
    assert result.stopped_at == 1
    # The canary's health wait (a second of rounds) probed the canary only: the others
    # were asked once, for their version before the deploy.
    more = [h.app.control()["requests"] - n for h, n in zip(fresh.hosts, asked, strict=True)]
    assert more[0] > 3
    assert more[1:] == [1] * 19
    assert result.failed_hosts == ("app1",)
    assert result.deployed_hosts == ()
    assert len(result.untouched) == 19
    assert [h.host for h in result.hosts] == ["app1"]  # nothing ran anywhere else
    assert [_deployed(h) for h in fresh.hosts[1:]] == [None] * 19
    assert all(h.app.control()["version"] == "1.0.0" for h in fresh.hosts[1:])
    failure = result.failure()
    assert failure is not None
    assert "stopped at the canary app1" in failure
    assert "0 of 20 host(s) deployed, 1 failed (app1), 19 left untouched" in failure
    assert "app1: HTTP 500" in failure
    end = [e for e in await runner.control.events() if e.kind == "deploy"][-1]
    assert end.outcome == "failed"
    assert end.details["failed_hosts"] == "app1"
    assert end.details["untouched_hosts"].split(",") == [f"app{i}" for i in range(2, 21)]


@pytest.mark.integration
async def test_a_failing_step_in_a_batch_stops_there(
    fresh: Fleet, redis: RedisServer, runners: list[Runner]
) -> None:
    def steps(host: FleetHost) -> list[str]:
        extra = ["echo disk full >&2; exit 3"] if host.name == "app4" else []
        return release_steps(host) + extra

    runner = Runner(_config(fresh, redis, steps=steps), parallel=5)
    runners.append(runner)

    result = await runner.deploy("v4")

    assert result.stopped_at == 2
    assert result.failed_hosts == ("app4",)
    assert result.deployed_hosts == ("app1", "app2", "app3", "app5", "app6")
    assert result.untouched == tuple(f"app{i}" for i in range(7, 21))
    assert result.health is None  # the failed batch was not waited for
    assert [_deployed(h) for h in fresh.hosts[6:]] == [None] * 14
    assert runner.batches[-1].state == "failed"
    assert "exited 3" in runner.batches[-1].detail
    shown = result.as_dict()  # --json
    assert shown["stopped_at_batch"] == 2
    assert shown["batches"][:2] == [["app1"], ["app2", "app3", "app4", "app5", "app6"]]
    assert shown["failed_hosts"] == ["app4"]
    assert shown["deployed_hosts"] == ["app1", "app2", "app3", "app5", "app6"]
    assert shown["untouched_hosts"] == [f"app{i}" for i in range(7, 21)]


async def _cli(config_path: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", *args, "-c", str(config_path),
        cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _write(path: Path, fleet: Fleet, redis: RedisServer, **kwargs: Any) -> Path:
    data = fleet_config_data(fleet, redis.url, name=f"fleet{next(_names)}", **kwargs)
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.integration
async def test_cli_deploy_says_where_the_rollout_stopped_and_what_is_untouched(
    fresh: Fleet, redis: RedisServer, tmp_path: Path
) -> None:
    def steps(host: FleetHost) -> list[str]:
        return release_steps(host, broken=host.name == "app8")

    config = _write(tmp_path / "bg.toml", fresh, redis, steps=steps, health_timeout=1.0)

    code, out, err = await _cli(config, "deploy", "blue", "--ref", "v5", "--parallel", "5")

    assert code == 1, err
    assert "blue: canary app1 (batch 1/5): healthy after" in out
    assert "blue: batch 3/5 (app7, app8, app9, app10, app11): FAILED: app8: HTTP 500" in out
    assert (
        "rollout: 10 of 20 host(s) deployed, 1 failed (app8), 9 left untouched "
        "(app12, app13, app14, app15, app16, app17, app18, app19 and 1 more); "
        "stopped at batch 3/5 (app7, app8, app9, app10, app11)"
    ) in out
    assert "untouched (not deployed): app12, app13, app14, app15, app16, app17, app18, " in out
    assert "stopped at batch 3/5" in err
    assert "9 left untouched" in err
    assert [_deployed(h) for h in fresh.hosts[11:]] == [None] * 9


@pytest.mark.integration
async def test_status_collapses_twenty_hosts_to_one_line(
    fresh: Fleet, redis: RedisServer, tmp_path: Path
) -> None:
    config = _write(tmp_path / "bg.toml", fresh, redis)
    fresh.host("app7").app.stop()
    try:
        _, out, _ = await _cli(config, "status")
        _, wide, _ = await _cli(config, "status", "--hosts")
    finally:
        fresh.host("app7").app.start()
    summary = [line for line in out.splitlines() if "20 hosts" in line]
    assert len(summary) == 1
    assert re.search(r"blue: 20 hosts, 19 up, 1 down: app7 \(.*refused.*\); version 1\.0\.0", out)
    assert "app12" not in out  # no row per host
    assert all(f" app{i} " in wide for i in range(1, 21))


# --- logs ------------------------------------------------------------------------------


@pytest.mark.integration
async def test_logs_of_twenty_hosts_multiplexed_and_aligned(
    fresh: Fleet, redis: RedisServer, tmp_path: Path
) -> None:
    config = _write(
        tmp_path / "bg.toml",
        fresh,
        redis,
        logs=lambda h: {"app": f"echo {h.name} a; echo {h.name} b"},
    )

    code, out, err = await _cli(config, "logs", "blue", "app", "-n", "2")

    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 40
    assert "blue/app1  | app1 a" in lines
    assert "blue/app20 | app20 b" in lines
    assert len({line.index("|") for line in lines}) == 1  # one column for every host


@pytest.mark.integration
async def test_follow_with_a_slow_reader_drops_oldest_lines_per_host_and_says_so(
    fresh: Fleet, redis: RedisServer
) -> None:
    config = _config(
        fresh, redis, logs=lambda h: {"app": f"seq -f '{h.name} %g' 1 50000; sleep 60"}
    )
    pool = SshPool(config.ssh)
    hosts = [(Colour.BLUE, h) for h in config.env(Colour.BLUE).hosts]
    follower = LogFollower(pool, hosts, "app", lines=0, follow=True, per_host_lines=100)
    batches = follower.batches()
    gaps: dict[str, int] = {}
    last: dict[str, str] = {}

    def take(batch: LogBatch) -> None:
        if batch.marker:
            match = re.fullmatch(r"blue/(app\d+): ([\d,]+) lines dropped .*", batch.lines[0])
            if match:
                gaps[match[1]] = gaps.get(match[1], 0) + int(match[2].replace(",", ""))
        else:
            last[batch.host] = batch.lines[-1]

    try:
        # Streaming (already dropping: the reader has not read). This first batch counts
        # too: it may be a host's first gap marker.
        take(await anext(batches))
        peak = 0
        deadline = time.monotonic() + 45
        # The reader stalls until all twenty hosts have written their 50,000 lines (each
        # host's all but newest 100 dropped). Waiting for a total of 800,000 let one slow
        # host finish after the reader caught up, with fewer drops than asserted below.
        while follower.dropped < 20 * (50_000 - 100) and time.monotonic() < deadline:
            peak = max(peak, follower.buffered)
            await asyncio.sleep(0.05)
        assert follower.dropped >= 20 * (50_000 - 100), "the hosts did not finish in 45 s"
        assert peak <= 20 * 100
        while len(last) < 20 or any(not v.endswith(" 50000") for v in last.values()):
            take(await asyncio.wait_for(anext(batches), 10))
        # Every host kept its newest lines, and said how many of its lines it dropped.
        assert len(gaps) >= 19
        assert all(n > 40_000 for n in gaps.values()), gaps
    finally:
        await batches.aclose()
        await pool.aclose()


@pytest.mark.integration
async def test_one_host_dropping_out_is_marked_for_that_host_while_the_rest_stream(
    fresh: Fleet, redis: RedisServer
) -> None:
    ticker = "while :; do echo tick; sleep 0.05; done"
    config = _config(fresh, redis, logs=lambda h: {"app": ticker})
    pool = SshPool(config.ssh)
    hosts = [(Colour.BLUE, h) for h in config.env(Colour.BLUE).hosts]
    follower = LogFollower(
        pool, hosts, "app", lines=0, follow=True, per_host_lines=100, retry_initial=0.1
    )
    batches = follower.batches()
    app7 = fresh.host("app7").ssh

    async def until(pattern: str) -> set[str]:
        """Read until a marker matches; the hosts that sent lines meanwhile."""
        seen: set[str] = set()
        async with asyncio.timeout(20):
            async for batch in batches:
                if batch.marker and re.fullmatch(pattern, batch.lines[0]):
                    return seen
                if not batch.marker:
                    seen.add(batch.host)
        raise AssertionError("the stream ended")

    try:
        async with asyncio.timeout(20):
            while len(seen := {b.host async for b in _take(batches, 200)}) < 20:
                pass
        assert len(seen) == 20
        app7.stop()  # the host goes down: its sessions end, its port refuses
        others = await until(r"blue/app7 disconnected, retrying")
        app7.start()
        others |= await until(r"blue/app7 reconnected after \d+\.\d s")
        assert len(others - {"app7"}) == 19  # the others kept streaming meanwhile
        assert (
            format_batch(
                LogBatch(
                    Colour.BLUE, "app7", "app", ("blue/app7 disconnected, retrying",), 0.0, True
                ),
                False,
            )
            == "[blue/app7 disconnected, retrying]\n"
        )
    finally:
        await batches.aclose()
        await pool.aclose()
        app7.start()


async def _take(batches: AsyncIterator[LogBatch], n: int) -> AsyncIterator[LogBatch]:
    for _ in range(n):
        yield await anext(batches)


# --- git pushes in batches ---------------------------------------------------------------

RESTART = r"""#!/bin/sh
# The fleet's "restart": tell this host's app (its URL in ~/app_url) the release checked
# out; a host with ~/broken comes up answering 500 (a release broken on that host).
url=$(cat "$HOME/app_url")
post() {
  curl -sSf -m 5 -H 'Content-Type: application/json' --data-binary "$1" "$url/__control"
}
post "{\"version\": \"$(cat app.txt)\"}"
if [ -e "$HOME/broken" ]; then post '{"mode": "500"}'; fi
echo "restarted on $(cat app.txt)"
"""


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local repository: ``v2`` and ``v3`` tags, each with app.txt and restart.sh."""
    path = tmp_path_factory.mktemp("repo")
    make_app_repo(path, "v2")
    (path / "restart.sh").write_text(RESTART)
    git(path, "add", "restart.sh")
    git(path, "commit", "--quiet", "-m", "restart")
    git(path, "tag", "v2")
    commit_file(path, "v3")
    git(path, "tag", "v3")
    return path


def _git_data(fleet: Fleet, redis: RedisServer) -> dict[str, Any]:
    """The fleet as a git-pipeline colour: no steps, ``~/app.git`` on every host."""
    data = fleet_config_data(fleet, redis.url, name=f"fleet{next(_names)}", health_timeout=2.0)
    for host in data["env"]["blue"]["hosts"]:
        del host["deploy"]
    data["env"]["blue"]["git"] = {
        "repo": "~/app.git",
        "worktree": "~/app",
        "restart": "sh restart.sh",
    }
    return data


@pytest.fixture
def git_fleet(fresh: Fleet) -> Iterator[Fleet]:
    """The fleet with each host's ~/app_url written and nothing broken or pushed yet."""
    for host in fresh.hosts:
        host.home.mkdir(exist_ok=True)
        (host.home / "app_url").write_text(host.app.url)
        (host.home / "broken").unlink(missing_ok=True)
        shutil.rmtree(host.home / "app.git", ignore_errors=True)
        shutil.rmtree(host.home / "app", ignore_errors=True)
    yield fresh
    for host in fresh.hosts:
        (host.home / "broken").unlink(missing_ok=True)


def _checked_out(host: FleetHost) -> str | None:
    path = host.home / "app" / "app.txt"
    return path.read_text().strip() if path.exists() else None


@pytest.mark.integration
async def test_git_deploy_twenty_hosts_canary_then_batches_of_five(
    git_fleet: Fleet, redis: RedisServer, app_repo: Path, runners: list[Runner]
) -> None:
    runner = Runner(parse_config(_git_data(git_fleet, redis)), parallel=5)
    runners.append(runner)
    setup = await runner.runner.setup_git(Colour.BLUE)
    assert all(r.ok for r in setup), [r.error for r in setup if not r.ok]
    pushed: list[tuple[str, float]] = []

    def on_line(line: OutputLine) -> None:
        if "bgconsole-hook: DEPLOYED" in line.text:
            pushed.append((line.host, time.monotonic()))

    result = await runner.runner.deploy(
        Colour.BLUE, ref="v2", method="git", repo=app_repo,
        on_line=on_line, on_batch=runner.batches.append,
    )  # fmt: skip

    assert result.ok, result.failure()
    assert result.method == "git"
    assert result.version == "v2"
    assert [len(b) for b in result.batches] == [1, 5, 5, 5, 4]
    assert [_checked_out(h) for h in git_fleet.hosts] == ["v2"] * 20
    assert all(h.app.control()["version"] == "v2" for h in git_fleet.hosts)
    states = [(b.index, b.state) for b in runner.batches]
    assert states == [(i, s) for i in range(1, 6) for s in ("started", "healthy")]
    assert runner.batches[0].canary
    assert runner.batches[0].hosts == ("app1",)
    # Pushed in the plan's order: no host of a batch before every host of the one before.
    order = [host for host, _ in sorted(pushed, key=lambda p: p[1])]
    assert order[0] == "app1"
    assert set(order[1:6]) == {f"app{i}" for i in range(2, 7)}
    assert set(order[16:]) == {f"app{i}" for i in range(17, 21)}
    end = [e for e in await runner.control.events() if e.kind == "deploy"][-1]
    assert end.details["batches"] == "1+5+5+5+4"
    assert end.details["canary"] == "app1"
    assert end.details["method"] == "git"


@pytest.mark.integration
async def test_git_deploy_with_a_broken_canary_pushes_nowhere_else(
    git_fleet: Fleet, redis: RedisServer, app_repo: Path, runners: list[Runner]
) -> None:
    runner = Runner(parse_config(_git_data(git_fleet, redis)), parallel=5)
    runners.append(runner)
    assert all(r.ok for r in await runner.runner.setup_git(Colour.BLUE))
    (git_fleet.host("app1").home / "broken").touch()

    result = await runner.runner.deploy(
        Colour.BLUE, ref="v3", method="git", repo=app_repo, on_batch=runner.batches.append
    )

    assert not result.ok
    assert result.stopped_at == 1
    assert result.failed_hosts == ("app1",)
    assert len(result.untouched) == 19
    assert [h.host for h in result.hosts] == ["app1"]
    assert _checked_out(git_fleet.host("app1")) == "v3"
    # Nothing was pushed to the others: their bare repositories have no deploy branch.
    assert [_checked_out(h) for h in git_fleet.hosts[1:]] == [None] * 19
    assert not any((h.home / "app.git" / "refs/heads/deploy").exists() for h in git_fleet.hosts[1:])
    assert all(h.app.control()["version"] == "1.0.0" for h in git_fleet.hosts[1:])
    failure = result.failure()
    assert failure is not None
    assert "stopped at the canary app1" in failure
    assert "app1: HTTP 500" in failure
    assert [(b.index, b.state) for b in runner.batches] == [(1, "started"), (1, "failed")]


@pytest.mark.integration
async def test_cli_git_deploy_parallel_stops_at_the_first_unhealthy_batch(
    git_fleet: Fleet, redis: RedisServer, app_repo: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bg.toml"
    config.write_text(tomli_w.dumps(_git_data(git_fleet, redis)))
    code, out, err = await _cli(config, "deploy", "setup", "blue")
    assert code == 0, out + err
    (git_fleet.host("app8").home / "broken").touch()

    code, out, err = await _cli(
        config, "deploy", "blue", "--git", "--repo", str(app_repo), "--ref", "v2", "--parallel", "5"
    )

    assert code == 1, err
    assert "deploy v2 -> blue (git): FAILED" in out
    assert "blue: canary app1 (batch 1/5): healthy after" in out
    assert "blue: batch 2/5 (app2, app3, app4, app5, app6): healthy after" in out
    assert "blue: batch 3/5 (app7, app8, app9, app10, app11): FAILED: app8: HTTP 500" in out
    assert "rollout: 10 of 20 host(s) deployed, 1 failed (app8), 9 left untouched" in out
    assert "stopped at batch 3/5" in err
    assert [_checked_out(h) for h in git_fleet.hosts[:11]] == ["v2"] * 11
    assert [_checked_out(h) for h in git_fleet.hosts[11:]] == [None] * 9
