"""The HAProxy router: flips server states through the runtime API and persists them.

Convention: ``backend <router.backend>`` holds one server per host, named ``<colour>`` for a
single-host environment or ``<colour>-<host>`` (also ``<colour>_<n>``) for a fleet. Live
is the colour whose servers are ready; the other colour's are in maintenance.

A switch readies the new colour's servers first, then puts the old colour's in
maintenance: HAProxy sends the next request to the new servers and lets requests already
on the old ones finish, so no request fails. After every change ``show servers state`` is
written atomically to ``router.state_file``; with ``server-state-file`` and
``load-server-state-from-file global`` in haproxy.cfg, a reload or restart keeps the colour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from console.core.config import Config
from console.core.errors import BackendError, RouterError
from console.core.models import Colour
from console.core.remote_exec import Executor, LocalExecutor
from console.core.router.base import Router, RouterState, RouteTarget
from console.core.router.factory import colour_addresses
from console.core.router.haproxy_api import RuntimeApi, ServersState, ServerState


def server_colour(name: str) -> Colour | None:
    """The colour a server belongs to by its name (``blue``, ``blue-web1``, ``green_2``)."""
    lowered = name.lower()
    for colour in Colour:
        if lowered == colour.value or lowered.startswith((f"{colour}-", f"{colour}_")):
            return colour
    return None


def target_state(server: ServerState) -> str:
    """What HAProxy does with a server, in RouteTarget terms."""
    if server.maint:
        return "maint"
    if server.drain:
        return "drain"
    if server.down:
        return "down"
    if server.weight == 0:
        return "standby"
    return "active"


class HAProxyRouter(Router):
    """Routes by server state in one HAProxy backend, through the runtime API."""

    kind = "haproxy"

    def __init__(
        self, config: Config, executor: Executor | None = None, *, time_limit: float = 5.0
    ) -> None:
        """Args:
        config: needs ``[router] socket``; ``backend`` and ``state_file`` are used too.
        executor: where the socket and state file are (default: this machine).
        time_limit: seconds each runtime API command may take.
        """
        if not config.router.socket:
            raise RouterError("router.socket is not set (required when kind = 'haproxy')")
        self.config = config
        self.backend = config.router.backend
        self.state_file = config.router.state_file
        self.executor = executor or LocalExecutor()
        self.api = RuntimeApi(config.router.socket, self.executor, time_limit=time_limit)
        self._addresses = colour_addresses(config)

    async def _servers(self) -> tuple[ServerState, ...]:
        servers = (await self.api.servers_state(self.backend)).backend(self.backend)
        if not servers:
            raise RouterError(f"haproxy backend {self.backend!r} has no servers")
        return servers

    def _of(self, servers: Iterable[ServerState], colour: Colour) -> list[ServerState]:
        return [s for s in servers if server_colour(s.name) is colour]

    def _require(self, servers: Iterable[ServerState], colour: Colour) -> list[ServerState]:
        found = self._of(servers, colour)
        if not found:
            raise RouterError(
                f"haproxy backend {self.backend!r} has no server for {colour} (name them "
                f"'{colour}' or '{colour}-<host>')"
            )
        return found

    def _state_cmd(self, server: ServerState, state: str) -> str:
        return f"set server {self.backend}/{server.name} state {state}"

    def _weight_cmd(self, server: ServerState, weight: int | str) -> str:
        return f"set weight {self.backend}/{server.name} {weight}"

    async def _apply(self, commands: list[str]) -> None:
        """Run independent commands concurrently (one connection each); all must succeed."""
        results = await asyncio.gather(
            *(self.api.change(c) for c in commands), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _persist_and_report(self) -> RouterState:
        """Write the server-state file and report the state it holds.

        The state written is the state reported: one ``show servers state`` serves both
        (a switch pays one runtime-API round trip less).
        """
        state = await self.api.servers_state()
        servers = state.backend(self.backend)
        if not servers:
            raise RouterError(f"haproxy backend {self.backend!r} has no servers")
        if not self.state_file:
            note = "router.state_file not set: an haproxy reload reverts runtime changes"
            return self._report(servers, note)
        try:
            await self.executor.write_file(self.state_file, state.raw.encode())
        except BackendError as e:
            raise RouterError(
                f"the change is live but not persisted ({e}); an haproxy reload would revert it"
            ) from e
        return self._report(servers)

    def _report(self, servers: tuple[ServerState, ...], note: str = "") -> RouterState:
        targets: list[RouteTarget] = []
        unnamed: list[str] = []
        for server in servers:
            colour = server_colour(server.name)
            if colour is None:
                unnamed.append(server.name)
                continue
            known = self._addresses.get(server.endpoint)
            targets.append(
                RouteTarget(
                    colour=colour,
                    host=known[1].name if known else server.name,
                    address=server.endpoint,
                    state=target_state(server),
                    weight=server.weight,
                )
            )
        taking = {t.colour for t in targets if t.state == "active"}
        live = next(iter(taking)) if len(taking) == 1 else None
        notes = [note] if note else []
        if not taking:
            notes.append("no server takes traffic")
        elif len(taking) > 1:
            notes.append("both colours take traffic")
        for colour in Colour:
            mine = [t for t in targets if t.colour is colour]
            down = [t for t in mine if t.state == "down"]
            if not mine:
                notes.append(f"no {colour} server in backend {self.backend}")
            elif down:
                notes.append(f"{colour}: {len(down)} of {len(mine)} servers down by health check")
        if unnamed:
            notes.append("servers named after no colour: " + ", ".join(unnamed))
        return RouterState(self.kind, live, tuple(targets), "; ".join(notes))

    async def state(self) -> RouterState:
        servers = await self._servers()
        note = "" if self.state_file else "router.state_file not set: a reload reverts switches"
        return self._report(servers, note)

    async def switch(self, to: Colour) -> RouterState:
        servers = await self._servers()
        new = self._require(servers, to)
        # Ready first, then maint: for a moment both colours serve, never neither.
        # A weight left at 0 by set_weights would keep a ready server idle: restore it.
        ready = [self._state_cmd(s, "ready") for s in new]
        ready += [self._weight_cmd(s, "100%") for s in new if s.weight != s.initial_weight]
        await self._apply(ready)
        # Only take the old colour out once the new one is seen ready: whatever else
        # changed the backend meanwhile, this never leaves zero servers in service.
        now = self._of(await self._servers(), to)
        if not any(not s.maint and not s.drain for s in now):
            raise RouterError(f"{to} servers did not become ready; {to.other} left in service")
        await self._apply([self._state_cmd(s, "maint") for s in self._of(servers, to.other)])
        return await self._persist_and_report()

    async def drain(self, colour: Colour) -> RouterState:
        servers = await self._servers()
        await self._apply([self._state_cmd(s, "drain") for s in self._require(servers, colour)])
        return await self._persist_and_report()

    async def set_weights(self, weights: dict[Colour, int]) -> RouterState:
        for colour, weight in weights.items():
            if not 0 <= weight <= 256:
                raise RouterError(f"weight for {colour} must be 0-256, got {weight}")
        servers = await self._servers()
        commands: list[str] = []
        for colour, weight in weights.items():
            for server in self._require(servers, colour):
                commands.append(self._weight_cmd(server, weight))
                if weight > 0 and (server.maint or server.drain):
                    commands.append(self._state_cmd(server, "ready"))
        await self._apply(commands)
        return await self._persist_and_report()

    async def aclose(self) -> None:
        await self.executor.aclose()

    async def show(self) -> ServersState:
        """The whole ``show servers state`` (every backend), e.g. for diagnostics."""
        return await self.api.servers_state()
