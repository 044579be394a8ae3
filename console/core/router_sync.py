"""Bring a router in line with the control plane, fenced so a stale write never wins.

Every router write (an operator's switch, the agent's failover, the agent's drift
repair) goes through :func:`apply_live`: under the control plane's ``router`` lock it
reads the live colour *at that moment* and tells the router that colour, then reads the
epoch again. Two writers therefore never interleave their steps (HAProxy's "ready new,
maint old" from two opposite switches could leave both colours in maintenance), and a
writer whose switch was overtaken applies the newer colour, not its own: the router ends
on the control plane's colour whatever the order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from console.core.control import ControlPlane
from console.core.errors import ControlPlaneUnavailable, RouterError
from console.core.models import ActiveState, Colour
from console.core.router.base import Router, RouterState

ROUTER_LOCK = "router"
_LOCK_TTL = 30.0
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Applied:
    """What :func:`apply_live` told the router."""

    state: ActiveState | None
    """The control plane's state that was applied (None: applied unfenced, see below)."""
    router: RouterState
    fenced: bool
    """False when the control plane could not be read and ``fallback`` was applied."""


async def apply_live(
    control: ControlPlane,
    router: Router,
    *,
    purpose: str,
    wait: float,
    fallback: Colour | None = None,
) -> Applied:
    """Tell ``router`` the control plane's current live colour, under the router lock.

    Args:
        purpose: shown to whoever finds the lock held (``switch to green by alice``).
        wait: seconds to wait for another writer to finish.
        fallback: the colour to apply without the lock when the control plane cannot be
            read at all; a switch that committed must still reach the router.

    Raises:
        RouterError: the router refused or failed the change.
        LockHeld: another writer held the router lock for longer than ``wait``.
        ControlPlaneUnavailable: the control plane is unreachable and no fallback given.
    """
    try:
        async with control.holding(
            ROUTER_LOCK, purpose, ttl=_LOCK_TTL, renew_every=_LOCK_TTL / 3, wait=wait
        ) as held:
            for _ in range(_ATTEMPTS):
                state = await control.active()
                if state is None:
                    raise ControlPlaneUnavailable("the control plane has no live colour")
                held.check()
                routed = await router.switch(state.colour)
                after = await control.active()
                if after is not None and after.epoch == state.epoch:
                    return Applied(state, routed, fenced=True)
            raise RouterError("the live colour kept changing while the router was being told")
    except ControlPlaneUnavailable:
        if fallback is None:
            raise
    return Applied(None, await router.switch(fallback), fenced=False)


async def wait_for_router(router: Router, colour: Colour, limit: float) -> RouterState:
    """Poll the router until it reports ``colour``; its last state when time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    state = await router.state()
    while state.live is not colour and loop.time() < deadline:
        await asyncio.sleep(0.05)
        try:
            state = await router.state()
        except RouterError:
            continue
    return state
