"""The builtin router as consoles see it: the agent's proxy, read through its heartbeats.

The proxy itself runs inside ``bgconsole serve`` (see :mod:`console.core.agent`); it
follows the control plane's active colour on its own (pub/sub, within milliseconds). So a
switch here has nothing to do beyond what the control plane already did, and the state is
what the agents say they serve.
"""

from __future__ import annotations

from console.core.config import Config
from console.core.control import ControlPlane
from console.core.errors import RouterError
from console.core.models import AgentHeartbeat, Colour
from console.core.router.base import Router, RouterState, RouteTarget


class BuiltinRouter(Router):
    """Reports what the running agent(s) serve; switching is the control plane's job."""

    kind = "builtin"

    def __init__(self, config: Config, control: ControlPlane) -> None:
        self.config = config
        self.control = control

    async def _beats(self) -> list[AgentHeartbeat]:
        beats = [b for b in await self.control.agents() if b.router_kind == "builtin"]
        if not beats:
            raise RouterError("no agent is running: start `bgconsole serve`")
        return beats

    async def state(self) -> RouterState:
        """The colour the agents route to; None when they disagree (drift)."""
        beats = await self._beats()
        now = await self.control.clock()
        serving = {b.serving for b in beats}
        live: Colour | None = None
        if len(serving) == 1:
            try:
                live = Colour(serving.pop())
            except ValueError:
                live = None
        targets = tuple(
            RouteTarget(
                colour=colour,
                host=host.name,
                address=host.url,
                state="active" if colour is live else "standby",
            )
            for colour, host in self.config.all_hosts()
        )
        detail = "; ".join(
            f"{b.actor}{' (leader)' if b.leader else ''} serves {b.serving}, "
            f"heartbeat {max(0.0, now - b.at):.1f}s old"
            for b in beats
        )
        return RouterState(kind=self.kind, live=live, targets=targets, detail=detail)

    async def switch(self, to: Colour) -> RouterState:
        """Nothing to do: the agent follows the control plane; report what it serves now."""
        return await self.state()
