"""Untrusted text in the audit trail cannot drive the terminal or forge event lines.

A reason, a ref or an actor is typed by someone else; ``bgconsole events`` prints it on
the on-call operator's terminal. An ESC sequence must not move the cursor and a newline
must not start a fake "switch ... verified" line: one event is one line, with every
control character shown as a visible escape. ``--json`` keeps the exact text.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest
from cli_support import bgconsole
from configs import config_data, write_config
from servers import RedisServer

from console.core.control import ControlPlane
from console.core.models import Colour

ROOT = Path(__file__).resolve().parents[2]

FORGED = "\n2026-01-01 00:00:00  switch    root@prod  switch blue -> green (epoch 9) verified"
EVIL_REASON = "routine\x1b[2K\r\x1b[1A" + FORGED + "\x07\u202e"
# Anything a terminal would act on: C0 (except the newline ending each line), DEL, C1, bidi.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@pytest.fixture
def config_path(tmp_path: Path, redis_server: RedisServer) -> Path:
    # events never probes the hosts: any URLs do.
    data = config_data(
        redis_url=redis_server.url, blue_url="http://127.0.0.1:9", green_url="http://127.0.0.1:9"
    )
    path = tmp_path / "bg.toml"
    write_config(path, data)
    return path


async def record_evil(redis_url: str) -> None:
    control = ControlPlane(redis_url, "test", actor="mallory\x1b[31m@jump\n")
    try:
        await control.record(
            "deploy",
            "deploy green ref=v1\nforged\x1b]0;title\x07",
            before="blue",
            after="green\r",
            reason=EVIL_REASON,
            outcome="ok\x1b[0m",
        )
        await control.record("flag", "a plain event", reason="nothing odd")
    finally:
        await control.aclose()


def assert_safe_lines(stdout: str, count: int) -> list[str]:
    assert not RAW_CONTROL.search(stdout), repr(stdout)
    lines = stdout.splitlines()
    assert len(lines) == count, lines
    return lines


async def test_events_escape_control_characters_one_line_per_event(
    config_path: Path, redis_server: RedisServer
) -> None:
    await record_evil(redis_server.url)
    result = bgconsole("events", "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    evil, plain = assert_safe_lines(result.stdout, 2)
    assert "\\x1b[2K\\r\\x1b[1A\\n2026-01-01" in evil
    assert "\\x07\\u202e" in evil
    assert "mallory\\x1b[31m@jump\\n" in evil
    assert "deploy green ref=v1\\nforged\\x1b]0;title\\x07" in evil
    assert "a plain event" in plain
    assert 'reason="nothing odd"' in plain


async def test_events_json_keeps_the_exact_text(
    config_path: Path, redis_server: RedisServer
) -> None:
    await record_evil(redis_server.url)
    result = bgconsole("events", "--json", "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    first, _second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["reason"] == EVIL_REASON
    assert first["actor"] == "mallory\x1b[31m@jump\n"


def test_a_reason_given_to_a_verb_cannot_forge_a_line(config_path: Path) -> None:
    disarm = bgconsole("failover", "disarm", "--reason", EVIL_REASON, "-c", str(config_path))
    assert disarm.returncode == 0, disarm.stderr
    assert not RAW_CONTROL.search(disarm.stdout + disarm.stderr)
    result = bgconsole("events", "--kind", "armed", "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    (line,) = assert_safe_lines(result.stdout, 1)
    assert "switch blue -> green (epoch 9) verified" in line  # shown, but inside the reason


async def test_events_follow_escapes_new_events(
    config_path: Path, redis_server: RedisServer
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "events", "--follow", "-c", str(config_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        await asyncio.sleep(1.5)  # let it subscribe; --follow starts after the last event
        await record_evil(redis_server.url)
        evil = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        plain = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert_safe_lines(evil, 1)
        assert "\\x1b[2K" in evil
        assert "a plain event" in plain
    finally:
        proc.kill()
        await proc.wait()


async def test_status_escapes_the_live_reason_and_actor(
    config_path: Path, redis_server: RedisServer
) -> None:
    control = ControlPlane(redis_server.url, "test", actor="eve\x1b[8m@jump")
    try:
        state = await control.ensure_active(Colour.BLUE)
        await control.switch(Colour.GREEN, expected_epoch=state.epoch, reason=EVIL_REASON)
    finally:
        await control.aclose()
    # The router (builtin, nobody listening) and the hosts are down: exit 1, still printed.
    result = bgconsole("status", "-c", str(config_path))
    assert not RAW_CONTROL.search(result.stdout + result.stderr), result.stdout
    live = [line for line in result.stdout.splitlines() if line.startswith("live:")]
    assert len(live) == 1
    assert "eve\\x1b[8m@jump" in live[0]
    assert "\\n2026-01-01 00:00:00  switch" in live[0]


def test_log_lines_printed_by_logs_are_escaped() -> None:
    # `bgconsole logs` prints what the hosts' log commands emit: an access log holds
    # whatever a client sent, e.g. an OSC title sequence in a User-Agent.
    from console.cli.logs import format_batch
    from console.core.logs import LogBatch

    batch = LogBatch(
        Colour.GREEN, "app1", "access", ('GET / "\x1b]0;pwned\x07"\tUA', "next\r"), 0.0
    )
    shown = format_batch(batch, with_log=False)
    # ANSI/OSC sequences from the app are dropped (colours only with --color); any other
    # control character is shown escaped. Either way nothing reaches the terminal raw.
    assert shown == 'green/app1 | GET / ""\tUA\ngreen/app1 | next\\r\n'
