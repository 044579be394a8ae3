"""The logs screen: choosing a host and a log, pausing and resuming, fitting at 80x24.

The hosts' log commands are served by a scripted SSH pool (each command prints its lines,
then follows forever), so these run without servers; test_console_live follows real sshd.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest
from configs import config_data, write_config
from servers import SshServer
from ui_support import FixedServices, live_app, screen_text, wait_for

from console.app import ConsoleApp
from console.core.config import Config, HostConfig
from console.core.ssh import CommandExit, LineBatch
from console.screens.dashboard import DashboardScreen
from console.screens.help import key_rows
from console.screens.logs import LogsScreen, PickScreen
from console.widgets.log_pane import LogPane


class ScriptedPool:
    """Stands in for ``SshPool``: ``echo NAME`` commands print NAME-1.. then follow."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        """(host, command) of every stream started."""
        self.running = 0
        self.feed: dict[str, asyncio.Queue[str]] = {}
        """Per host: lines to print later (``add``)."""

    def add(self, host: str, text: str) -> None:
        self.feed.setdefault(host, asyncio.Queue()).put_nowait(text)

    async def connection(self, host: HostConfig) -> None:
        return None

    async def stream_batches(
        self,
        host: HostConfig,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncGenerator[LineBatch | CommandExit, None]:
        self.started.append((host.name, command))
        self.running += 1
        try:
            name = command.split()[-1]
            lines = tuple(f"{host.name} {name}-{i}" for i in range(1, 4))
            yield LineBatch(host.name, "stdout", lines, 0.0)
            feed = self.feed.setdefault(host.name, asyncio.Queue())
            while True:
                text = await feed.get()
                yield LineBatch(host.name, "stdout", (text,), 0.0)
        finally:
            self.running -= 1

    async def aclose(self) -> None:
        return None


def _config(tmp_path: Path, hosts: int = 3) -> Config:
    data = config_data(
        redis_url="redis://127.0.0.1:9/0",
        blue_url="http://127.0.0.1:9",
        green_url="http://127.0.0.1:9",
    )
    for colour in ("blue", "green"):
        data["env"][colour] = {
            "hosts": [
                {
                    "name": f"{colour}{i}",
                    "url": "http://127.0.0.1:9",
                    "ssh": "127.0.0.1",
                    "logs": {"access": "echo access", "app": "echo app"},
                }
                for i in range(1, hosts + 1)
            ]
        }
    return write_config(tmp_path / "bgconsole.toml", data)


def _app(tmp_path: Path, hosts: int = 3) -> tuple[ConsoleApp, ScriptedPool]:
    services = FixedServices.build(_config(tmp_path, hosts))
    pool = ScriptedPool()
    services.ssh = pool  # type: ignore[assignment]
    app = ConsoleApp(
        services, dashboard=lambda s: DashboardScreen(s, poll_interval=60, live_updates=False)
    )
    return app, pool


def _sources(pane: LogPane) -> set[str]:
    """``colour/host:log`` of every host line shown."""
    return {line.split(" | ", 1)[0] for line in pane.lines if " | " in line}


async def _open_logs(pilot: Any, app: ConsoleApp) -> tuple[LogsScreen, LogPane]:
    await pilot.press("l")
    await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen), what="logs screen")
    screen = app.screen
    assert isinstance(screen, LogsScreen)
    return screen, screen.query_one(LogPane)


async def _pick(pilot: Any, app: ConsoleApp, key: str, label: str) -> None:
    """Open a picker with ``key`` and choose the option shown as ``label``."""
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, PickScreen), what="picker")
    picker = app.screen
    assert isinstance(picker, PickScreen)
    labels = [text for _, text in picker.options]
    assert label in labels, labels
    # From the highlighted (current) choice, so go to the top first.
    await pilot.press("home")
    for _ in range(labels.index(label)):
        await pilot.press("down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, PickScreen), what="picker closed")


def _until(pane: LogPane, check: Callable[[set[str]], bool]) -> Callable[[], bool]:
    return lambda: check(_sources(pane))


async def test_choosing_a_host_shows_only_its_lines_and_one_stream_per_log(
    tmp_path: Path,
) -> None:
    app, pool = _app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        screen, pane = await _open_logs(pilot, app)
        every = {f"{c}{i}" for c in ("blue", "green") for i in (1, 2, 3)}
        await wait_for(
            pilot,
            _until(pane, lambda s: {x.split(":")[0].split("/")[1] for x in s} == every),
            what="lines of all six hosts",
        )
        await _pick(pilot, app, "h", "green/green2")
        assert screen.host == "green/green2"
        await wait_for(
            pilot,
            _until(pane, lambda s: s == {"green/green2:access", "green/green2:app"}),
            what="only green2's lines",
        )
        # The other hosts' streams were closed: only green2's two logs run.
        await wait_for(pilot, lambda: pool.running == 2, what="other streams closed")
        pool.add("green1", "not shown")
        pool.add("green2", "fresh from green2")
        await wait_for(pilot, lambda: "green/green2:access | fresh from green2" in pane.lines)
        assert not any("not shown" in line for line in pane.lines)
        title = screen_text(app)[0]
        assert title.startswith(" logs GREEN › green2 › all logs"), title

        # Another colour: the host no longer applies, every host of that colour is back.
        await pilot.press("b")
        await wait_for(
            pilot,
            _until(
                pane,
                lambda s: (
                    {x.split(":")[0] for x in s} == {"blue/blue1", "blue/blue2", "blue/blue3"}
                ),
            ),
            what="all blue hosts",
        )
        assert screen.host is None


async def test_choosing_a_log_follows_only_that_log(tmp_path: Path) -> None:
    app, pool = _app(tmp_path)
    async with app.run_test(size=(120, 35)) as pilot:
        screen, pane = await _open_logs(pilot, app)
        await _pick(pilot, app, "h", "blue/blue3")
        await wait_for(pilot, lambda: pool.running == 2, what="blue3's two logs")
        await _pick(pilot, app, "o", "app")
        assert screen.log_name == "app"
        await wait_for(
            pilot, _until(pane, lambda s: s == {"blue/blue3:app"}), what="only blue3's app log"
        )
        await wait_for(pilot, lambda: pool.running == 1, what="access stream closed")
        assert [line for line in pane.lines if " | " in line] == [
            f"blue/blue3:app | blue3 app-{i}" for i in (1, 2, 3)
        ]
        assert "blue3 › app" in screen_text(app)[0]
        # All logs again.
        await _pick(pilot, app, "o", "all logs")
        await wait_for(
            pilot,
            _until(pane, lambda s: s == {"blue/blue3:app", "blue/blue3:access"}),
            what="both logs",
        )


async def test_space_pauses_counts_new_lines_and_resumes(tmp_path: Path) -> None:
    app, pool = _app(tmp_path, hosts=1)
    async with app.run_test(size=(120, 35)) as pilot:
        screen, pane = await _open_logs(pilot, app)
        await _pick(pilot, app, "h", "blue/blue1")
        await _pick(pilot, app, "o", "app")
        await wait_for(pilot, lambda: len(_sources(pane)) == 1 and len(pane.lines) >= 3)
        before = list(pane.lines)
        await pilot.press("space")
        assert not pane.tail
        for i in range(5):
            pool.add("blue1", f"while paused {i}")
        await wait_for(pilot, lambda: pane.pending == 5, what="5 lines counted")
        # The view holds still; the status line says how many wait.
        assert pane.lines == before
        assert any("PAUSED, 5 new lines" in row for row in screen_text(app))
        await pilot.press("space")
        await wait_for(pilot, lambda: pane.tail and pane.pending == 0, what="resumed")
        assert pane.lines[-5:] == [f"blue/blue1:app | while paused {i}" for i in range(5)]
        # Scrolling up pauses too; End resumes and shows what came meanwhile.
        for i in range(60):
            pool.add("blue1", f"filler {i}")
        await wait_for(pilot, lambda: pane.lines[-1].endswith("filler 59"), what="filler")
        await pilot.pause(0.1)
        await pilot.press("k", "k", "k")
        await wait_for(pilot, lambda: not pane.tail, what="scrolling up pauses")
        pool.add("blue1", "after scrolling up")
        await wait_for(pilot, lambda: pane.pending == 1, what="counted")
        assert not pane.lines[-1].endswith("after scrolling up")
        await pilot.press("end")
        await wait_for(pilot, lambda: pane.tail, what="End resumes")
        assert pane.lines[-1] == "blue/blue1:app | after scrolling up"
        log = pane.log_view
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y, what="at the end")
        assert screen.is_current


async def test_chooser_and_keys_fit_at_80x24(tmp_path: Path) -> None:
    app, _pool = _app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, pane = await _open_logs(pilot, app)
        await wait_for(pilot, lambda: len(pane.lines) > 3, what="lines")
        await pilot.pause(0.2)
        rows = screen_text(app)
        assert rows[0].startswith(" logs BLUE+GREEN › all hosts › all logs"), rows[0]
        footer = rows[-1]
        for key in ("space Pause", "c Colour", "h Host", "o Log", "? Help", "esc Back"):
            assert key in footer, footer
        assert rows[-2].strip().startswith("following"), rows[-2]
        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, PickScreen), what="picker")
        await pilot.pause(0.2)
        rows = screen_text(app)
        shown = "\n".join(rows)
        # Every choice is on screen, and nothing is wider than the terminal.
        for label in ["all 6 hosts"] + [
            f"{c}/{c}{i}" for c in ("blue", "green") for i in (1, 2, 3)
        ]:
            assert label in shown, shown
        assert all(len(row) <= 80 for row in rows)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="picker closed")
        assert screen.host is None


async def test_help_lists_the_logs_keys(tmp_path: Path) -> None:
    app, _pool = _app(tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        await _open_logs(pilot, app)
        rows = dict(key_rows(app.screen))
        assert rows["h"].startswith("Pick one host"), rows
        assert rows["o"].startswith("Pick which log"), rows
        assert rows["c"].startswith("Follow the next colour"), rows
        assert rows["space"].startswith("Pause following"), rows
        assert any(k.startswith("end") for k in rows), rows


@pytest.mark.integration
async def test_choosing_a_host_and_a_log_over_real_ssh(
    tmp_path: Path, ssh_server: SshServer
) -> None:
    """Two hosts (one sshd, each its own files): h and o narrow what is followed."""
    files = {}
    for host in ("app1", "app2"):
        for log in ("access", "app"):
            path = tmp_path / f"{host}-{log}.log"
            path.write_text("".join(f"{host} {log} old {i}\n" for i in range(3)))
            files[host, log] = path
    data = config_data(
        redis_url="redis://127.0.0.1:1/0",
        blue_url="http://127.0.0.1:1",
        green_url="http://127.0.0.1:2",
        ssh={"known_hosts": str(ssh_server.known_hosts_path), "connect_timeout": 3.0},
        control={"redis": "redis://127.0.0.1:1/0", "timeout": 0.5},
    )
    data["env"]["blue"] = {
        "hosts": [
            {
                "name": host,
                "url": "http://127.0.0.1:1",
                "ssh": ssh_server.target,
                "identity": str(ssh_server.client_key_path),
                "logs": {log: f"tail -F {files[host, log]}" for log in ("access", "app")},
            }
            for host in ("app1", "app2")
        ]
    }
    app = live_app(write_config(tmp_path / "bgconsole.toml", data), poll_interval=5)
    async with app.run_test(size=(120, 35)) as pilot:
        screen, pane = await _open_logs(pilot, app)
        await pilot.press("b")
        want = {f"blue/{h}:{log}" for h in ("app1", "app2") for log in ("access", "app")}
        await wait_for(pilot, _until(pane, lambda s: s == want), 15, "all four logs")
        await _pick(pilot, app, "h", "blue/app2")
        await wait_for(
            pilot,
            _until(pane, lambda s: s == {"blue/app2:access", "blue/app2:app"}),
            15,
            "app2's logs only",
        )
        for (host, log), path in files.items():
            with path.open("a") as f:
                f.write(f"{host} {log} new\n")
        await wait_for(pilot, lambda: "blue/app2:app | app2 app new" in pane.lines, 15, "new")
        await wait_for(pilot, lambda: "blue/app2:access | app2 access new" in pane.lines, 15)
        assert not any(line.startswith("blue/app1") for line in pane.lines)
        await _pick(pilot, app, "o", "access")
        await wait_for(
            pilot, _until(pane, lambda s: s == {"blue/app2:access"}), 15, "app2's access log"
        )
        with files["app2", "app"].open("a") as f:
            f.write("app2 app after the choice\n")
        with files["app2", "access"].open("a") as f:
            f.write("app2 access after the choice\n")
        await wait_for(
            pilot, lambda: pane.lines[-1] == "blue/app2:access | app2 access after the choice", 15
        )
        assert not any("app2 app after" in line for line in pane.lines)
        assert screen.host == "blue/app2"
        assert screen.log_name == "access"


async def test_twenty_hosts_pick_the_last_at_80x24(tmp_path: Path) -> None:
    """A fleet's list scrolls inside the dialog; the last host can be picked."""
    app, pool = _app(tmp_path, hosts=10)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, pane = await _open_logs(pilot, app)
        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, PickScreen), what="picker")
        await pilot.pause(0.2)
        shown = "\n".join(screen_text(app))
        assert "all 20 hosts" in shown, shown
        assert "│ green/green10 " not in shown  # below the fold: the list scrolls
        await pilot.press("end")
        await pilot.pause(0.2)
        shown = "\n".join(screen_text(app))
        assert "│ green/green10 " in shown, shown
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.host == "green/green10", what="last host picked")
        await wait_for(
            pilot,
            _until(pane, lambda s: s == {"green/green10:access", "green/green10:app"}),
            what="green10's lines",
        )
        await wait_for(pilot, lambda: pool.running == 2, what="one host's streams")
