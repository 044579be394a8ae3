"""Several routers of one front door (``[[router]]``), switched and read as one.

A switch applies to every router at once and confirms each; a router that fails is
named, and the others are still switched (traffic that reaches them must not stay on the
old colour because a sibling is down). The leader agent's reconcile loop then brings the
failed one in line when it answers again. The state has a live colour only when every
router agrees: one that lags or cannot be read is drift, and the detail says which.
"""

from __future__ import annotations

import asyncio

from console.core.errors import ConsoleError, RouterError
from console.core.models import Colour
from console.core.router.base import Router, RouterState, RouteTarget


class MultiRouter(Router):
    """Fans every operation out to named routers and reports per router."""

    kind = "multi"

    def __init__(self, routers: list[tuple[str, Router]]) -> None:
        self.routers = routers

    async def state(self) -> RouterState:
        results = await asyncio.gather(
            *(router.state() for _, router in self.routers), return_exceptions=True
        )
        return self._combine(results)

    async def switch(self, to: Colour) -> RouterState:
        results = await asyncio.gather(
            *(router.switch(to) for _, router in self.routers), return_exceptions=True
        )
        combined = self._combine(results)
        failed = [
            f"{name}: {result}"
            for (name, _), result in zip(self.routers, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed:
            done = len(self.routers) - len(failed)
            raise RouterError(
                f"{done}/{len(self.routers)} routers switched to {to}; failed: " + "; ".join(failed)
            )
        return combined

    def _combine(self, results: list[RouterState | BaseException]) -> RouterState:
        lives: set[Colour | None] = set()
        parts: list[str] = []
        targets: list[RouteTarget] = []
        for (name, _), result in zip(self.routers, results, strict=True):
            if isinstance(result, ConsoleError):
                lives.add(None)
                parts.append(f"{name} ERROR: {result}")
            elif isinstance(result, BaseException):
                raise result
            else:
                lives.add(result.live)
                targets.extend(result.targets)
                serving = result.live.value if result.live else "no single colour"
                parts.append(f"{name} → {serving}")
        agreed = next(iter(lives)) if len(lives) == 1 else None
        return RouterState(self.kind, agreed, tuple(targets), "; ".join(parts))

    async def aclose(self) -> None:
        for _, router in self.routers:
            await router.aclose()
