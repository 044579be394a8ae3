"""``bgconsole logs`` run as a user would (subprocess), against a real sshd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import bgconsole
from configs import config_data, write_config
from procscan import processes_with
from servers import SshServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def write_logs_config(
    path: Path, server: SshServer, logs: dict[str, dict[str, str]], **ssh: Any
) -> Path:
    """blue: one host per entry of ``logs`` (name -> its log commands), all on ``server``."""
    hosts = [
        {
            "name": name,
            "url": "http://127.0.0.1:1",
            "ssh": server.target,
            "identity": str(server.client_key_path),
            "logs": host_logs,
        }
        for name, host_logs in logs.items()
    ]
    data = config_data(
        redis_url="redis://127.0.0.1:1/0",
        blue_url="http://127.0.0.1:1",
        green_url="http://127.0.0.1:2",
        ssh={"known_hosts": str(server.known_hosts_path), "connect_timeout": 3.0, **ssh},
    )
    data["env"]["blue"] = {"hosts": hosts}
    write_config(path, data)
    return path


@pytest.fixture
def app_logs(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("app1", "app2"):
        files[name] = tmp_path / f"{name}.log"
        files[name].write_text("".join(f"{name} line {i}\n" for i in range(20)))
    return files


def test_last_lines_of_every_host(
    tmp_path: Path, ssh_server: SshServer, app_logs: dict[str, Path]
) -> None:
    config = write_logs_config(
        tmp_path / "bg.toml",
        ssh_server,
        {name: {"app": f"tail -F {path}"} for name, path in app_logs.items()},
    )
    result = bgconsole("logs", "blue", "-c", str(config), "-n", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "blue/app1 | app1 line 18",
        "blue/app1 | app1 line 19",
        "blue/app2 | app2 line 18",
        "blue/app2 | app2 line 19",
    ]


def test_grep_host_and_json(
    tmp_path: Path, ssh_server: SshServer, app_logs: dict[str, Path]
) -> None:
    config = write_logs_config(
        tmp_path / "bg.toml",
        ssh_server,
        {name: {"app": f"tail -F {path}"} for name, path in app_logs.items()},
    )
    result = bgconsole(
        "logs", "blue", "app", "-c", str(config), "-n", "5", "--grep", "1[78]$", "--host", "app2",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["host"], line["log"], line["text"]) for line in lines] == [
        ("app2", "app", "app2 line 17"),
        ("app2", "app", "app2 line 18"),
    ]
    assert all(line["colour"] == "blue" and not line["marker"] for line in lines)


def test_usage_errors_exit_2_without_traceback(
    tmp_path: Path, ssh_server: SshServer, app_logs: dict[str, Path]
) -> None:
    config = write_logs_config(
        tmp_path / "bg.toml", ssh_server, {"app1": {"app": f"tail -F {app_logs['app1']}"}}
    )
    bad_regex = bgconsole("logs", "blue", "-c", str(config), "--grep", "(")
    assert bad_regex.returncode == 2
    assert bad_regex.stderr.startswith("bgconsole: --grep: not a valid regular expression")
    unknown_log = bgconsole("logs", "blue", "nginx", "-c", str(config))
    assert unknown_log.returncode == 2
    assert "no log named 'nginx'; configured: app" in unknown_log.stderr
    no_logs = bgconsole("logs", "green", "-c", str(config))
    assert no_logs.returncode == 2
    assert "env.green.logs" in no_logs.stderr
    for result in (bad_regex, unknown_log, no_logs):
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_host_key_fails_with_the_fix(
    tmp_path: Path, ssh_server: SshServer, app_logs: dict[str, Path]
) -> None:
    config = write_logs_config(
        tmp_path / "bg.toml",
        ssh_server,
        {"app1": {"app": f"tail -F {app_logs['app1']}"}},
        known_hosts=str(tmp_path / "empty_known_hosts"),
    )
    result = bgconsole("logs", "blue", "-c", str(config))
    assert result.returncode == 1
    assert "host key not in" in result.stdout
    assert f"ssh-keyscan -p {ssh_server.port} 127.0.0.1" in result.stdout
    assert "Traceback" not in result.stderr


def test_follow_then_ctrl_c_exits_130_and_stops_the_tail(
    tmp_path: Path, ssh_server: SshServer, app_logs: dict[str, Path]
) -> None:
    log = app_logs["app1"]
    config = write_logs_config(
        tmp_path / "bg.toml", ssh_server, {"app1": {"app": f"tail -F {log}"}}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "logs", "blue", "-f", "-n", "1", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "blue/app1 | app1 line 19\n"
        with log.open("a") as f:
            f.write("fresh\n")
        assert proc.stdout.readline() == "blue/app1 | fresh\n"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _tails(ssh_server, str(log)):
        time.sleep(0.05)
    assert not _tails(ssh_server, str(log))


def _tails(server: SshServer, needle: str) -> list[int]:
    """Processes anywhere on the machine carrying ``needle`` (orphans included)."""
    del server  # every test host is this machine
    return processes_with(needle)


def test_logs_is_listed_in_help() -> None:
    result = bgconsole("--help")
    assert result.returncode == 0
    assert "logs" in result.stdout
    assert os.path.exists(ROOT / "console" / "cli" / "logs.py")
