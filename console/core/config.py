"""Configuration: TOML in, frozen dataclasses out; every error names its key path."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from console.core.errors import ConfigError
from console.core.models import Colour

RouterKind = Literal["builtin", "haproxy", "nginx", "command"]
ROUTER_KINDS: tuple[RouterKind, ...] = ("builtin", "haproxy", "nginx", "command")
HostKeyPolicy = Literal["strict", "accept-new"]
VersionKind = Literal["header", "json", "path"]

T = TypeVar("T")
_MISSING: Any = object()

# Ceilings for keys that name no range of their own: a number past these is a typo or a
# unit mistake (ms for s), and inf, nan or 1e308 would otherwise reach asyncio and
# sockets as an OverflowError deep inside the agent instead of a line naming the key.
MAX_SECONDS = 7 * 86400.0
MAX_INTEGER = 1_000_000_000


@dataclass(frozen=True, slots=True)
class SshTarget:
    """Where to SSH: ``user@host:port`` split into its parts."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


@dataclass(frozen=True, slots=True)
class VersionSource:
    """Where a host's version comes from: a response header, a JSON field, or a path."""

    kind: VersionKind
    value: str


@dataclass(frozen=True, slots=True)
class DataConfig:
    """A host's data locations, the inputs of migrations."""

    sqlite: tuple[str, ...] = ()
    """SQLite database paths on the host."""
    redis: str | None = None
    """Redis URL holding the host's data keys (defaults to the environment's flags Redis)."""
    redis_keys: tuple[str, ...] = ()
    """Key patterns (SCAN MATCH syntax) that migrate with the data, e.g. queued jobs."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One host of an environment."""

    name: str
    url: str
    """Base URL of the application on this host."""
    health_path: str = "/health"
    expect_status: int = 200
    version: VersionSource | None = None
    ssh: SshTarget | None = None
    identity: str | None = None
    """Private key file for SSH; None uses the SSH config and agent."""
    jump: SshTarget | None = None
    """A jump host (ProxyJump) to reach this host through."""
    known_hosts: str | None = None
    """Overrides ``[ssh] known_hosts`` for this host."""
    logs: dict[str, str] = field(default_factory=dict)
    """Log name -> shell command that streams it (``tail -F ...``)."""
    deploy: tuple[str, ...] = ()
    """Shell steps run in order on the host to deploy; ``{ref}`` is replaced by the ref."""
    workdir: str | None = None
    """Directory the log and deploy commands run in."""
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def health_url(self) -> str:
        """The full URL probed for health."""
        return self.url.rstrip("/") + self.health_path


@dataclass(frozen=True, slots=True)
class GitDeployConfig:
    """The classic push-to-deploy pipeline: a bare repository with a post-receive hook."""

    repo: str
    """Path of the bare repository on each host."""
    worktree: str
    """Where the hook checks out the pushed ref."""
    restart: str = ""
    """Shell command the hook runs after checkout (in the worktree)."""


@dataclass(frozen=True, slots=True)
class EnvConfig:
    """One environment: a colour and its hosts."""

    colour: Colour
    hosts: tuple[HostConfig, ...]
    flags_redis: str | None = None
    """Redis URL the application on this colour reads its flags from."""
    deploy_timeout: float = 600.0
    health_timeout: float = 60.0
    """How long a deploy waits for the environment to turn healthy afterwards."""
    git: GitDeployConfig | None = None


@dataclass(frozen=True, slots=True)
class FlagConfig:
    """A declared feature flag."""

    name: str
    key: str
    """The Redis key the application reads."""
    description: str = ""
    on: str = "ON"
    off: str = "OFF"
    kill_switch: bool = False
    """A kill switch turns a feature OFF when set ON; shown with a warning style."""


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """The ``[console]`` section."""

    name: str
    """The application's name; the control plane keys live under ``bg:<name>:``."""
    theme: str = "bgconsole-dark"
    log_lines: int = 5000
    """Lines kept per log pane (older ones are dropped)."""
    flag_prefix: str = "flag:"
    """Default key prefix of flags; keys under it that no flag declares show as undeclared."""
    read_only: bool = False
    """Watch only: every key and command that changes production is refused (visibly)."""


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The ``[control]`` section: the control-plane Redis."""

    redis: str
    """The control-plane Redis; with ``sentinels`` only its password, TLS and db are used
    (the primary's address comes from the sentinels)."""
    timeout: float = 2.0
    """Seconds any one control-plane call may take before it counts as unavailable."""
    events_max: int = 10_000
    """Events kept in the stream (approximate cap)."""
    sentinels: tuple[tuple[str, int], ...] = ()
    """Redis Sentinel addresses; when set, the primary is found (and followed across a
    failover) through them."""
    master_name: str = ""
    """The name the sentinels monitor the control-plane primary under."""
    sentinel_password: str | None = None
    """Password of the sentinels themselves (their ``requirepass``), if any."""


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """The ``[router]`` section: how traffic is moved between colours."""

    kind: RouterKind
    listen: str = "127.0.0.1:8080"
    """builtin: address the agent's reverse proxy listens on."""
    name: str = ""
    """How messages name this router when there are several (``[[router]]``)."""
    public_url: str | None = None
    """The front door clients use; switches verify through it (defaults to listen)."""
    verify_requests: int = 5
    confirm_timeout: float = 10.0
    retry_on_5xx: bool = False
    """builtin: retry idempotent requests that got a 5xx on the stand-by (opt-in)."""
    head_timeout: float = 10.0
    """builtin: seconds a request head may take from its first byte (slow clients)."""
    body_timeout: float = 30.0
    """builtin: seconds one read of a request body may wait."""
    idle_timeout: float = 75.0
    """builtin: seconds a keep-alive client connection may sit idle."""
    connect_timeout: float = 2.0
    """builtin: seconds to connect to an upstream before it counts as down."""
    first_byte_timeout: float = 60.0
    """builtin: seconds to wait for a response's first byte (then 504)."""
    max_connections: int = 0
    """builtin: client connections at once; 0 derives it from the file-descriptor limit."""
    max_head: int = 65536
    """builtin: bytes a request head may have (431 beyond)."""
    trusted_proxies: tuple[str, ...] = ()
    """builtin: addresses or networks whose X-Forwarded-* headers are kept."""
    tls_cert: str | None = None
    """builtin: PEM certificate chain; with tls_key the listener speaks TLS."""
    tls_key: str | None = None
    ws_drain: float = 10.0
    """builtin: seconds WebSocket connections stay on a colour after a switch away."""
    socket: str | None = None
    """haproxy: runtime API, a unix socket path or ``tcp://host:port``."""
    backend: str = "app"
    """haproxy: backend holding one server per host, named ``<colour>`` or ``<colour>-<host>``."""
    state_file: str | None = None
    """haproxy: server-state file written after each change so a reload keeps it."""
    upstream_file: str | None = None
    """nginx: the include file holding the upstream block."""
    upstream_name: str = "app"
    reload_command: str = "nginx -s reload"
    test_command: str | None = "nginx -t"
    switch_command: str | None = None
    """command: shell template run to switch; ``{colour}``, ``{hosts}`` are replaced."""
    state_command: str | None = None
    """command: shell command printing the colour the router sends traffic to."""
    ssh: SshTarget | None = None
    """haproxy/nginx/command: run the router operations on this host over SSH."""

    @property
    def front_door(self) -> str:
        """The URL switch verification requests go to."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.listen}"


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    """The ``[failover]`` section: health probing and the automatic failover policy."""

    enabled: bool = True
    interval: float = 0.5
    """Seconds between health probes."""
    fast_interval: float = 0.1
    """Seconds between probes while a host is changing state (failing, recovering)."""
    timeout: float = 0.4
    """Seconds one probe may take."""
    fall: int = 2
    """Consecutive failed probes before a host counts as down."""
    rise: int = 2
    """Consecutive good probes before a down host counts as up again."""
    min_dwell: float = 30.0
    """Seconds after any switch before an automatic failover may happen."""
    failback: bool = False
    """Fail back automatically when the original colour is healthy again."""
    restart_grace: float = 10.0
    """Seconds a live colour may refuse connections while a deploy (holding its lock)
    restarts it, before it counts as down. 5xx answers never get this grace."""
    history: int = 120
    """Probes kept per host (for sparklines)."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The ``[agent]`` section: the long-running monitor."""

    heartbeat_interval: float = 1.0
    leader_lease: float = 5.0
    """Seconds a leader's lock lasts without renewal; another agent takes over after it."""
    log_format: Literal["logfmt", "json"] = "logfmt"
    metrics_listen: str | None = None
    """``HOST:PORT`` where the agent serves Prometheus ``/metrics``; None (default): off."""


NOTIFY_KINDS: tuple[str, ...] = (
    "switch", "failover", "failover_held", "deploy", "migration", "flag", "drift",
    "control_plane_lost",
)  # fmt: skip
"""Event kinds a ``[[notify]]`` entry may ask for."""

HOOK_WHEN: tuple[str, ...] = ("pre_switch", "post_switch", "post_deploy")
"""When a ``[[hook]]`` runs: pre_switch hooks are gates (must exit 0), the others report."""


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """One ``[[notify]]`` entry: a webhook and the event kinds sent to it."""

    url: str
    kinds: tuple[str, ...] = NOTIFY_KINDS
    timeout: float = 5.0
    """Seconds one delivery attempt may take."""
    name: str = ""
    """How failures name this receiver (default: the URL's host)."""


@dataclass(frozen=True, slots=True)
class HookConfig:
    """One ``[[hook]]`` entry: a command run before a switch (a gate) or after one."""

    when: str
    """pre_switch, post_switch or post_deploy (see :data:`HOOK_WHEN`)."""
    name: str
    command: str
    ssh: SshTarget | None = None
    """Run the command on this host over SSH instead of locally."""
    identity: str | None = None
    timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class SshSettings:
    """The ``[ssh]`` section: client behaviour shared by every host."""

    use_config: bool = True
    """Read ``~/.ssh/config`` the way OpenSSH does."""
    use_agent: bool = True
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_policy: HostKeyPolicy = "strict"
    """strict: unknown keys are refused; accept-new: unknown keys are learned, changed refused."""
    connect_timeout: float = 10.0
    keepalive: float = 15.0
    command_timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class MigrateConfig:
    """The ``[migrate]`` section: how data migrations behave on the hosts."""

    slice: float = 0.05
    """Seconds of write lock one apply transaction may hold; the app's writers wait at most
    about this long."""
    work_dir: str = "/var/tmp/bgconsole-migrate"
    """Absolute directory on every host for transfer files and snapshot backups: outside the
    application's checkout, and not /tmp, which a reboot may empty of backups."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    console: ConsoleSettings
    control: ControlConfig
    router: RouterConfig
    failover: FailoverConfig
    agent: AgentConfig
    ssh: SshSettings
    envs: dict[Colour, EnvConfig]
    flags: dict[str, FlagConfig]
    path: Path | None = None
    migrate: MigrateConfig = MigrateConfig()
    routers: tuple[RouterConfig, ...] = ()
    """Every router of the front door (``[[router]]``); empty means just ``router``."""
    notify: tuple[NotifyConfig, ...] = ()
    hooks: tuple[HookConfig, ...] = ()

    @property
    def all_routers(self) -> tuple[RouterConfig, ...]:
        """Every router a switch must apply to (one unless ``[[router]]`` lists several)."""
        return self.routers or (self.router,)

    def env(self, colour: Colour) -> EnvConfig:
        """The environment of a colour (both always exist)."""
        return self.envs[colour]

    def all_hosts(self) -> Iterator[tuple[Colour, HostConfig]]:
        """Every host of both environments, blue first."""
        for colour in (Colour.BLUE, Colour.GREEN):
            for host in self.envs[colour].hosts:
                yield colour, host


class _Table:
    """A TOML table being read: typed getters that name the key path, unknown-key check."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.key_path(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError(f"{self.key_path(key)}: missing (required)")
            return default
        return self.data[key]

    def typed(self, key: str, kind: type[T], what: str, default: Any = _MISSING) -> T:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value  # type: ignore[no-any-return]
        # bool is an int subclass; a flag written as 1 is a mistake worth naming.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(key, f"expected {what}, got {_describe(value)}")
        return value

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self.typed(key, str, "a string", default)
        if isinstance(value, str) and not value.strip() and default is _MISSING:
            raise self.error(key, "must not be empty")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        return self.typed(key, bool, "true or false", default)

    def integer(
        self,
        key: str,
        default: Any = _MISSING,
        minimum: int | None = None,
        maximum: int = MAX_INTEGER,
    ) -> Any:
        value = self.typed(key, int, "an integer", default)
        if minimum is not None and isinstance(value, int) and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        if isinstance(value, int) and value > maximum:
            raise self.error(key, f"must be at most {maximum}, got {value}")
        return value

    def seconds(
        self,
        key: str,
        default: Any = _MISSING,
        positive: bool = True,
        maximum: float = MAX_SECONDS,
        minimum: float = 0.0,
    ) -> Any:
        """A duration: finite, not negative (above 0 when ``positive``), within range."""
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number of seconds, got {_describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value}")
        # Compared before float(): a huge TOML integer would overflow the conversion.
        if positive and value <= 0:
            raise self.error(key, f"must be greater than 0, got {value}")
        if value < 0:
            raise self.error(key, f"must not be negative, got {value}")
        if value > maximum:
            raise self.error(key, f"must be at most {maximum:g} s, got {_number(value)}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum:g} s, got {_number(value)}")
        return float(value)

    def str_list(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings, as a tuple."""
        value = self.raw(key, [])
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a string or a list of strings, got {_describe(value)}")
        return tuple(value)

    def table(self, key: str, required: bool = False) -> _Table | None:
        value = self.raw(key, _MISSING if required else None)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_describe(value)}")
        return _Table(value, self.key_path(key))

    def finish(self, also_valid: tuple[str, ...] = ()) -> None:
        """Reject keys nobody read, suggesting the closest valid one."""
        valid = sorted(self.seen | set(also_valid))
        for key in self.data:
            if key not in self.seen and key not in also_valid:
                close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.error(key, f"unknown key{hint}")


def _number(value: float) -> str:
    """A number for a message: ``1e+308``, ``0.5``, ``3``; a huge integer shortened."""
    text = str(value)
    return text if len(text) <= 20 else f"{text[:6]}... ({len(text)} digits)"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


_SSH_TARGET = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s/]+)(?::(?P<port>\d+))?$"
)


def parse_ssh_target(text: str) -> SshTarget:
    """Parse ``user@host:port`` (user and port optional; IPv6 in brackets).

    Raises:
        ValueError: the text is not such a target.
    """
    match = _SSH_TARGET.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an SSH target (expected user@host or user@host:port)")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return SshTarget(host=match["host"].strip("[]"), user=match["user"], port=port)


def parse_listen(text: str, *, any_port: bool = False) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 in brackets); ``any_port`` also accepts port 0.

    Raises:
        ValueError: not HOST:PORT, or the port is out of range.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    number = int(port)
    low = 0 if any_port else 1
    if not low <= number <= 65535:
        raise ValueError(f"port {number} out of range ({low}-65535)")
    return host.strip("[]"), number


def _check_port(table: _Table, key: str, url: str) -> None:
    """A port the socket layer would refuse later (``:99999``) is named now."""
    try:
        port = urlsplit(url).port
    except ValueError:  # not a number, or past 65535
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise table.error(key, f"port out of range (1-65535): {_redact(url)!r}")


def _http_url(table: _Table, key: str, default: Any = _MISSING) -> Any:
    url = table.string(key, default)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise table.error(key, f"not an http(s) URL: {url!r}")
    _check_port(table, key, url)
    return url


def _redis_url(table: _Table, key: str, default: Any = _MISSING) -> Any:
    url = table.string(key, default)
    if url is None:
        return None
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise table.error(key, f"not a redis://, rediss:// or unix:// URL: {_redact(url)!r}")
    _check_port(table, key, url)
    return url


def _sentinels(table: _Table) -> tuple[tuple[str, int], ...]:
    """``sentinels = ["host:port", ...]``: each with a valid port."""
    addresses: list[tuple[str, int]] = []
    for text in table.str_list("sentinels"):
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise table.error("sentinels", f"expected HOST:PORT (port 1-65535), got {text!r}")
        addresses.append((host, int(port)))
    return tuple(addresses)


def _redact(url: str) -> str:
    """A URL with its password hidden, safe for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


redact_url = _redact


def _ssh(table: _Table, key: str) -> SshTarget | None:
    text = table.string(key, None)
    if text is None:
        return None
    try:
        return parse_ssh_target(text)
    except ValueError as e:
        raise table.error(key, str(e)) from None


def _version(table: _Table) -> VersionSource | None:
    text = table.string("version", None)
    if text is None:
        return None
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("header", "json", "path") or not value:
        raise table.error(
            "version", f"expected 'header:NAME', 'json:FIELD' or 'path:/URL', got {text!r}"
        )
    if kind == "path" and not value.startswith("/"):
        raise table.error("version", f"path must start with '/', got {value!r}")
    return VersionSource(kind, value)


_HOST_KEYS = (
    "name", "url", "health_path", "expect_status", "version", "ssh", "identity", "jump",
    "known_hosts", "logs", "deploy", "workdir", "data",
)  # fmt: skip


def _host(
    table: _Table, defaults: Mapping[str, Any], colour: Colour, index: int | None
) -> HostConfig:
    """Read one host; keys it lacks come from the environment table (``defaults``)."""
    merged = _Table(
        {**{k: v for k, v in defaults.items() if k in _HOST_KEYS}, **table.data}, table.path
    )
    host_default = colour.value if index is None else None
    url = _http_url(merged, "url")
    name = merged.string("name", host_default or urlsplit(url).netloc)
    health_path = merged.string("health_path", "/health")
    if not health_path.startswith("/"):
        raise merged.error("health_path", f"must start with '/', got {health_path!r}")
    logs_table = merged.table("logs")
    logs: dict[str, str] = {}
    if logs_table is not None:
        for log_name in logs_table.data:
            logs[log_name] = logs_table.string(log_name)
    data_table = merged.table("data")
    data = DataConfig()
    if data_table is not None:
        data = DataConfig(
            sqlite=data_table.str_list("sqlite"),
            redis=_redis_url(data_table, "redis", None),
            redis_keys=data_table.str_list("redis_keys"),
        )
        data_table.finish()
    host = HostConfig(
        name=name,
        url=url,
        health_path=health_path,
        expect_status=merged.integer("expect_status", 200, minimum=100, maximum=599),
        version=_version(merged),
        ssh=_ssh(merged, "ssh"),
        identity=merged.string("identity", None),
        jump=_ssh(merged, "jump"),
        known_hosts=merged.string("known_hosts", None),
        logs=logs,
        deploy=merged.str_list("deploy"),
        workdir=merged.string("workdir", None),
        data=data,
    )
    table.seen |= merged.seen
    if index is not None:
        table.finish()
    return host


_ENV_KEYS = ("hosts", "flags_redis", "deploy_timeout", "health_timeout", "git")


def _env(table: _Table, colour: Colour) -> EnvConfig:
    hosts_raw = table.raw("hosts", None)
    hosts: list[HostConfig] = []
    if hosts_raw is None:
        if not table.has("url"):
            raise ConfigError(f"{table.path}: needs 'url' (one host) or '[[{table.path}.hosts]]'")
        hosts.append(_host(table, {}, colour, None))
    else:
        if not isinstance(hosts_raw, list) or not hosts_raw:
            raise table.error("hosts", "expected a non-empty list of host tables")
        defaults = {k: v for k, v in table.data.items() if k in _HOST_KEYS}
        table.seen |= set(defaults)
        for i, item in enumerate(hosts_raw):
            path = f"{table.path}.hosts[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{path}: expected a table, got {_describe(item)}")
            hosts.append(_host(_Table(item, path), defaults, colour, i))
        names = [h.name for h in hosts]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"{table.path}.hosts[{i}].name: duplicate host name {name!r}")
    git_table = table.table("git")
    git = None
    if git_table is not None:
        git = GitDeployConfig(
            repo=git_table.string("repo"),
            worktree=git_table.string("worktree"),
            restart=git_table.string("restart", ""),
        )
        git_table.finish()
    env = EnvConfig(
        colour=colour,
        hosts=tuple(hosts),
        flags_redis=_redis_url(table, "flags_redis", None),
        deploy_timeout=table.seconds("deploy_timeout", 600.0),
        health_timeout=table.seconds("health_timeout", 60.0),
        git=git,
    )
    table.finish()
    return env


def _networks(table: _Table, key: str) -> tuple[str, ...]:
    """A list of IP addresses or networks (``10.0.0.0/8``), each checked."""
    entries = table.str_list(key)
    for i, entry in enumerate(entries):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{table.key_path(key)}[{i}]: not an IP address or network: {entry!r}"
            ) from None
    return entries


def _routers(root: _Table) -> tuple[RouterConfig, ...]:
    """``[router]``, or ``[[router]]`` entries: several routers of one front door."""
    raw = root.raw("router")
    if not isinstance(raw, list):
        table = root.table("router", required=True)
        assert table is not None
        return (_router(table, 0),)
    if not raw or not all(isinstance(entry, dict) for entry in raw):
        raise root.error("router", "expected a table or a non-empty array of tables")
    routers = tuple(_router(_Table(entry, f"router[{i}]"), i) for i, entry in enumerate(raw))
    names = [r.name for r in routers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"router[{i}].name: {name!r} is used twice (names must differ)")
    if sum(r.kind == "builtin" for r in routers) and len(routers) > 1:
        raise ConfigError("router: the builtin router cannot be combined with other routers")
    return routers


def _router(table: _Table, index: int) -> RouterConfig:
    kind = table.string("kind")
    if kind not in ROUTER_KINDS:
        close = difflib.get_close_matches(kind, ROUTER_KINDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise table.error(
            "kind", f"unknown router kind {kind!r}{hint}; one of {', '.join(ROUTER_KINDS)}"
        )
    router = RouterConfig(
        kind=kind,
        name=table.string("name", f"{kind}#{index + 1}"),
        listen=table.string("listen", "127.0.0.1:8080"),
        public_url=_http_url(table, "public_url", None),
        verify_requests=table.integer("verify_requests", 5, minimum=0, maximum=1000),
        confirm_timeout=table.seconds("confirm_timeout", 10.0, maximum=3600),
        retry_on_5xx=table.boolean("retry_on_5xx", False),
        head_timeout=table.seconds("head_timeout", 10.0, maximum=3600),
        body_timeout=table.seconds("body_timeout", 30.0, maximum=3600),
        idle_timeout=table.seconds("idle_timeout", 75.0, maximum=86400),
        connect_timeout=table.seconds("connect_timeout", 2.0, maximum=600),
        first_byte_timeout=table.seconds("first_byte_timeout", 60.0, maximum=86400),
        max_connections=table.integer("max_connections", 0, minimum=0, maximum=1_000_000),
        max_head=table.integer("max_head", 65536, minimum=1024, maximum=1024 * 1024),
        trusted_proxies=_networks(table, "trusted_proxies"),
        tls_cert=table.string("tls_cert", None),
        tls_key=table.string("tls_key", None),
        ws_drain=table.seconds("ws_drain", 10.0, positive=False, maximum=86400),
        socket=table.string("socket", None),
        backend=table.string("backend", "app"),
        state_file=table.string("state_file", None),
        upstream_file=table.string("upstream_file", None),
        upstream_name=table.string("upstream_name", "app"),
        reload_command=table.string("reload_command", "nginx -s reload"),
        test_command=table.string("test_command", "nginx -t") or None,
        switch_command=table.string("switch_command", None),
        state_command=table.string("state_command", None),
        ssh=_ssh(table, "ssh"),
    )
    try:
        parse_listen(router.listen)
    except ValueError as e:
        raise table.error("listen", str(e)) from None
    if (router.tls_cert is None) != (router.tls_key is None):
        missing = "tls_key" if router.tls_key is None else "tls_cert"
        raise table.error(missing, "missing (tls_cert and tls_key go together)")
    required = {"haproxy": ("socket",), "nginx": ("upstream_file",), "command": ("switch_command",)}
    for key in required.get(kind, ()):
        if getattr(router, key) is None:
            raise table.error(key, f"missing (required when kind = {kind!r})")
    table.finish()
    return router


def _flags(table: _Table | None, prefix: str) -> dict[str, FlagConfig]:
    flags: dict[str, FlagConfig] = {}
    if table is None:
        return flags
    for name in table.data:
        flag_table = table.table(name, required=True)
        assert flag_table is not None
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
            raise ConfigError(f"{flag_table.path}: flag names use letters, digits and _ . : -")
        flag = FlagConfig(
            name=name,
            key=flag_table.string("key", prefix + name),
            description=flag_table.string("description", ""),
            on=flag_table.string("on", "ON"),
            off=flag_table.string("off", "OFF"),
            kill_switch=flag_table.boolean("kill_switch", False),
        )
        if flag.on == flag.off:
            raise flag_table.error("off", f"must differ from 'on' (both {flag.on!r})")
        flag_table.finish()
        flags[name] = flag
    return flags


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> Config:
    """Validate parsed TOML and build the configuration.

    Raises:
        ConfigError: naming the key path of the first problem.
    """
    root = _Table(data, "")
    console_t = root.table("console", required=True)
    assert console_t is not None
    console = ConsoleSettings(
        name=console_t.string("name"),
        theme=console_t.string("theme", "bgconsole-dark"),
        log_lines=console_t.integer("log_lines", 5000, minimum=100, maximum=10_000_000),
        flag_prefix=console_t.string("flag_prefix", "flag:"),
        read_only=console_t.boolean("read_only", False),
    )
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", console.name):
        raise console_t.error("name", "use letters, digits, '_', '.' and '-' only")
    console_t.finish()

    control_t = root.table("control", required=True)
    assert control_t is not None
    sentinels = _sentinels(control_t)
    control = ControlConfig(
        redis=_redis_url(control_t, "redis", "redis://" if sentinels else _MISSING),
        timeout=control_t.seconds("timeout", 2.0, maximum=300),
        events_max=control_t.integer("events_max", 10_000, minimum=100, maximum=100_000_000),
        sentinels=sentinels,
        master_name=control_t.string("master_name", "" if not sentinels else _MISSING),
        sentinel_password=control_t.string("sentinel_password", None),
    )
    control_t.finish()

    routers = _routers(root)
    router = routers[0]

    failover_t = root.table("failover") or _Table({}, "failover")
    failover = FailoverConfig(
        enabled=failover_t.boolean("enabled", True),
        # Floors: a probe loop faster than 10 ms is a busy loop against the hosts.
        interval=failover_t.seconds("interval", 0.5, minimum=0.01, maximum=3600),
        fast_interval=failover_t.seconds("fast_interval", 0.1, minimum=0.01, maximum=3600),
        timeout=failover_t.seconds("timeout", 0.4, maximum=3600),
        fall=failover_t.integer("fall", 2, minimum=1, maximum=1000),
        rise=failover_t.integer("rise", 2, minimum=1, maximum=1000),
        min_dwell=failover_t.seconds("min_dwell", 30.0, positive=False),
        restart_grace=failover_t.seconds("restart_grace", 10.0, positive=False),
        failback=failover_t.boolean("failback", False),
        history=failover_t.integer("history", 120, minimum=1, maximum=100_000),
    )
    failover_t.finish()

    agent_t = root.table("agent") or _Table({}, "agent")
    log_format = agent_t.string("log_format", "logfmt")
    if log_format not in ("logfmt", "json"):
        raise agent_t.error("log_format", f"expected 'logfmt' or 'json', got {log_format!r}")
    agent = AgentConfig(
        heartbeat_interval=agent_t.seconds("heartbeat_interval", 1.0, minimum=0.01, maximum=3600),
        leader_lease=agent_t.seconds("leader_lease", 5.0, maximum=3600),
        log_format=log_format,
        metrics_listen=agent_t.string("metrics_listen", None),
    )
    if agent.metrics_listen is not None:
        try:
            parse_listen(agent.metrics_listen)
        except ValueError as e:
            raise agent_t.error("metrics_listen", str(e)) from None
    agent_t.finish()

    ssh_t = root.table("ssh") or _Table({}, "ssh")
    policy = ssh_t.string("host_key_policy", "strict")
    if policy not in ("strict", "accept-new"):
        raise ssh_t.error("host_key_policy", f"expected 'strict' or 'accept-new', got {policy!r}")
    ssh = SshSettings(
        use_config=ssh_t.boolean("use_config", True),
        use_agent=ssh_t.boolean("use_agent", True),
        known_hosts=ssh_t.string("known_hosts", "~/.ssh/known_hosts"),
        host_key_policy=policy,
        connect_timeout=ssh_t.seconds("connect_timeout", 10.0, maximum=3600),
        keepalive=ssh_t.seconds("keepalive", 15.0, positive=False, maximum=3600),
        command_timeout=ssh_t.seconds("command_timeout", 600.0),
    )
    ssh_t.finish()

    env_t = root.table("env", required=True)
    assert env_t is not None
    envs: dict[Colour, EnvConfig] = {}
    for colour in Colour:
        table = env_t.table(colour.value, required=True)
        assert table is not None
        envs[colour] = _env(table, colour)
    env_t.finish()

    flags = _flags(root.table("flags"), console.flag_prefix)
    migrate = _migrate(root.table("migrate") or _Table({}, "migrate"))
    notify = tuple(_notify(t) for t in _table_list(root, "notify"))
    hooks = tuple(_hook(t) for t in _table_list(root, "hook"))
    root.finish()
    config = Config(
        console,
        control,
        router,
        failover,
        agent,
        ssh,
        envs,
        flags,
        path,
        migrate=migrate,
        routers=routers if len(routers) > 1 else (),
        notify=notify,
        hooks=hooks,
    )
    _cross_check(config)
    return config


def _cross_check(config: Config) -> None:
    """Relations between keys; each error names the key to change and the one it must suit.

    Every value can be in range on its own and still make a setup that cannot work.
    """
    agent, failover = config.agent, config.failover
    if agent.leader_lease < 2 * agent.heartbeat_interval:
        # The lease is renewed on every heartbeat: one late beat must not cost leadership.
        raise ConfigError(
            f"agent.leader_lease: must be at least 2 x agent.heartbeat_interval "
            f"({2 * agent.heartbeat_interval:g} s), got {agent.leader_lease:g}"
        )
    renewal = agent.heartbeat_interval + config.control.timeout
    if agent.leader_lease <= renewal:
        # A renewal may take a whole control-plane timeout after the beat is due.
        raise ConfigError(
            f"agent.leader_lease: must be longer than agent.heartbeat_interval + "
            f"control.timeout ({renewal:g} s), got {agent.leader_lease:g}"
        )
    if failover.fast_interval > failover.interval:
        raise ConfigError(
            f"failover.fast_interval: must not be longer than failover.interval "
            f"({failover.interval:g} s), got {failover.fast_interval:g}"
        )
    for colour, env in config.envs.items():
        if env.health_timeout <= failover.timeout:
            # A wait shorter than one probe may take never sees a slow but healthy host.
            raise ConfigError(
                f"env.{colour.value}.health_timeout: must be longer than failover.timeout "
                f"({failover.timeout:g} s), got {env.health_timeout:g}"
            )


def _table_list(root: _Table, key: str) -> list[_Table]:
    """An array of tables (``[[notify]]``), each named ``key[i]`` in errors."""
    raw = root.raw(key, [])
    if not isinstance(raw, list):
        raise root.error(key, f"expected [[{key}]] tables, got {_describe(raw)}")
    tables = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{key}[{i}]: expected a table, got {_describe(item)}")
        tables.append(_Table(item, f"{key}[{i}]"))
    return tables


def _notify(table: _Table) -> NotifyConfig:
    url = _http_url(table, "url")
    kinds = table.str_list("kinds") if table.has("kinds") else NOTIFY_KINDS
    if not kinds:
        raise table.error("kinds", f"must name at least one of {', '.join(NOTIFY_KINDS)}")
    for i, kind in enumerate(kinds):
        if kind not in NOTIFY_KINDS:
            close = difflib.get_close_matches(kind, NOTIFY_KINDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{table.key_path('kinds')}[{i}]: unknown kind {kind!r}{hint}; "
                f"one of {', '.join(NOTIFY_KINDS)}"
            )
    entry = NotifyConfig(
        url=url,
        kinds=tuple(dict.fromkeys(kinds)),
        timeout=table.seconds("timeout", 5.0, maximum=300),
        name=table.string("name", "") or (urlsplit(url).hostname or url),
    )
    table.finish()
    return entry


def _hook(table: _Table) -> HookConfig:
    when = table.string("when")
    if when not in HOOK_WHEN:
        close = difflib.get_close_matches(when, HOOK_WHEN, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise table.error("when", f"unknown {when!r}{hint}; one of {', '.join(HOOK_WHEN)}")
    command = table.string("command")
    hook = HookConfig(
        when=when,
        name=table.string("name", "") or command.split()[0],
        command=command,
        ssh=_ssh(table, "ssh"),
        identity=table.string("identity", None),
        timeout=table.seconds("timeout", 120.0, maximum=3600),
    )
    table.finish()
    return hook


_SLICE_MAX = 5.0
"""A longer write lock than this would stall the live application's writers noticeably."""


def _migrate(table: _Table) -> MigrateConfig:
    slice_ = table.seconds("slice", 0.05)
    # TOML allows inf and nan; neither is a duration a transaction can be cut to.
    if not math.isfinite(slice_) or slice_ > _SLICE_MAX:
        raise table.error("slice", f"must be a finite number up to {_SLICE_MAX:g} s, got {slice_}")
    work_dir = table.string("work_dir", "/var/tmp/bgconsole-migrate")
    if not work_dir.startswith("/") or work_dir.rstrip("/") in ("", "/tmp"):
        raise table.error(
            "work_dir",
            f"must be an absolute directory of its own (not / or /tmp), got {work_dir!r}",
        )
    table.finish()
    return MigrateConfig(slice=slice_, work_dir=work_dir.rstrip("/"))


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def load_config(path: Path) -> Config:
    """Read and validate a configuration file.

    Raises:
        ConfigError: the file is unreadable, not TOML (file and line named), or invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (create one with 'bgconsole init {path}')"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        position = _TOML_POSITION.search(message)
        if position:
            reason = message[: position.start()].strip()
            raise ConfigError(f"{path}:{position[1]}: TOML syntax error: {reason}") from None
        raise ConfigError(f"{path}: TOML syntax error: {message}") from None
    try:
        return parse_config(data, path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def user_config_path() -> Path:
    """The per-user config file, following XDG."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "bgconsole" / "bgconsole.toml"


def find_config(explicit: str | None) -> Path:
    """Where the configuration is: ``-c``, then $BGCONSOLE_CONFIG, ./bgconsole.toml, user dir.

    Raises:
        ConfigError: none of them exists.
    """
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get("BGCONSOLE_CONFIG")
    if from_env:
        return Path(from_env).expanduser()
    candidates = [Path("bgconsole.toml"), user_config_path()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "no configuration found (looked at -c, $BGCONSOLE_CONFIG, "
        + ", ".join(str(c) for c in candidates)
        + "); write one with 'bgconsole init' or try 'bgconsole demo'"
    )
