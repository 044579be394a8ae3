"""``bgconsole logs`` on a third-party app's access log: the agent's probes hidden, colours
stripped. Real sshd, and a real app process writing its own log (ANSI colours and all)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cli_support import bgconsole
from configs import config_data, write_config
from doctor_support import third_party_app
from servers import SshServer

from console.core.config import parse_config
from console.core.health import PROBE_USER_AGENT, HealthChecker

pytestmark = pytest.mark.integration


async def test_probe_lines_hidden_unless_all_and_ansi_stripped_unless_color(
    tmp_path: Path, ssh_server: SshServer
) -> None:
    with third_party_app(tmp_path) as (url, log):
        data = config_data(
            redis_url="redis://127.0.0.1:1/0",
            blue_url=url,
            green_url="http://127.0.0.1:2",
            ssh={"known_hosts": str(ssh_server.known_hosts_path), "connect_timeout": 3.0},
        )
        data["env"]["blue"] = {
            "url": url,
            "health_path": "/",
            "ssh": ssh_server.target,
            "identity": str(ssh_server.client_key_path),
            "logs": {"access": f"tail -F {log}"},
        }
        path = tmp_path / "bg.toml"
        config = write_config(path, data)
        # The agent's probes (the product's HealthChecker), then two users.
        checker = HealthChecker(parse_config(data), hysteresis=False)
        try:
            for _ in range(6):
                await checker.check_all()
        finally:
            await checker.aclose()
        async with httpx.AsyncClient(headers={"User-Agent": "curl/8.0"}) as client:
            await client.get(url + "/")
            await client.get(url + "/about")
    assert config.path == path
    text = log.read_text()
    assert text.count(PROBE_USER_AGENT) == 6
    assert "\x1b[32m" in text

    shown = bgconsole("logs", "blue", "-n", "10", "-c", str(path))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        'blue/blue | GET / "curl/8.0"',
        'blue/blue | GET /about "curl/8.0"',
    ]
    every = bgconsole("logs", "blue", "-n", "10", "--all", "-c", str(path))
    assert every.stdout.count("bgconsole-probe/") == 6
    assert "\x1b" not in every.stdout
    assert "\\x1b" not in every.stdout  # stripped, not shown as escapes
    coloured = bgconsole("logs", "blue", "-n", "10", "--color", "-c", str(path))
    assert coloured.stdout.splitlines()[0] == 'blue/blue | \x1b[32mGET\x1b[0m / "curl/8.0"'


def test_terminal_text_strips_every_escape_and_keeps_only_colours_with_color() -> None:
    from console.cli.logs import terminal_text

    line = "\x1b[31mERR\x1b[0m \x1b[2J\x1b]0;title\x07done\tok\x07"
    assert terminal_text(line, False) == "ERR done\tok\\x07"
    # Colours pass; the screen clear and the title change are shown escaped, not obeyed.
    assert terminal_text(line, True) == (
        "\x1b[31mERR\x1b[0m \\x1b[2J\\x1b]0;title\\x07done\tok\\x07"
    )
