"""The command router: operator-supplied shell templates for any other load balancer.

``switch_command`` is run with ``{colour}`` (the new live colour), ``{other}`` (the old
one) and ``{hosts}`` (the new colour's ``host:port`` list, space-separated) replaced by
shell-quoted values; ``{hosts}`` is therefore one shell word (split it with ``$1``-style
word splitting or ``for h in {hosts}`` inside ``sh -c`` if you need the parts).
``state_command`` prints the colour the router sends traffic to (``blue`` or ``green``;
``none`` or nothing means neither). Both run under ``sh`` with a time limit, locally or on
``[router] ssh``; a non-zero exit is reported with the last line of stderr.
"""

from __future__ import annotations

import shlex

from console.core.config import Config
from console.core.errors import BackendError, RouterError
from console.core.models import Colour
from console.core.remote_exec import CommandResult, Executor, LocalExecutor
from console.core.router.base import Router, RouterState, RouteTarget
from console.core.router.factory import host_address

_NONE_WORDS = frozenset({"", "none", "-", "mixed", "unknown"})


def expand(template: str, colour: Colour, hosts: list[str]) -> str:
    """The template with its placeholders replaced by shell-quoted values.

    Plain ``str.replace`` rather than ``str.format``: templates often hold JSON, whose
    braces ``format`` would try to interpret.
    """
    return (
        template.replace("{colour}", shlex.quote(colour.value))
        .replace("{other}", shlex.quote(colour.other.value))
        .replace("{hosts}", shlex.quote(" ".join(hosts)))
    )


def parse_colour(output: str) -> Colour | None:
    """The colour named on the last non-empty line of ``state_command``'s output.

    Raises:
        RouterError: that line names no colour.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    word = lines[-1].strip("'\"").lower() if lines else ""
    if word in _NONE_WORDS:
        return None
    try:
        return Colour.parse(word)
    except ValueError:
        raise RouterError(
            f"router.state_command printed {lines[-1]!r}; it must print blue, green or none"
        ) from None


class CommandRouter(Router):
    """Routes by running the operator's shell templates."""

    kind = "command"

    def __init__(
        self, config: Config, executor: Executor | None = None, *, time_limit: float = 60.0
    ) -> None:
        """Args:
        config: needs ``[router] switch_command``; ``state_command`` is optional.
        executor: where the commands run (default: this machine).
        time_limit: seconds each command may take before it is killed.
        """
        if not config.router.switch_command:
            raise RouterError("router.switch_command is not set (required when kind = 'command')")
        self.config = config
        self.switch_template = config.router.switch_command
        self.state_command = config.router.state_command
        self.executor = executor or LocalExecutor()
        self.time_limit = time_limit

    def _targets(self, live: Colour | None) -> tuple[RouteTarget, ...]:
        return tuple(
            RouteTarget(
                colour,
                host.name,
                host_address(host),
                "unknown" if live is None else ("active" if colour is live else "standby"),
            )
            for colour, host in self.config.all_hosts()
        )

    async def _run(self, key: str, command: str) -> CommandResult:
        try:
            result = await self.executor.run(command, self.time_limit)
        except BackendError as e:
            raise RouterError(f"router.{key}: {e}") from e
        if not result.ok:
            raise RouterError(
                f"router.{key} exited {result.exit_status}: {result.last_error_line()}"
            )
        return result

    async def state(self) -> RouterState:
        if not self.state_command:
            return RouterState(
                self.kind, None, self._targets(None), "router.state_command not set: unknown"
            )
        result = await self._run("state_command", self.state_command)
        live = parse_colour(result.stdout)
        detail = "" if live else "state_command reports no live colour"
        return RouterState(self.kind, live, self._targets(live), detail)

    async def switch(self, to: Colour) -> RouterState:
        hosts = [host_address(h) for h in self.config.env(to).hosts]
        await self._run("switch_command", expand(self.switch_template, to, hosts))
        if self.state_command:
            return await self.state()
        # Without a state command the switch command's success is all there is to go on.
        return RouterState(
            self.kind, to, self._targets(to), "router.state_command not set: assumed"
        )

    async def aclose(self) -> None:
        await self.executor.aclose()
