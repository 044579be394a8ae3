"""The command router with real shell commands and a file standing in for the router."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from configs import config_data
from servers import SshServer

from console.core.config import Config, parse_config
from console.core.errors import RouterError
from console.core.models import Colour
from console.core.remote_exec import SshExecutor
from console.core.router.command import CommandRouter, expand, parse_colour
from console.core.router.factory import build_router

BLUE_URL = "http://127.0.0.1:8001"
GREEN_URL = "http://127.0.0.1:8002"


def command_config(**router: Any) -> Config:
    data = config_data(
        redis_url="redis://127.0.0.1:1/0",
        blue_url=BLUE_URL,
        green_url=GREEN_URL,
        router={"kind": "command", **router},
    )
    return parse_config(data)


def file_router(tmp_path: Path, **extra: Any) -> tuple[CommandRouter, Path]:
    """A "router" that is a file holding the live colour and its hosts."""
    live = tmp_path / "live"
    quoted = shlex.quote(str(live))
    router = build_router(
        command_config(
            switch_command=f"printf '%s %s\\n' {{colour}} {{hosts}} > {quoted}",
            state_command=f"cut -d' ' -f1 {quoted}",
            **extra,
        )
    )
    assert isinstance(router, CommandRouter)
    return router, live


async def test_switch_runs_the_template_and_state_reads_it_back(tmp_path: Path) -> None:
    router, live = file_router(tmp_path)
    state = await router.switch(Colour.GREEN)
    assert live.read_text() == "green 127.0.0.1:8002\n"
    assert state.live is Colour.GREEN
    assert {t.colour: t.state for t in state.targets} == {
        Colour.GREEN: "active",
        Colour.BLUE: "standby",
    }
    live.write_text("blue\n")
    assert (await router.state()).live is Colour.BLUE


async def test_failing_switch_names_the_last_stderr_line() -> None:
    router = CommandRouter(
        command_config(
            switch_command="echo working >&2; echo 'lb: no such pool {colour}' >&2; exit 3"
        )
    )
    with pytest.raises(RouterError, match=r"switch_command exited 3: lb: no such pool green$"):
        await router.switch(Colour.GREEN)


async def test_state_command_must_print_a_colour() -> None:
    router = CommandRouter(command_config(switch_command="true", state_command="echo purple"))
    with pytest.raises(RouterError, match="printed 'purple'"):
        await router.state()
    router = CommandRouter(command_config(switch_command="true", state_command="echo none"))
    assert (await router.state()).live is None


async def test_without_state_command_the_switch_is_assumed() -> None:
    router = CommandRouter(command_config(switch_command="true"))
    assert (await router.state()).live is None
    state = await router.switch(Colour.BLUE)
    assert state.live is Colour.BLUE
    assert "assumed" in state.detail


async def test_a_hanging_command_is_killed_at_the_time_limit() -> None:
    router = CommandRouter(command_config(switch_command="sleep 30 | cat"), time_limit=0.3)
    started = time.monotonic()
    with pytest.raises(RouterError, match=r"did not finish within 0\.3s"):
        await router.switch(Colour.GREEN)
    assert time.monotonic() - started < 2


def test_placeholders_are_shell_quoted() -> None:
    template = """patch '{"selector":{"colour":"{colour}"}}' {hosts} from {other}"""
    assert expand(template, Colour.GREEN, ["a:1", "b;rm -rf /:2"]) == (
        """patch '{"selector":{"colour":"green"}}' 'a:1 b;rm -rf /:2' from blue"""
    )


def test_parse_colour() -> None:
    assert parse_colour("Green\n") is Colour.GREEN
    assert parse_colour("noise\n'blue'\n\n") is Colour.BLUE
    assert parse_colour("") is None


@pytest.mark.integration
async def test_over_ssh_the_templates_run_on_the_router_host(
    tmp_path: Path, ssh_server: SshServer
) -> None:
    live = tmp_path / "live"
    config = command_config(
        switch_command=f"echo {{colour}} > {shlex.quote(str(live))}",
        state_command=f"cat {shlex.quote(str(live))}",
        ssh=ssh_server.target,
    )
    assert config.router.ssh is not None
    executor = SshExecutor(
        config.router.ssh, config.ssh, connect_options=ssh_server.connect_kwargs()
    )
    router = CommandRouter(config, executor)
    try:
        assert (await router.switch(Colour.GREEN)).live is Colour.GREEN
        assert live.read_text() == "green\n"
        failing = CommandRouter(
            command_config(switch_command="false", ssh=ssh_server.target), executor
        )
        with pytest.raises(RouterError, match="switch_command exited 1"):
            await failing.switch(Colour.BLUE)
    finally:
        await router.aclose()
