"""A held control-plane lock: renewed in the background, fenced, and loud when lost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from console.core.errors import LockLost
from console.core.models import LockInfo

TokenCheck = Callable[[LockInfo], Awaitable[bool]]


class HeldLock:
    """What :meth:`ControlPlane.holding` yields: the lock, and whether it is still ours.

    A lock has a short TTL so a crashed holder frees it soon; the holder renews it. If a
    renewal finds the lock gone (it expired while the holder was frozen, or someone took
    it), the holder must stop at its next safe point: every step that acts calls
    :meth:`check` (no I/O) or :meth:`verify` (asks the control plane) first.
    """

    def __init__(self, info: LockInfo, fence: int, still_ours: TokenCheck) -> None:
        self.info = info
        self.fence = fence
        """A number that grows with every acquisition of any lock of this app: a step can
        carry it so a late step from an older holder is recognisable."""
        self.lost: str | None = None
        """Why the lock is no longer ours; None while it is."""
        self._still_ours = still_ours

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def token(self) -> str:
        return self.info.token

    def mark_lost(self, why: str) -> None:
        """Remember (once) that the lock is gone."""
        if self.lost is None:
            self.lost = why

    def check(self) -> None:
        """Raise if a renewal already found the lock lost (cheap; call before each step).

        Raises:
            LockLost: the message says which lock and why.
        """
        if self.lost is not None:
            raise LockLost(f"lock lost: {self.lost}; stopped before the next step")

    async def verify(self) -> None:
        """Ask the control plane whether the lock is still ours before a step that acts.

        Raises:
            LockLost: it is not (expired or taken); the work must stop here.
            ControlPlaneUnavailable: the control plane cannot say.
        """
        self.check()
        if not await self._still_ours(self.info):
            self.mark_lost(f"{self.info.name!r} expired or was taken by someone else")
            self.check()
