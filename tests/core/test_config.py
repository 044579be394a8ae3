"""Config validation: every malformed config names the key path that is wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from console.core.config import find_config, load_config, parse_config, parse_ssh_target
from console.core.errors import ConfigError
from console.core.models import Colour

ROOT = Path(__file__).resolve().parents[2]

MINIMAL: dict[str, Any] = {
    "console": {"name": "shop"},
    "control": {"redis": "redis://127.0.0.1:6379/0"},
    "router": {"kind": "builtin", "listen": "127.0.0.1:8080"},
    "env": {
        "blue": {"url": "http://127.0.0.1:3001"},
        "green": {"url": "http://127.0.0.1:3002"},
    },
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with one dotted key set (or deleted when value is ...)."""
    data = copy.deepcopy(MINIMAL)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_sample_toml_is_valid() -> None:
    config = load_config(ROOT / "sample.toml")
    assert config.console.name == "shop"
    assert config.router.kind == "builtin"
    assert [h.name for h in config.env(Colour.BLUE).hosts] == ["blue"]
    assert config.env(Colour.GREEN).hosts[0].logs["access"].startswith("tail -F")
    assert config.flags["maintenance"].kill_switch is True
    assert config.flags["uploads"].key == "flag:uploads"


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.failover.fall == 2
    assert config.failover.interval == 0.5
    assert config.ssh.host_key_policy == "strict"
    host = config.env(Colour.BLUE).hosts[0]
    assert host.health_url == "http://127.0.0.1:3001/health"
    assert config.router.front_door == "http://127.0.0.1:8080"


def test_fleet_hosts_inherit_environment_keys() -> None:
    data = copy.deepcopy(MINIMAL)
    data["env"]["green"] = {
        "health_path": "/healthz",
        "ssh": "deploy@10.0.0.9",
        "hosts": [
            {"name": "app1", "url": "http://10.0.0.1:3000"},
            {"name": "app2", "url": "http://10.0.0.2:3000", "health_path": "/up"},
        ],
    }
    config = parse_config(data)
    app1, app2 = config.env(Colour.GREEN).hosts
    assert app1.health_path == "/healthz"
    assert app2.health_path == "/up"
    assert app1.ssh is not None
    assert app1.ssh.user == "deploy"


MALFORMED = [
    (with_change("console", ...), "console: missing (required)"),
    (with_change("console.name", ...), "console.name: missing (required)"),
    (with_change("console.name", "has space"), "console.name:"),
    (with_change("console.nmae", "x"), "console.nmae: unknown key (did you mean 'name'?)"),
    (with_change("control.redis", "http://x"), "control.redis: not a redis://"),
    (with_change("control.timeout", "2"), "control.timeout: expected a number of seconds"),
    (with_change("router.kind", "haproxi"), "router.kind: unknown router kind 'haproxi' (did"),
    (with_change("router.kind", "haproxy"), "router.socket: missing (required when kind"),
    (with_change("router.listen", "8080"), "router.listen: expected HOST:PORT"),
    (with_change("failover.fall", 0), "failover.fall: must be at least 1"),
    (with_change("failover.interval", -1), "failover.interval: must be greater than 0"),
    (with_change("failover.enabled", "yes"), "failover.enabled: expected true or false"),
    (with_change("env.green", ...), "env.green: missing (required)"),
    (with_change("env.blue.url", "ftp://x"), "env.blue.url: not an http(s) URL"),
    (with_change("env.blue.url", ...), "env.blue: needs 'url'"),
    (with_change("env.blue.health_path", "health"), "env.blue.health_path: must start with '/'"),
    (with_change("env.blue.version", "body:x"), "env.blue.version: expected 'header:NAME'"),
    (with_change("env.blue.ssh", "a@b:notaport"), "env.blue.ssh:"),
    (with_change("env.blue.deploy", 5), "env.blue.deploy: expected a string or a list"),
    (with_change("env.blue.flags_redis", "localhost:6379"), "env.blue.flags_redis: not a redis"),
    (
        with_change("env.green.hosts", [{"url": "http://a:1"}, {"url": "notaurl"}]),
        "env.green.hosts[1].url: not an http(s) URL",
    ),
    (
        with_change(
            "env.green.hosts",
            [{"name": "a", "url": "http://a:1"}, {"name": "a", "url": "http://b:1"}],
        ),
        "env.green.hosts[1].name: duplicate host name 'a'",
    ),
    (
        with_change("env.green.hosts", [{"url": "http://a:1", "helth_path": "/h"}]),
        "env.green.hosts[0].helth_path: unknown key (did you mean 'health_path'?)",
    ),
    (with_change("env.purple", {"url": "http://a:1"}), "env.purple: unknown key"),
    (
        with_change("flags.x", {"descripton": "typo"}),
        "flags.x.descripton: unknown key (did you mean",
    ),
    (with_change("flags.x", {"on": "1", "off": "1"}), "flags.x.off: must differ from 'on'"),
    (with_change("ssh.host_key_policy", "yolo"), "ssh.host_key_policy: expected 'strict' or"),
    (with_change("routr", {}), "routr: unknown key (did you mean 'router'?)"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_config_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[console]\nname = "x"\n\n[control\nredis = 1\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:4: TOML syntax error"):
        load_config(path)


def test_semantic_error_is_prefixed_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(with_change("failover.rise", 0)))
    with pytest.raises(ConfigError, match=r"c\.toml: failover\.rise: must be at least 1"):
        load_config(path)


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bgconsole init"):
        load_config(tmp_path / "nope.toml")


def test_config_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("BGCONSOLE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="no configuration found"):
        find_config(None)
    user = tmp_path / "xdg" / "bgconsole" / "bgconsole.toml"
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert find_config(None) == user
    (tmp_path / "bgconsole.toml").write_text("")
    assert find_config(None) == Path("bgconsole.toml")
    monkeypatch.setenv("BGCONSOLE_CONFIG", "/etc/from-env.toml")
    assert find_config(None) == Path("/etc/from-env.toml")
    assert find_config("explicit.toml") == Path("explicit.toml")


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("deploy@10.0.0.1", "deploy", "10.0.0.1", None),
        ("root@host:2222", "root", "host", 2222),
        ("host", None, "host", None),
        ("u@[::1]:22", "u", "::1", 22),
    ],
)
def test_ssh_targets(text: str, user: str | None, host: str, port: int | None) -> None:
    target = parse_ssh_target(text)
    assert (target.user, target.host, target.port) == (user, host, port)


def test_password_is_redacted_in_errors() -> None:
    data = with_change("env.blue.flags_redis", "http://u:s3cret@host:6379")
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert "s3cret" not in str(caught.value)


def with_changes(*changes: tuple[str, Any]) -> dict[str, Any]:
    """MINIMAL with several dotted keys set."""
    data = copy.deepcopy(MINIMAL)
    for path, value in changes:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


INF, NAN = float("inf"), float("nan")

# Every numeric value is finite and in a sane range; relations between keys hold. Each
# error names the key path (the first key of a relation is the one to change).
OUT_OF_RANGE = [
    (with_change("control.timeout", INF), "control.timeout: must be a finite number, got inf"),
    (with_change("control.timeout", NAN), "control.timeout: must be a finite number, got nan"),
    (with_change("control.timeout", 1e6), "control.timeout: must be at most 300"),
    (with_change("control.timeout", 10**400), "control.timeout: must be at most 300"),
    (with_change("control.events_max", 10**12), "control.events_max: must be at most"),
    (with_change("failover.timeout", NAN), "failover.timeout: must be a finite number"),
    (with_change("failover.interval", 1e308), "failover.interval: must be at most 3600"),
    (with_change("failover.interval", 1e-9), "failover.interval: must be at least 0.01"),
    (with_change("failover.fast_interval", -INF), "failover.fast_interval: must be a finite"),
    (with_change("failover.fall", 1e20), "failover.fall: expected an integer"),
    (with_change("failover.fall", 10**20), "failover.fall: must be at most 1000"),
    (with_change("failover.rise", 10**6), "failover.rise: must be at most 1000"),
    (with_change("failover.history", 10**9), "failover.history: must be at most"),
    (with_change("failover.min_dwell", INF), "failover.min_dwell: must be a finite number"),
    (with_change("failover.min_dwell", -1), "failover.min_dwell: must not be negative"),
    (with_change("failover.min_dwell", 1e12), "failover.min_dwell: must be at most"),
    (with_change("agent.heartbeat_interval", NAN), "agent.heartbeat_interval: must be a finite"),
    (with_change("agent.leader_lease", 1e300), "agent.leader_lease: must be at most"),
    (with_change("ssh.keepalive", NAN), "ssh.keepalive: must be a finite number"),
    (with_change("ssh.connect_timeout", INF), "ssh.connect_timeout: must be a finite number"),
    (with_change("ssh.command_timeout", 1e9), "ssh.command_timeout: must be at most"),
    (with_change("console.log_lines", 10**12), "console.log_lines: must be at most"),
    (with_change("router.verify_requests", 10**9), "router.verify_requests: must be at most"),
    (with_change("router.confirm_timeout", NAN), "router.confirm_timeout: must be a finite"),
    (with_change("router.listen", "127.0.0.1:99999"), "router.listen: port 99999 out of range"),
    (with_change("router.listen", "127.0.0.1:0"), "router.listen: port 0 out of range"),
    (with_change("router.listen", "abc"), "router.listen: expected HOST:PORT"),
    (with_change("router.public_url", "http://x:99999"), "router.public_url: port out of range"),
    (with_change("control.redis", "redis://h:70000/0"), "control.redis: port out of range"),
    (with_change("env.blue.url", "http://x:123456"), "env.blue.url: port out of range"),
    (with_change("env.blue.expect_status", 999), "env.blue.expect_status: must be at most 599"),
    (with_change("env.blue.deploy_timeout", INF), "env.blue.deploy_timeout: must be a finite"),
    (with_change("env.green.health_timeout", NAN), "env.green.health_timeout: must be a finite"),
    (with_change("env.blue.ssh", "u@h:99999"), "env.blue.ssh: port 99999 out of range"),
]

CROSS_CHECKS = [
    (
        with_changes(("agent.heartbeat_interval", 1.0), ("agent.leader_lease", 1.5)),
        "agent.leader_lease: must be at least 2 x agent.heartbeat_interval (2 s), got 1.5",
    ),
    (
        with_changes(
            ("agent.heartbeat_interval", 1.0),
            ("agent.leader_lease", 3.0),
            ("control.timeout", 2.5),
        ),
        "agent.leader_lease: must be longer than agent.heartbeat_interval + control.timeout",
    ),
    (
        with_changes(("failover.interval", 0.5), ("failover.fast_interval", 1.0)),
        "failover.fast_interval: must not be longer than failover.interval (0.5 s), got 1",
    ),
    (
        with_changes(("failover.timeout", 5.0), ("env.green.health_timeout", 2.0)),
        "env.green.health_timeout: must be longer than failover.timeout (5 s)",
    ),
]


@pytest.mark.parametrize(("data", "message"), OUT_OF_RANGE + CROSS_CHECKS)
def test_numbers_are_finite_in_range_and_consistent(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("timeout = inf", "failover.timeout: must be a finite number, got inf"),
        ("timeout = nan", "failover.timeout: must be a finite number, got nan"),
        ("interval = 1e308", "failover.interval: must be at most 3600"),
        ("fall = 100000000000000000000", "failover.fall: must be at most 1000"),
    ],
)
def test_toml_infinities_are_rejected_with_the_file(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(MINIMAL) + f"\n[failover]\n{line}\n")
    with pytest.raises(ConfigError, match=rf"c\.toml: {message}"):
        load_config(path)


def test_edges_of_the_ranges_are_accepted() -> None:
    config = parse_config(
        with_changes(
            ("router.listen", "[::1]:65535"),
            ("failover.interval", 0.01),
            ("failover.fast_interval", 0.01),
            ("failover.fall", 1000),
            ("failover.min_dwell", 0),
            ("agent.heartbeat_interval", 0.5),
            ("agent.leader_lease", 3),
            ("env.blue.expect_status", 599),
        )
    )
    assert config.router.listen == "[::1]:65535"
    assert config.agent.leader_lease == 3.0
