"""``bgconsole doctor`` and ``check`` from the command line: lines, exit codes, --json."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import redis
import tomli_w
from cli_support import bgconsole
from doctor_support import setup_data
from servers import HttpBackendFactory, RedisServer, SshServer


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path


def test_the_untouched_init_starter_fails_doctor_and_check_says_it_is_static(
    tmp_path: Path,
) -> None:
    starter = tmp_path / "bgconsole.toml"
    assert bgconsole("init", str(starter)).returncode == 0
    check = bgconsole("check", "-c", str(starter))
    assert check.returncode == 0
    assert "nothing was contacted" in check.stdout
    assert f"bgconsole doctor -c {starter}" in check.stdout
    # Tests stay on 127.0.0.1: the starter's addresses become closed loopback ports, while
    # its other example values (name, workdir, deploy step) stay to be flagged.
    text = starter.read_text()
    for n in (1, 2):
        text = text.replace(f"deploy@10.0.0.{n}", f"deploy@127.0.0.{n}:9")
        text = text.replace(f"10.0.0.{n}:", f"127.0.0.{n}:")
    text = text.replace(":3000", ":9").replace(":6379", ":9")
    assert "10.0.0." not in text
    starter.write_text(text)
    doctor = bgconsole("doctor", "-c", str(starter))
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert lines[0] == f"doctor: {starter}"
    assert any(
        line.startswith("warn  config   env.blue.workdir: '/srv/myapp' is the init starter")
        for line in lines
    )
    assert any(line.startswith("FAIL  control  control plane:") for line in lines)
    assert all(" -> fix: " in line for line in lines if line.startswith(("FAIL", "warn")))
    assert "failure" in lines[-1]
    assert doctor.stderr == ""
    # check --connect is the same checklist.
    assert bgconsole("check", "--connect", "-c", str(starter)).returncode == 1


def test_doctor_json_strict_and_a_bad_config(
    tmp_path: Path,
    redis_pair: tuple[RedisServer, RedisServer],
    ssh_server: SshServer,
    http_backend_factory: HttpBackendFactory,
) -> None:
    control, flags = redis_pair
    workdir = tmp_path / "app"
    workdir.mkdir()
    (workdir / "app.log").write_text("x\n")
    redis.Redis.from_url(flags.url).set("flag:uploads", "OFF")
    data = setup_data(
        control,
        flags,
        ssh_server,
        http_backend_factory("blue", "1.0.0"),
        http_backend_factory("green", "1.0.0"),
        workdir,
    )
    data["router"] = {"kind": "command", "switch_command": "true", "state_command": "echo green"}
    path = _write(tmp_path / "c.toml", data)
    result = bgconsole("doctor", "--json", "-c", str(path))
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True
    statuses = {(c["area"], c["subject"]): c["status"] for c in report["checks"]}
    assert statuses[("ssh", "green")] == "ok"
    assert statuses[("control", "persistence")] == "warn"  # the fixture Redis keeps nothing
    # Warnings alone pass; --strict makes them fail (for CI).
    assert bgconsole("doctor", "--strict", "-c", str(path)).returncode == 1

    bad = _write(tmp_path / "bad.toml", {**data, "failover": {"timeot": 1}})
    broken = bgconsole("doctor", "-c", str(bad))
    assert broken.returncode == 2
    assert len(broken.stderr.strip().splitlines()) == 1
    assert "failover.timeot: unknown key" in broken.stderr


def test_init_detect_on_a_third_party_app_and_on_an_app_with_health_and_version(
    tmp_path: Path, http_backend_factory: HttpBackendFactory
) -> None:
    from doctor_support import third_party_app

    with third_party_app(tmp_path) as (url, _log):
        target = tmp_path / "third.toml"
        result = bgconsole("init", str(target), "--detect", url)
        assert result.returncode == 0, result.stderr
        assert "detected health: none of /health, /healthz, /status, /ping answers 200" in (
            result.stdout
        )
        data = tomllib.loads(target.read_text())
    blue = data["env"]["blue"]
    assert (blue["url"], blue["health_path"]) == (url, "/")
    assert "version" not in blue
    assert "# Detected at " + url in target.read_text()
    assert "#   version: none found" in target.read_text()

    backend = http_backend_factory("blue", "2.3.4")
    target = tmp_path / "friendly.toml"
    result = bgconsole("init", str(target), "--detect", backend.url)
    assert result.returncode == 0, result.stderr
    blue = tomllib.loads(target.read_text())["env"]["blue"]
    # /health answers, and X-Version is on every answer: a header works for any path.
    assert (blue["health_path"], blue["version"]) == ("/health", "header:X-Version")

    refused = bgconsole("init", str(target), "--detect", backend.url)
    assert refused.returncode == 2
    assert "already exists" in refused.stderr
    nothing = bgconsole("init", str(tmp_path / "x.toml"), "--detect", "http://127.0.0.1:9")
    assert nothing.returncode == 1
    assert len(nothing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.toml").exists()
    bad = bgconsole("init", str(tmp_path / "y.toml"), "--detect", "ftp://example")
    assert bad.returncode == 2
