"""The router interface every adapter implements, and what it reports."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from console.core.errors import RouterError
from console.core.models import Colour


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """One upstream the router knows about, and what the router does with it."""

    colour: Colour
    host: str
    address: str
    state: str
    """active (takes traffic), standby (ready, no traffic), drain, maint, down, unknown."""
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class RouterState:
    """What the router actually does, as opposed to what the control plane intends."""

    kind: str
    live: Colour | None
    """The colour taking traffic; None when neither or both do (a mixed state is drift)."""
    targets: tuple[RouteTarget, ...] = ()
    detail: str = ""
    """Anything the operator should read (e.g. 'agent heartbeat 0.4s old')."""


class Router(abc.ABC):
    """Moves traffic between the colours and reports where it goes."""

    kind: str

    @abc.abstractmethod
    async def state(self) -> RouterState:
        """What the router sends traffic to right now.

        Raises:
            RouterError: the router could not be asked.
        """

    @abc.abstractmethod
    async def switch(self, to: Colour) -> RouterState:
        """Send traffic to ``to`` (next request; in-flight ones finish) and report the state.

        Raises:
            RouterError: the change was refused or failed; the old routing stays.
        """

    async def drain(self, colour: Colour) -> RouterState:
        """Stop new traffic to ``colour`` while letting existing connections finish."""
        raise RouterError(f"router kind {self.kind!r} does not support drain")

    async def set_weights(self, weights: dict[Colour, int]) -> RouterState:
        """Split traffic by weight (0-256 per colour) where the router supports it."""
        raise RouterError(f"router kind {self.kind!r} does not support weights")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing
        """Release whatever the adapter holds."""
