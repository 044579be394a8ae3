"""The tour's text and the sandbox's helpers that need no running sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.demo.processes import python_env
from console.demo.tour import TOUR_STEPS, SandboxInfo, cli_command, tour


def _info(command: str) -> SandboxInfo:
    directory = Path("/tmp/bgconsole-demo-x")
    return SandboxInfo(
        directory, directory / "bgconsole.toml", None, {}, {}, {}, None, False, command=command
    )


def test_printed_tour_gives_the_prefix_once_then_every_step_in_order() -> None:
    text = tour(_info("bgconsole"))
    assert "c='bgconsole -c /tmp/bgconsole-demo-x/bgconsole.toml'" in text
    assert "t shows this tour" in text
    positions = [text.index(step.command.format(c="$c")) for step in TOUR_STEPS]
    assert positions == sorted(positions)


def test_cli_command_is_the_full_path_when_path_does_not_find_this_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Path(sys.executable).parent / "bgconsole"
    if not script.exists():
        pytest.skip("bgconsole is not installed next to this interpreter")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert cli_command() == str(script)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}/usr/bin")
    assert cli_command() == "bgconsole"


def test_agent_waiting_for_its_go_line_exits_when_the_sandbox_goes_away() -> None:
    # The sandbox closes the agent's stdin without a go line when its start failed: the
    # agent must not run `serve` on a half-built sandbox, and must not linger.
    result = subprocess.run(
        [sys.executable, "-m", "console.demo.agent_runner", "serve", "-c", "/nonexistent.toml"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env=python_env(),
        check=False,
    )
    assert result.returncode == 0
    assert result.stderr == ""
