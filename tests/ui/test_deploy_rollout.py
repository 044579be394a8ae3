"""The deploy form's git option and batch size, and the run screen's rollout line, on
real servers: sshd + a bare repository for git, a fleet of sshd hosts for batches."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_support import commit_file, control_step, deploy_config, make_app_repo
from fleet_support import Fleet, FleetHost, fleet_config_data, release_steps
from servers import HttpBackend, HttpBackendFactory, RedisServer, SshServer
from textual.app import App
from textual.content import Content
from textual.widgets import Input, Label, RadioButton, Static
from ui_support import live_app, screen_text, wait_for

from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.deploy import BatchProgress
from console.core.git_pipeline import GitPipeline
from console.core.models import Colour
from console.core.ssh import SshPool
from console.screens.deploy import DeployRequest, DeployScreen, batch_hint
from console.screens.deploy_run import BatchBoard, DeployRunScreen, batch_text, host_range
from console.widgets.env_panel import EnvPanel
from console.widgets.log_pane import LogPane

_names = itertools.count(1)


# --- pure ----------------------------------------------------------------------------


def test_batch_lines_name_the_batch_the_canary_and_the_host_that_stopped_it() -> None:
    assert host_range(("g-06", "g-07", "g-08", "g-09", "g-10")) == "g-06..g-10"
    assert host_range(("g-06", "g-07")) == "g-06, g-07"
    canary = BatchProgress(1, 4, ("g-01",), True, "healthy", "healthy after 0.4 s", 0.4)
    assert batch_text(canary) == "canary g-01 (batch 1/4) healthy after 0.4 s"
    second = BatchProgress(2, 4, ("g-02", "g-03", "g-04"), False, "started")
    assert batch_text(second) == "batch 2/4: g-02..g-04 deploying"
    board = BatchBoard(8)
    for batch in (BatchProgress(1, 4, ("g-01",), True, "started"), canary, second):
        board.update(batch)
    assert board.line().plain == (
        "rollout: canary g-01 (batch 1/4) healthy after 0.4 s · "
        "batch 2/4: g-02..g-04 deploying · 1/8 hosts done"
    )
    board.update(BatchProgress(2, 4, second.hosts, False, "failed", "g-03: HTTP 500"))
    assert board.line().plain.endswith(
        "batch 2/4: g-02..g-04 FAILED: g-03: HTTP 500; rollout stopped · 1/8 hosts done"
        " · 4 left untouched"
    )
    assert batch_hint(20, 5) == "20 hosts: the canary alone, then 5 at a time (5 batches)"


class FormApp(App[DeployRequest | None]):
    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config

    def on_mount(self) -> None:
        self.push_screen(DeployScreen(Colour.GREEN, Colour.BLUE, self.config), self.exit)


def _fleet_data(hosts: int) -> dict[str, Any]:
    blue = [{"name": f"b-{i:02}", "url": "http://127.0.0.1:9"} for i in range(1, hosts + 1)]
    return {
        "console": {"name": "shop"},
        "control": {"redis": "redis://127.0.0.1:9/0"},
        "router": {"kind": "builtin"},
        "env": {"blue": {"hosts": blue}, "green": {"url": "http://127.0.0.1:9"}},
    }


async def test_the_batch_size_field_is_there_for_a_fleet_and_checked() -> None:
    app = FormApp(parse_config(_fleet_data(20)))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        parallel = screen.query_one("#parallel", Input)
        row = screen.query_one("#batch-row")
        assert not row.display  # green: one host, nothing to batch
        await pilot.press(*"v2")
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        blue = next(b for b in screen.query(RadioButton) if b.name == "blue")
        assert await pilot.click(blue)
        await pilot.pause()
        assert row.display
        assert parallel.region.height == 3  # shown, on screen
        # No [env.blue.git]: the git choice is there, but off, and says why.
        git = screen.query_one("#method-git", RadioButton)
        assert git.disabled
        assert str(git.label) == "git push (not set up)"
        hint = str(screen.query_one("#batch-hint", Label).render())
        assert "20 hosts: the canary alone, then 10 at a time (3 batches)" in hint
        parallel.focus()
        await pilot.press("end", "backspace", "backspace", "0", "enter")
        await pilot.pause()
        error = screen.query_one("#form-error", Label)
        assert error.display
        assert "at least 1" in str(error.render())
        assert app.screen is screen  # not submitted
        await pilot.press("backspace", "5")
        await pilot.pause()
        assert "then 5 at a time (5 batches)" in str(screen.query_one("#batch-hint").render())
        await pilot.press("enter")
    assert app.return_value == DeployRequest(Colour.BLUE, "v2", None, None, 5)


async def test_the_git_choice_shows_the_repository_field() -> None:
    app = FormApp()
    async with app.run_test(size=(80, 24)) as pilot:
        repo = app.screen.query_one("#repo", Input)
        assert not repo.display
        assert app.screen.focused is app.screen.query_one("#ref", Input)  # the first field
        await pilot.press(*"v3", "tab", "tab", "right", "space")  # method: git push
        await pilot.pause()
        assert repo.display
        await pilot.press("tab", *"/srv/app", "enter")
    assert app.return_value == DeployRequest(Colour.GREEN, "v3", "git", Path("/srv/app"))


# --- git from the form, on real sshd -----------------------------------------------------


@pytest.fixture
def ssh() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


@pytest.fixture
def backend(http_backend_factory: HttpBackendFactory) -> HttpBackend:
    return http_backend_factory("blue", "1.0.0")


async def _green_live(config: Config) -> None:
    control = ControlPlane(config.control.redis, config.console.name, actor="t@ci")
    try:
        await control.switch(Colour.GREEN, expected_epoch=0, reason="test", kind="init")
    finally:
        await control.aclose()


def _green_shown_live(app: App[Any]) -> bool:
    panels = app.screen.query("#env-green")
    return bool(panels) and panels.first(EnvPanel).live


@pytest.mark.integration
async def test_deploy_form_git_ref_enter_runs_the_git_pipeline(
    ssh: SshServer, backend: HttpBackend, redis_server: RedisServer, tmp_path: Path
) -> None:
    remote, local = tmp_path / "host", tmp_path / "local"
    remote.mkdir()
    make_app_repo(local, "release 1\n")
    wanted = commit_file(local, "release 2\n")
    git_table = {
        "repo": str(remote / "app.git"),
        "worktree": str(remote / "app"),
        "restart": "cat app.txt > ../marker.txt && " + control_step(backend, "$new"),
    }
    # Steps are configured too: without the git choice, they would run instead.
    config = deploy_config(
        ssh, remote, redis_server.url, backend, steps=["touch STEPS_RAN"], git=git_table
    )
    pool = SshPool(config.ssh)
    try:
        assert all(r.ok for r in await GitPipeline(config, pool).setup(Colour.BLUE))
    finally:
        await pool.aclose()
    await _green_live(config)

    app = live_app(config)
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_for(pilot, lambda: _green_shown_live(app), what="the dashboard, green live")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), what="the form")
        assert not app.screen.query_one("#method-git", RadioButton).disabled
        await pilot.press("tab", "tab", "right", "space")  # method: git push
        await pilot.press("tab", *str(local))  # the repository
        app.screen.query_one("#ref", Input).focus()
        await pilot.press(*wanted[:12], "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployRunScreen), what="the run")
        run = app.screen
        assert isinstance(run, DeployRunScreen)
        assert run.request == DeployRequest(Colour.BLUE, wanted[:12], "git", local, None)
        await wait_for(pilot, lambda: run.result is not None, limit=60, what="the deploy")
        await pilot.pause(0.2)
        text = "\n".join(screen_text(app))
        result = run.result
        assert result is not None
        assert result.ok, result.failure()
        assert result.method == "git"
        assert (remote / "marker.txt").read_text() == "release 2\n"
        assert not (remote / "STEPS_RAN").exists()
        assert f"(git push from {local})" in screen_text(app)[0]
        assert f"deploy {wanted[:12]} → blue: ok in" in text
        assert "bgconsole-hook: DEPLOYED" in "\n".join(run.query_one(LogPane).lines)


# --- batches on a fleet ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(8) as started:
        yield started


@pytest.mark.integration
async def test_deploy_screen_shows_the_batches_the_canary_and_where_it_stopped(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    fleet.reset("1.0.0")

    def steps(host: FleetHost) -> list[str]:
        return release_steps(host, broken=host.name == "app6")

    data = fleet_config_data(
        fleet, redis_server.url, name=f"ui{next(_names)}", steps=steps, health_timeout=1.5
    )
    config = parse_config(data)
    await _green_live(config)

    app = live_app(config)
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_for(pilot, lambda: _green_shown_live(app), what="the dashboard, green live")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), what="the form")
        form = app.screen
        assert form.query_one("#batch-row").display  # blue has 8 hosts
        form.query_one("#parallel", Input).focus()
        await pilot.press("end", "backspace", "backspace", "3")
        form.query_one("#ref", Input).focus()
        await pilot.press(*"v2", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployRunScreen), what="the run")
        run = app.screen
        assert isinstance(run, DeployRunScreen)
        await wait_for(pilot, lambda: run.result is not None, limit=60, what="the deploy")
        await pilot.pause(0.2)
        rows = screen_text(app)
        text = "\n".join(rows)
        assert "(3 per batch)" in rows[0]
        # 1 + 3 + 3 + 1: the canary, app2..app4, app5..app7 (app6 breaks), app8 untouched.
        line = run.query_one(".deploy-batches", Static).render()
        assert isinstance(line, Content)
        assert line.plain.startswith("rollout: canary app1 (batch 1/4) healthy after")
        assert line.plain.endswith(
            " · batch 3/4: app5..app7 FAILED: app6: HTTP 500 (want 200); rollout stopped · "
            "4/8 hosts done · 1 left untouched"
        )
        assert rows[1].startswith(" rollout: canary app1 (batch 1/4) healthy after")
        assert "4/8 hosts done · 1 left untouched" in text
        # The history, in the log between the hosts' lines, in order.
        log = [x for x in run.query_one(LogPane).lines if "batch " in x]
        wanted = [
            "canary app1 (batch 1/4) deploying",
            "canary app1 (batch 1/4) healthy after",
            "batch 2/4: app2..app4 deploying",
            "batch 2/4: app2..app4 healthy after",
            "batch 3/4: app5..app7 deploying",
            "batch 3/4: app5..app7 FAILED: app6: HTTP 500",
        ]
        assert len(log) == len(wanted), log
        assert all(want in got for want, got in zip(wanted, log, strict=True)), log
        assert "stopped at batch 3/4 (app5, app6, app7)" in text
        assert fleet.host("app8").app.control()["version"] == "1.0.0"
        assert not (fleet.host("app8").workdir / "VERSION").exists()
