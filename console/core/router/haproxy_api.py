"""HAProxy runtime API client: one command per connection, and ``show servers state`` parsed.

The runtime API in non-interactive mode reads one line, answers, and closes the
connection; so every call here is connect, send ``command\\n``, read until EOF, under a
timeout. The socket is a unix path or ``tcp://host:port``, reached through an
:class:`~console.core.remote_exec.Executor` (locally, or over SSH as a stream channel).
"""

from __future__ import annotations

from dataclasses import dataclass

from console.core.errors import BackendError, RouterError
from console.core.remote_exec import Executor, LocalExecutor

# Admin-state bits of ``show servers state`` (HAProxy's SRV_ADMF_*). CMAINT (0x04, "disabled
# in the config") is not in the maintenance mask: a disabled server made ready keeps it.
ADMIN_MAINT_MASK = 0x01 | 0x02 | 0x20
"""FMAINT (forced), IMAINT (inherited from a tracked server), RMAINT (DNS resolution)."""
ADMIN_DRAIN_MASK = 0x08 | 0x10
"""FDRAIN (forced), IDRAIN (inherited)."""
OP_STOPPED = 0
"""Operational state 0: the server is down (health checks fail)."""

_STATE_VERSION = "1"


@dataclass(frozen=True, slots=True)
class ServerState:
    """One row of ``show servers state``."""

    backend: str
    name: str
    address: str
    port: int | None
    op_state: int
    admin_state: int
    weight: int
    """Current (user) weight."""
    initial_weight: int

    @property
    def maint(self) -> bool:
        """In maintenance: takes no traffic at all."""
        return bool(self.admin_state & ADMIN_MAINT_MASK)

    @property
    def drain(self) -> bool:
        """Draining: no new traffic, existing connections finish."""
        return bool(self.admin_state & ADMIN_DRAIN_MASK)

    @property
    def down(self) -> bool:
        """Health checks say the server is down."""
        return self.op_state == OP_STOPPED

    @property
    def endpoint(self) -> str:
        """``address:port`` as HAProxy sends traffic to it."""
        return f"{self.address}:{self.port}" if self.port else self.address


@dataclass(frozen=True, slots=True)
class ServersState:
    """``show servers state`` parsed, plus its raw text (the server-state file format)."""

    raw: str
    servers: tuple[ServerState, ...]

    def backend(self, name: str) -> tuple[ServerState, ...]:
        """The servers of one backend, in configuration order."""
        return tuple(s for s in self.servers if s.backend == name)


def parse_servers_state(text: str) -> ServersState:
    """Parse ``show servers state`` output (version line, ``# header`` line, rows).

    Raises:
        RouterError: the text is not in that format.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != _STATE_VERSION:
        first = lines[0].strip() if lines else "an empty answer"
        raise RouterError(f"haproxy answered {first!r} to 'show servers state'")
    if len(lines) < 2 or not lines[1].startswith("#"):
        raise RouterError("haproxy's 'show servers state' has no header line")
    header = lines[1].lstrip("#").split()
    try:
        index = {name: header.index(name) for name in _COLUMNS}
    except ValueError as e:
        raise RouterError(f"haproxy's 'show servers state' lacks a column: {e}") from e
    servers: list[ServerState] = []
    for line in lines[2:]:
        fields = line.split()
        try:
            port_text = fields[index["srv_port"]]
            servers.append(
                ServerState(
                    backend=fields[index["be_name"]],
                    name=fields[index["srv_name"]],
                    address=fields[index["srv_addr"]],
                    port=int(port_text) if port_text.isdigit() else None,
                    op_state=int(fields[index["srv_op_state"]]),
                    admin_state=int(fields[index["srv_admin_state"]]),
                    weight=int(fields[index["srv_uweight"]]),
                    initial_weight=int(fields[index["srv_iweight"]]),
                )
            )
        except (IndexError, ValueError) as e:
            raise RouterError(f"cannot parse haproxy server state line {line!r}") from e
    return ServersState(raw=text, servers=tuple(servers))


_COLUMNS = (
    "be_name", "srv_name", "srv_addr", "srv_port", "srv_op_state", "srv_admin_state",
    "srv_uweight", "srv_iweight",
)  # fmt: skip


class RuntimeApi:
    """A client of one HAProxy runtime API socket."""

    def __init__(
        self, address: str, executor: Executor | None = None, *, time_limit: float = 5.0
    ) -> None:
        """Args:
        address: a unix socket path or ``tcp://host:port``.
        executor: where to connect from (default: this machine).
        time_limit: seconds one command may take, connect to close.
        """
        self.address = address
        self.executor = executor or LocalExecutor()
        self.time_limit = time_limit

    async def execute(self, command: str) -> str:
        """Send one command and return HAProxy's whole answer.

        Raises:
            RouterError: the socket could not be reached or did not answer in time.
        """
        try:
            answer = await self.executor.exchange(
                self.address, command.encode() + b"\n", self.time_limit
            )
        except BackendError as e:
            raise RouterError(
                f"haproxy runtime API {e} (router.socket; is haproxy running with "
                f"'stats socket ... level admin'?)"
            ) from e
        return answer.decode(errors="replace")

    async def change(self, command: str) -> None:
        """Send a command that answers nothing on success (``set server``, ``set weight``).

        Raises:
            RouterError: HAProxy answered something, which for these commands is a refusal.
        """
        answer = (await self.execute(command)).strip()
        if answer:
            raise RouterError(f"haproxy refused {command!r}: {answer.splitlines()[0]}")

    async def servers_state(self, backend: str | None = None) -> ServersState:
        """``show servers state [backend]`` parsed.

        Raises:
            RouterError: the backend does not exist, or the answer is not a state table.
        """
        command = f"show servers state {backend}" if backend else "show servers state"
        answer = await self.execute(command)
        if answer.strip().startswith("Can't find backend"):
            raise RouterError(
                f"haproxy has no backend {backend!r} (router.backend must name the backend "
                "holding the blue and green servers)"
            )
        return parse_servers_state(answer)
