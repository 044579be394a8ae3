"""The nginx router: rewrites an upstream include file atomically and reloads nginx.

The include file holds ``upstream <router.upstream_name> { server host:port; ... }`` with
only the live colour's hosts, under a header comment naming the colour, the time and who
wrote it. Other directives inside the block (``keepalive``, ``least_conn``, ...) and
anything outside it are kept. A switch writes the new file (temp name, fsync, rename),
runs ``test_command`` then ``reload_command``; if either fails the old file is put back
(and nginx reloaded again if the reload itself failed), so the old config keeps serving.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from console.core.actor import current_actor
from console.core.config import Config
from console.core.errors import BackendError, RouterError
from console.core.models import Colour
from console.core.remote_exec import CommandResult, Executor, LocalExecutor
from console.core.router.base import Router, RouterState, RouteTarget
from console.core.router.factory import colour_addresses, host_address

HEADER_PREFIX = "# managed by bgconsole:"
_HEADER = re.compile(r"^# managed by bgconsole: live=(?P<colour>\w+).*$", re.MULTILINE)
_SERVER = re.compile(r"^\s*server\s+(?P<address>\S+?)(?P<params>(\s+[^;]*)?);", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    """One ``server`` line of the upstream block."""

    address: str
    params: tuple[str, ...] = ()


def find_block(text: str, name: str) -> re.Match[str] | None:
    """The ``upstream <name> { ... }`` block (upstream blocks hold no nested braces)."""
    return re.search(rf"upstream\s+{re.escape(name)}\s*\{{(?P<body>[^}}]*)\}}", text)


def parse_servers(body: str) -> tuple[UpstreamServer, ...]:
    """The ``server`` lines of an upstream block body, comments ignored."""
    without_comments = re.sub(r"#[^\n]*", "", body)
    return tuple(
        UpstreamServer(m["address"], tuple(m["params"].split()))
        for m in _SERVER.finditer(without_comments)
    )


def render(old: str | None, name: str, addresses: list[str], header: str) -> str:
    """The new include file: ``old`` with its block's servers replaced and a new header.

    Raises:
        RouterError: ``old`` exists but has no ``upstream <name>`` block to rewrite.
    """
    servers = "".join(f"    server {address};\n" for address in addresses)
    if not old or not old.strip():
        return f"{header}\nupstream {name} {{\n{servers}}}\n"
    block = find_block(old, name)
    if block is None:
        raise RouterError(f"the upstream file has no 'upstream {name} {{ ... }}' block to rewrite")
    kept = "".join(
        f"{line}\n"
        for line in block["body"].splitlines()
        if line.strip() and not re.match(r"\s*server\s", line)
    )
    text = f"{old[: block.start()]}upstream {name} {{\n{servers}{kept}}}{old[block.end() :]}"
    text = "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith(HEADER_PREFIX)
    )
    return f"{header}\n{text.lstrip()}"


class NginxRouter(Router):
    """Routes by rewriting nginx's upstream include file and reloading nginx."""

    kind = "nginx"

    def __init__(
        self, config: Config, executor: Executor | None = None, *, time_limit: float = 30.0
    ) -> None:
        """Args:
        config: needs ``[router] upstream_file``; also upstream_name, test/reload commands.
        executor: where the file and commands are (default: this machine).
        time_limit: seconds the test and reload commands may each take.
        """
        if not config.router.upstream_file:
            raise RouterError("router.upstream_file is not set (required when kind = 'nginx')")
        self.config = config
        self.path = config.router.upstream_file
        self.name = config.router.upstream_name
        self.executor = executor or LocalExecutor()
        self.time_limit = time_limit
        self._addresses = colour_addresses(config)

    async def _read(self) -> str | None:
        try:
            data = await self.executor.read_file(self.path)
        except BackendError as e:
            raise RouterError(str(e)) from e
        return None if data is None else data.decode(errors="replace")

    def _report(self, text: str) -> RouterState:
        block = find_block(text, self.name)
        if block is None:
            raise RouterError(f"{self.path} has no 'upstream {self.name} {{ ... }}' block")
        targets: list[RouteTarget] = []
        notes: list[str] = []
        listed: set[str] = set()
        for server in parse_servers(block["body"]):
            known = self._addresses.get(server.address)
            if known is None:
                notes.append(f"{server.address} belongs to no environment")
                continue
            colour, host = known
            listed.add(server.address)
            state = "active"
            if "down" in server.params:
                state = "maint"
            elif "backup" in server.params:
                state = "standby"
            targets.append(RouteTarget(colour, host.name, server.address, state))
        # Hosts missing from the file get no traffic: show them as stand-by.
        for colour, host in self.config.all_hosts():
            if host_address(host) not in listed:
                targets.append(RouteTarget(colour, host.name, host_address(host), "standby"))
        taking = {t.colour for t in targets if t.state == "active"}
        live = next(iter(taking)) if len(taking) == 1 else None
        if not taking:
            notes.append(f"upstream {self.name} lists no host of either colour")
        elif len(taking) > 1:
            notes.append(f"upstream {self.name} lists hosts of both colours")
        header = _HEADER.search(text)
        if header and live is not None and header["colour"] != live.value:
            notes.append(f"header says live={header['colour']} but the servers are {live}'s")
        return RouterState(self.kind, live, tuple(targets), "; ".join(notes))

    async def state(self) -> RouterState:
        text = await self._read()
        if text is None:
            raise RouterError(f"{self.path} does not exist (router.upstream_file)")
        return self._report(text)

    async def _run(self, command: str) -> CommandResult:
        try:
            return await self.executor.run(command, self.time_limit)
        except BackendError as e:
            return CommandResult(command, -1, "", str(e))

    async def switch(self, to: Colour) -> RouterState:
        old = await self._read()
        addresses = [host_address(h) for h in self.config.env(to).hosts]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        header = f"{HEADER_PREFIX} live={to}, written at {stamp} by {current_actor()}"
        new = render(old, self.name, addresses, header)
        try:
            await self.executor.write_file(self.path, new.encode())
        except BackendError as e:
            raise RouterError(f"cannot write the nginx upstream file: {e}") from e
        if self.config.router.test_command:
            tested = await self._run(self.config.router.test_command)
            if not tested.ok:
                restored = await self._restore(old, reload=False)
                raise RouterError(self._failure("test", tested, old, restored))
        reloaded = await self._run(self.config.router.reload_command)
        if not reloaded.ok:
            restored = await self._restore(old, reload=True)
            raise RouterError(self._failure("reload", reloaded, old, restored))
        return self._report(new)

    async def _restore(self, old: str | None, *, reload: bool) -> bool:
        """Put the previous file back; reload again when a failed reload may have half-run.

        Returns whether the old file is back.
        """
        if old is None:
            return False
        try:
            await self.executor.write_file(self.path, old.encode())
        except BackendError:
            return False
        if reload:
            await self._run(self.config.router.reload_command)
        return True

    def _failure(self, step: str, result: CommandResult, old: str | None, restored: bool) -> str:
        if restored:
            after = f"{self.path} restored, the old config keeps serving"
        elif old is None:
            after = f"{self.path} did not exist before; fix or remove it before the next reload"
        else:
            after = f"could NOT restore {self.path}; fix it before the next nginx reload"
        return f"nginx {step} failed ({result.first_error_line()}); {after}"

    async def aclose(self) -> None:
        await self.executor.aclose()
