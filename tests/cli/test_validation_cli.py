"""Bad numbers on the command line or in the config: exit 2, one line naming what is wrong.

Never a traceback, never "internal error", never blamed on the control plane: the
operator typed something wrong and must be told what, in one line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import tomli_w
from cli_support import bgconsole
from configs import config_data


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    # Nothing listens on these: every case must be refused before anything connects.
    data = config_data(
        redis_url="redis://127.0.0.1:9/0",
        blue_url="http://127.0.0.1:9",
        green_url="http://127.0.0.1:9",
    )
    path = tmp_path / "bg.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert "control plane" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


BAD_ARGUMENTS = [
    (["events", "-n", "99999999999999999999999"], ["-n/--limit", "from 1 to 1000000"]),
    (["events", "-n", "abc"], ["-n/--limit", "whole number", "'abc'"]),
    (["events", "-n", "0"], ["-n/--limit", "from 1 to"]),
    (["serve", "--listen", "abc"], ["--listen", "expected HOST:PORT, got 'abc'"]),
    (["serve", "--listen", "127.0.0.1:99999"], ["--listen", "port 99999 out of range"]),
    (["serve", "--grace", "nan"], ["--grace", "finite"]),
    (["serve", "--grace", "inf"], ["--grace", "finite"]),
    (["serve", "--grace", "-1"], ["--grace", "from 0 to"]),
    (["migrate", "--from", "blue", "--to", "green", "--interval", "nan"], ["--interval"]),
    (["migrate", "--from", "blue", "--to", "green", "--interval", "0"], ["--interval"]),
    (["migrate", "--from", "blue", "--to", "green", "--throttle", "1e400"], ["--throttle"]),
    (["logs", "blue", "-n", "1e3"], ["-n/--lines", "whole number"]),
    (["logs", "blue", "-n", "-1"], ["-n/--lines", "from 0 to"]),
    (["deploy", "green", "--parallel", "0"], ["--parallel", "from 1 to"]),
    (["deploy", "green", "--parallel", "99999999999999999999"], ["--parallel"]),
    (["events", "--no-such-option"], ["unrecognized arguments"]),
    (["nosuchverb"], ["invalid choice"]),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_ARGUMENTS, ids=lambda v: " ".join(v))
def test_bad_arguments_are_one_line_exit_2(
    config_path: Path, argv: list[str], needles: list[str]
) -> None:
    assert_usage_error(bgconsole(*argv, "-c", str(config_path)), *needles)


BAD_CONFIG = [
    ("failover", {"timeout": float("inf")}, "failover.timeout: must be a finite number"),
    ("failover", {"interval": float("nan")}, "failover.interval: must be a finite number"),
    ("failover", {"interval": 1e308}, "failover.interval: must be at most"),
    ("failover", {"fall": 10**20}, "failover.fall: must be at most"),
    ("router", {"listen": "127.0.0.1:99999"}, "router.listen: port 99999 out of range"),
    (
        "agent",
        {"heartbeat_interval": 1.0, "leader_lease": 1.5},
        "agent.leader_lease: must be at least 2 x agent.heartbeat_interval",
    ),
]


@pytest.mark.parametrize(("section", "values", "message"), BAD_CONFIG)
@pytest.mark.parametrize("verb", ["check", "serve", "events"])
def test_bad_numbers_in_the_config_are_one_line_exit_2(
    tmp_path: Path, verb: str, section: str, values: dict[str, object], message: str
) -> None:
    data = config_data(
        redis_url="redis://127.0.0.1:9/0",
        blue_url="http://127.0.0.1:9",
        green_url="http://127.0.0.1:9",
        **{section: values},
    )
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data))
    assert_usage_error(bgconsole(verb, "-c", str(path)), f"bad.toml: {message}")
