"""Plain data passed between core services and the UI: colours, health, events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Colour(enum.StrEnum):
    """One of the two environments."""

    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Colour:
        """The opposite colour: the stand-by when this one is live."""
        return Colour.GREEN if self is Colour.BLUE else Colour.BLUE

    @classmethod
    def parse(cls, text: str) -> Colour:
        """Read a colour from user input, case-insensitively.

        Raises:
            ValueError: the text names no colour.
        """
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValueError(f"{text!r} is not a colour (blue or green)") from None


class Verdict(enum.StrEnum):
    """How an environment (or a host) looks after hysteresis."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Probe:
    """One health probe of one host."""

    at: float
    """Wall-clock time (epoch seconds) the probe started."""
    ok: bool
    status: int | None
    """HTTP status, or None when no response arrived."""
    latency_ms: float | None
    version: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HostHealth:
    """A host's current state: its last probe plus the hysteresis verdict."""

    colour: Colour
    host: str
    url: str
    up: bool
    """The host's state after fall/rise hysteresis, not just the last probe."""
    last: Probe | None
    consecutive_failures: int
    consecutive_successes: int
    history: tuple[Probe, ...] = ()
    """Recent probes, oldest first, bounded (for sparklines)."""

    @property
    def version(self) -> str | None:
        """The version the host reported on its last successful probe."""
        for probe in reversed(self.history):
            if probe.version is not None:
                return probe.version
        return None


@dataclass(frozen=True, slots=True)
class EnvHealth:
    """One environment's verdict over its hosts."""

    colour: Colour
    verdict: Verdict
    hosts: tuple[HostHealth, ...]

    @property
    def healthy_hosts(self) -> tuple[HostHealth, ...]:
        """Hosts that are up after hysteresis."""
        return tuple(h for h in self.hosts if h.up)


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Both environments at one instant."""

    at: float
    envs: dict[Colour, EnvHealth] = field(default_factory=dict)

    def verdict(self, colour: Colour) -> Verdict:
        """The verdict for a colour, UNKNOWN when it has not been probed."""
        env = self.envs.get(colour)
        return env.verdict if env else Verdict.UNKNOWN


@dataclass(frozen=True, slots=True)
class ActiveState:
    """The control plane's intended live colour."""

    colour: Colour
    epoch: int
    """Increases by one on every switch; switches compare-and-set on it."""
    updated_at: float
    actor: str
    reason: str
    kind: str = "switch"
    """How it got here: init (first colour ever), switch, failover, failback."""


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the control plane's event stream."""

    id: str
    at: float
    kind: str
    """switch, failover, flag, deploy, migrate, lock, agent, ..."""
    actor: str
    """OS user@host of whoever (or agent@host for whatever) did it."""
    summary: str
    before: str = ""
    after: str = ""
    reason: str = ""
    outcome: str = "ok"
    """ok, failed, refused, conflict, started."""
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds a control-plane lock, and until when."""

    name: str
    holder: str
    purpose: str
    since: float
    expires_at: float
    token: str = ""


@dataclass(frozen=True, slots=True)
class AgentHeartbeat:
    """The agent's last sign of life and its view of the world."""

    at: float
    actor: str
    pid: int
    armed: bool
    leader: bool
    router_kind: str
    serving: str
    """The colour the agent routes to right now (may lag the control plane when degraded)."""
    health: dict[str, str] = field(default_factory=dict)
    """colour -> verdict as the agent sees it."""
    proxy: dict[str, int] = field(default_factory=dict)
    """The builtin proxy's counters (``requests.blue``, ``errors.green``, ...); empty otherwise."""
    control_ok_at: float | None = None
    """Control-plane time the agent last read the live colour (None: never)."""
    deciding: bool = False
    """Leader, armed and enabled: this agent makes failover decisions right now."""
    drift: str = ""
    """The router disagreeing with the control plane, as the leader last saw it."""
