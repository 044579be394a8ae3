"""The operator's switch procedure: check, compare-and-set, route, confirm, verify.

Used by ``bgconsole switch`` and by the UI's switch key, so both behave the same:

1. read the intended live colour from the control plane (initialising it if unset);
2. if the target is already live, re-apply it only when the router disagrees (drift);
3. probe every host once; refuse a target with any failing host unless ``force``;
4. take the ``switch`` lock (waiting for a switch in progress to finish) and re-read the
   epoch: if it moved since step 1, someone else switched first, and this switch is
   refused with who won and where traffic now is. Two opposite switches at the same
   moment therefore have exactly one winner, never "both, in turn";
5. compare-and-set the active colour on its epoch, with a deadline on the control
   plane's own clock so a request stuck in a frozen Redis can never land later; if the
   answer is lost the switch finds out whether it committed before saying anything;
6. tell the router through :func:`~console.core.router_sync.apply_live` (fenced by the
   ``router`` lock and the epoch), then poll ``router.state()`` until it reports the
   target, within ``[router] confirm_timeout``;
7. send ``[router] verify_requests`` requests through the front door, each on a fresh
   connection, and require every answer to come from the target (``X-BG-Env``).

Once step 5 committed, the router is always told, whatever fails afterwards (the audit
trail, the publish); a failure after it records an event with outcome ``failed`` and
raises :class:`VerificationFailed` whose message says where traffic is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from console.core.config import Config
from console.core.control import ControlPlane
from console.core.errors import (
    ConflictError,
    ConsoleError,
    LockHeld,
    RouterError,
    SwitchOutcomeUnknown,
    VerificationFailed,
)
from console.core.failover import describe_host
from console.core.gates import hook_env, run_after, run_gates
from console.core.locks import HeldLock
from console.core.models import ActiveState, Colour, HealthSnapshot
from console.core.router.base import Router, RouterState
from console.core.router_sync import apply_live

Progress = Callable[[str], None]

ENV_HEADER = "X-BG-Env"
"""The response header naming the colour that served a request."""

_POLL_INTERVAL = 0.05
_VERIFY_TIMEOUT = 5.0
SWITCH_LOCK = "switch"
"""Held for a whole operator switch, so two switches never run at once."""
_SWITCH_LOCK_TTL = 15.0


class TargetUnhealthy(ConsoleError):
    """The switch was refused: the target colour has failing hosts (``--force`` overrides)."""


class HealthSource(Protocol):
    """What the switch needs from the health checker: one probe round."""

    async def check_all(self) -> HealthSnapshot:
        """Probe every host once."""
        ...


@dataclass(frozen=True, slots=True)
class VerifyAnswer:
    """One verification request through the front door."""

    status: int | None
    served_by: str | None
    """The ``X-BG-Env`` header of the answer; None when absent or no answer."""
    latency_ms: float | None
    error: str | None = None

    def describe(self) -> str:
        """``green 200 in 3 ms`` or the error."""
        if self.error is not None:
            return f"error: {self.error}"
        latency = f" in {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        return f"{self.served_by or 'no ' + ENV_HEADER} {self.status}{latency}"


@dataclass(frozen=True, slots=True)
class Verification:
    """The front-door check after a switch."""

    url: str
    expected: Colour
    answers: tuple[VerifyAnswer, ...] = ()

    @property
    def served_by_target(self) -> int:
        """Answers that came from the expected colour without a server error."""
        return sum(
            1
            for a in self.answers
            if a.served_by == self.expected.value and a.status is not None and a.status < 500
        )

    @property
    def ok(self) -> bool:
        """Every request was answered by the expected colour."""
        return self.served_by_target == len(self.answers)

    def describe(self) -> str:
        """``5/5 verification requests served by green``."""
        if not self.answers:
            return "verification skipped (verify_requests = 0)"
        text = (
            f"{self.served_by_target}/{len(self.answers)} verification requests "
            f"served by {self.expected}"
        )
        if not self.ok:
            others = sorted({a.describe() for a in self.answers if a.served_by != self.expected})
            others = others or sorted({a.describe() for a in self.answers})
            text += f" (got: {'; '.join(others[:3])})"
        return text


@dataclass(frozen=True, slots=True)
class SwitchResult:
    """What a switch did, for printing and for ``--json``."""

    before: Colour
    after: Colour
    epoch: int
    changed: bool
    """False when the target was already live (nothing was done)."""
    forced: bool = False
    target_health: dict[str, str] = field(default_factory=dict)
    """``<colour>/<host>`` -> the target's probes before the switch."""
    router_confirmed_s: float | None = None
    """Seconds from the control-plane change until the router reported the target."""
    router_detail: str = ""
    verification: Verification | None = None

    def summary(self) -> str:
        """One line: ``blue -> green (epoch 7): router confirmed in 0.12 s, 5/5 ...``."""
        if not self.changed:
            return f"{self.after} is already live (epoch {self.epoch}); nothing to do"
        parts = []
        if self.router_confirmed_s is not None:
            parts.append(f"router confirmed in {self.router_confirmed_s:.2f} s")
        if self.verification is not None:
            parts.append(self.verification.describe())
        forced = " [forced]" if self.forced else ""
        return f"{self.before} -> {self.after} (epoch {self.epoch}){forced}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        verification: dict[str, Any] | None = None
        if self.verification is not None:
            verification = {
                "url": self.verification.url,
                "ok": self.verification.ok,
                "served_by_target": self.verification.served_by_target,
                "requests": len(self.verification.answers),
                "answers": [a.describe() for a in self.verification.answers],
            }
        return {
            "before": self.before.value,
            "after": self.after.value,
            "epoch": self.epoch,
            "changed": self.changed,
            "forced": self.forced,
            "target_health": dict(self.target_health),
            "router_confirmed_s": self.router_confirmed_s,
            "router_detail": self.router_detail,
            "verification": verification,
            "summary": self.summary(),
        }


async def current_active(control: ControlPlane, router: Router) -> ActiveState:
    """The intended live colour; when never set, initialise it from what the router does."""
    state = await control.active()
    if state is not None:
        return state
    default = Colour.BLUE
    # Best effort: a first switch on an existing setup should not assume blue was live.
    with contextlib.suppress(ConsoleError, TimeoutError):
        async with asyncio.timeout(_VERIFY_TIMEOUT):
            default = (await router.state()).live or default
    return await control.ensure_active(default)


async def perform_switch(
    config: Config,
    control: ControlPlane,
    router: Router,
    health_checker: HealthSource,
    *,
    to: Colour,
    force: bool = False,
    reason: str = "",
    on_progress: Progress | None = None,
    skip_gates: bool = False,
) -> SwitchResult:
    """Move traffic to ``to`` and confirm it (see the module docstring for the steps).

    ``[[hook]]`` gates (``pre_switch``) run just before the compare-and-set, unless
    ``skip_gates`` (recorded); ``post_switch`` hooks run once it is verified.

    Raises:
        TargetUnhealthy: the target has failing hosts and ``force`` is false.
        GateFailed: a ``pre_switch`` gate did not exit 0; nothing changed.
        ConflictError: the control plane changed first (another switch or a failover);
            the message names who won and where traffic now is.
        SwitchOutcomeUnknown: the control plane stopped answering after the compare-and-set
            was sent and it could not be found out whether it committed (exit 3).
        VerificationFailed: switched in the control plane, but the router or the front
            door did not confirm it; the message says how to revert.
        ControlPlaneUnavailable: the control plane could not be reached.
    """
    say = on_progress or (lambda _line: None)
    active = await current_active(control, router)
    before = active.colour
    health: dict[str, str] = {}
    if before is not to:
        health = await _check_target(health_checker, control, before, to, force, reason, say)
    details = {"forced": str(force).lower(), **{f"target {k}": v for k, v in health.items()}}
    purpose = f"switch {before} -> {to}"

    async def locked(waited: bool) -> SwitchResult:
        # Whatever this switch saw must still hold: a switch that started while another
        # one was in progress never goes on to undo it, it is told what happened.
        now = await control.active()
        if now is None or now.epoch != active.epoch:
            raise await _overtaken(control, to, active, now)
        if waited and now.colour is not to:
            raise await _overtaken(control, to, active, now, in_progress=True)
        if before is to:
            return await _repair_drift(config, control, router, active, reason, say)
        return await _switch_locked(
            config, control, router, active, to, force, reason, health, details, say, skip_gates
        )

    if before is to and await control.lock_info(SWITCH_LOCK) is None:
        # Nobody is switching: "already live" needs no lock, and must not hold one that
        # a real switch starting at the same moment would then have to wait for.
        with contextlib.suppress(RouterError, TimeoutError):
            async with asyncio.timeout(_VERIFY_TIMEOUT):
                if (await router.state()).live is to:
                    say(f"{to} is already live (epoch {active.epoch})")
                    return SwitchResult(to, to, active.epoch, changed=False)
    entered = False
    try:
        async with _switch_lock(control, purpose, wait=0.0):
            entered = True
            return await locked(waited=False)
    except LockHeld:
        if entered:
            raise
    say("another switch is in progress: waiting for it to finish")
    try:
        async with _switch_lock(control, purpose, wait=config.router.confirm_timeout + 20.0):
            return await locked(waited=True)
    except LockHeld as e:
        raise ConflictError(f"switch to {to} refused: {e}") from None


def _switch_lock(
    control: ControlPlane, purpose: str, wait: float
) -> contextlib.AbstractAsyncContextManager[HeldLock]:
    return control.holding(
        SWITCH_LOCK, purpose, ttl=_SWITCH_LOCK_TTL, renew_every=_SWITCH_LOCK_TTL / 3, wait=wait
    )


async def _check_target(
    health_checker: HealthSource,
    control: ControlPlane,
    before: Colour,
    to: Colour,
    force: bool,
    reason: str,
    say: Progress,
) -> dict[str, str]:
    """Probe the target once; refuse it with failing hosts unless ``force``."""
    say(f"probing {to}")
    snapshot = await health_checker.check_all()
    health, failing = _target_health(snapshot, to)
    if failing and not force:
        what = f"{to} is not healthy ({'; '.join(failing[:3])})"
        await _record(
            control, f"switch {before} -> {to} refused: {what}", before.value, to, reason,
            outcome="refused", details=health,
        )  # fmt: skip
        raise TargetUnhealthy(f"{what}; use --force to switch anyway")
    if failing:
        say(f"{to} is not healthy ({'; '.join(failing[:3])}); switching anyway (--force)")
    else:
        say(f"{to} healthy: {len(health)}/{len(health)} hosts answered")
    return health


async def _switch_locked(
    config: Config,
    control: ControlPlane,
    router: Router,
    active: ActiveState,
    to: Colour,
    force: bool,
    reason: str,
    health: dict[str, str],
    details: dict[str, str],
    say: Progress,
    skip_gates: bool = False,
) -> SwitchResult:
    """Steps 5-7, holding the switch lock."""
    before = active.colour
    gates = await run_gates(
        config, control, before=before.value, to=to.value, epoch=active.epoch + 1,
        reason=reason, skip=skip_gates, say=say,
    )  # fmt: skip
    details = {**details, **gates}
    deadline = await control.server_time() + control.timeout
    try:
        state = await control.switch(
            to, expected_epoch=active.epoch, reason=reason, details=details, deadline=deadline
        )
    except SwitchOutcomeUnknown as e:
        raise SwitchOutcomeUnknown(
            f"switch {before} -> {to}: outcome UNKNOWN: the control plane stopped answering "
            f"after the request was sent ({e}); it cannot take effect after its deadline, "
            "so look at where traffic is with: bgconsole status"
        ) from None
    say(f"control plane: {before} -> {to} (epoch {state.epoch})")
    started = time.monotonic()

    try:
        confirmed = await _confirm_router(
            control, router, to, config.router.confirm_timeout, say, f"switch to {to}"
        )
    except VerificationFailed as e:
        where = await _where_traffic_is(control, router, state.epoch)
        await _record_failure(control, before, to, state.epoch, reason, f"{e}; {where}")
        raise VerificationFailed(f"{e}; {where}; {_revert_hint(before)}") from e
    confirmed_s = time.monotonic() - started
    say(f"router confirmed {to} in {confirmed_s:.2f} s")

    verification = await settle_front_door(config, to, started)
    result = SwitchResult(
        before,
        to,
        state.epoch,
        changed=True,
        forced=force,
        target_health=health,
        router_confirmed_s=round(confirmed_s, 3),
        router_detail=confirmed.detail,
        verification=verification,
    )
    if not verification.ok:
        where = await _where_traffic_is(control, router, state.epoch)
        what = f"switched to {to} but {verification.describe()} at {verification.url}; {where}"
        await _record_failure(control, before, to, state.epoch, reason, what)
        raise VerificationFailed(f"{what}; {_revert_hint(before)}")
    say(verification.describe())
    await _record(
        control,
        f"switch {before} -> {to} (epoch {state.epoch}) verified",
        before.value,
        to,
        reason,
        details={
            "router_confirmed_s": f"{confirmed_s:.3f}",
            "verify": verification.describe(),
            **gates,
        },
    )
    env = hook_env(
        config.console.name, before=before.value, to=to.value, epoch=state.epoch,
        actor=control.actor, reason=reason,
    )  # fmt: skip
    await run_after(config, control, "post_switch", env, say)
    return result


async def _overtaken(
    control: ControlPlane,
    to: Colour,
    seen: ActiveState,
    now: ActiveState | None,
    *,
    in_progress: bool = False,
) -> ConflictError:
    """The error for a switch that lost a race: who won, and where traffic now is.

    ``in_progress``: the other switch was already running when this one started (the
    epoch this one read may already be the other's).
    """
    if now is None:
        return ConflictError(
            f"switch to {to} refused: the control plane lost its live colour meanwhile; "
            "look with bgconsole status, then retry"
        )
    how = {"failover": "failed over", "failback": "failed back"}.get(now.kind, "switched")
    same = " (the colour you asked for)" if now.colour is to else ""
    if in_progress:
        seen = dataclasses.replace(seen, epoch=now.epoch - 1)
    await _record(
        control,
        f"switch to {to} refused: {now.actor} {how} to {now.colour} first "
        f"(epoch {seen.epoch} -> {now.epoch})",
        seen.colour.value,
        to,
        "",
        outcome="conflict",
    )
    return ConflictError(
        f"switch to {to} refused: {now.actor} {how} to {now.colour} first (epoch "
        f"{seen.epoch} -> {now.epoch}{', ' + repr(now.reason) if now.reason else ''}); "
        f"production now serves {now.colour}{same}; "
        "look, then retry"
    )


async def _where_traffic_is(control: ControlPlane, router: Router, epoch: int) -> str:
    """One sentence on where traffic is now, from the control plane and the router."""
    parts: list[str] = []
    try:
        now = await control.active()
        if now is None:
            parts.append("the control plane has no live colour")
        elif now.epoch != epoch:
            parts.append(
                f"control plane moved on: {now.colour} at epoch {now.epoch} by {now.actor}"
            )
        else:
            parts.append(f"control plane says {now.colour} (epoch {now.epoch})")
    except ConsoleError as e:
        parts.append(f"control plane unreadable ({e})")
    try:
        async with asyncio.timeout(_VERIFY_TIMEOUT):
            live = (await router.state()).live
        parts.append(f"router ({router.kind}) serves {live or 'no single colour'}")
    except (ConsoleError, TimeoutError) as e:
        parts.append(f"router ({router.kind}) unreadable ({e or 'timed out'})")
    return "; ".join(parts)


async def _repair_drift(
    config: Config,
    control: ControlPlane,
    router: Router,
    active: ActiveState,
    reason: str,
    say: Progress,
) -> SwitchResult:
    """The target is already intended live; make the router agree if it does not.

    Switching to the live colour is how an operator repairs drift (someone reloaded
    HAProxy without the state file, edited nginx by hand): the control plane is not
    touched, the router is told again and the front door verified.
    """
    to = active.colour
    try:
        actual: Colour | None = (await router.state()).live
        seen = f"reports {actual or 'no single colour'}"
    except RouterError as e:
        actual, seen = None, f"could not be read ({e})"
    if actual is to:
        say(f"{to} is already live (epoch {active.epoch})")
        return SwitchResult(to, to, active.epoch, changed=False)
    say(f"{to} is live in the control plane but the router {seen}: re-applying {to}")
    started = time.monotonic()
    try:
        confirmed = await _confirm_router(
            control, router, to, config.router.confirm_timeout, say, f"drift repair to {to}"
        )
        verification = await settle_front_door(config, to, started)
        if not verification.ok:
            raise VerificationFailed(f"{verification.describe()} at {verification.url}")
    except VerificationFailed as e:
        await _record_failure(control, to, to, active.epoch, reason, f"drift repair: {e}")
        raise
    confirmed_s = time.monotonic() - started
    await _record(
        control,
        f"router drift repaired: it {seen}, now {to} (epoch {active.epoch})",
        actual.value if actual else "",
        to,
        reason,
        details={"verify": verification.describe()},
    )
    say(verification.describe())
    return SwitchResult(
        to,
        to,
        active.epoch,
        changed=True,
        router_confirmed_s=round(confirmed_s, 3),
        router_detail=confirmed.detail,
        verification=verification,
    )


def _target_health(snapshot: HealthSnapshot, to: Colour) -> tuple[dict[str, str], list[str]]:
    """Each target host's last probe, and the ones failing (last probe not ok)."""
    env = snapshot.envs.get(to)
    if env is None or not env.hosts:
        return {}, [f"{to}: no health information"]
    health: dict[str, str] = {}
    failing: list[str] = []
    for host in env.hosts:
        key = f"{to}/{host.host}"
        health[key] = describe_host(host)
        if host.last is None or not host.last.ok:
            error = host.last.error if host.last is not None else None
            failing.append(f"{key}: {error or 'no answer'}")
    return health, failing


async def _confirm_router(
    control: ControlPlane, router: Router, to: Colour, limit: float, say: Progress, purpose: str
) -> RouterState:
    """Tell the router the control plane's colour (fenced) and poll until it reports ``to``.

    Raises:
        VerificationFailed: the router refused, failed, or did not confirm in time, or the
            control plane moved on to another colour meanwhile.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    say(f"router ({router.kind}): switching to {to}")
    try:
        async with asyncio.timeout(limit):
            applied = await apply_live(
                control, router, purpose=f"{purpose} by {control.actor}", wait=limit, fallback=to
            )
    except TimeoutError:
        raise VerificationFailed(
            f"router ({router.kind}) did not finish the switch within {limit:g} s"
        ) from None
    except (RouterError, LockHeld) as e:
        raise VerificationFailed(f"router ({router.kind}) failed the switch: {e}") from e
    if applied.state is not None and applied.state.colour is not to:
        raise VerificationFailed(
            f"the control plane moved on to {applied.state.colour} (epoch "
            f"{applied.state.epoch} by {applied.state.actor}) before the router was told; "
            f"the router now serves {applied.state.colour}"
        )
    if not applied.fenced:
        say("control plane unreadable: router told without the router lock")
    state = applied.router
    last_error = ""
    while state.live is not to:
        remaining = deadline - loop.time()
        if remaining <= 0:
            seen = last_error or f"it reports {state.live or 'no single colour'}"
            raise VerificationFailed(
                f"router ({router.kind}) did not confirm {to} within {limit:g} s ({seen})"
            )
        await asyncio.sleep(min(_POLL_INTERVAL, remaining))
        try:
            async with asyncio.timeout(max(remaining, _POLL_INTERVAL)):
                state = await router.state()
            last_error = ""
        except (RouterError, TimeoutError) as e:
            # A router that is reloading may not answer for a moment: keep asking.
            last_error = str(e) or "state query timed out"
    return state


async def settle_front_door(config: Config, to: Colour, started: float) -> Verification:
    """Verify through the front door, retrying until ``confirm_timeout`` from ``started``.

    Some routers report the new colour before every worker serves it: nginx answers
    from old workers for ~100 ms after a graceful reload. A round with any answer from
    the old colour is repeated (every 50 ms) until a whole round comes from the target
    or the time is up; the last round is what gets reported.
    """
    loop_deadline = started + config.router.confirm_timeout
    while True:
        verification = await verify_front_door(config, to, config.router.verify_requests)
        if verification.ok or time.monotonic() >= loop_deadline:
            return verification
        await asyncio.sleep(_POLL_INTERVAL)


async def verify_front_door(config: Config, to: Colour, count: int) -> Verification:
    """Send ``count`` GETs through each front door; each must be served by ``to``.

    Each request uses a fresh connection, so a keep-alive connection pinned to the old
    colour (nginx keeps them across a reload) cannot make a good switch look bad or a bad
    one look good. With several routers (``[[router]]``) every front door is checked, and
    an answer names the router it came through.
    """
    path = config.env(to).hosts[0].health_path if config.env(to).hosts else "/"
    doors = [(rc.name, rc.front_door + path) for rc in config.all_routers]
    answers: list[VerifyAnswer] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    timeout = min(_VERIFY_TIMEOUT, config.router.confirm_timeout)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        for name, url in doors:
            for _ in range(count):
                answer = await _verify_once(client, url, timeout)
                if len(doors) > 1 and (answer.error or answer.served_by != to.value):
                    answer = dataclasses.replace(answer, error=f"{name}: {answer.describe()}")
                answers.append(answer)
    return Verification(", ".join(url for _, url in doors), to, tuple(answers))


async def _verify_once(client: httpx.AsyncClient, url: str, limit: float) -> VerifyAnswer:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            response = await client.get(url, headers={"Connection": "close"})
    except TimeoutError:
        return VerifyAnswer(None, None, None, f"no answer within {limit:g} s")
    except httpx.HTTPError as e:
        return VerifyAnswer(None, None, None, _short(e))
    latency = (time.perf_counter() - started) * 1000
    served_by = response.headers.get(ENV_HEADER)
    return VerifyAnswer(response.status_code, served_by, round(latency, 2))


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:120]


def _revert_hint(before: Colour) -> str:
    return f"traffic may still go to {before}; revert with: bgconsole switch {before} --force"


async def _record_failure(
    control: ControlPlane,
    before: Colour,
    to: Colour,
    epoch: int,
    reason: str,
    what: str,
    details: Mapping[str, str] | None = None,
) -> None:
    """Record the failed confirmation; a control plane that fails now must not hide it."""
    await _record(
        control,
        f"switch {before} -> {to} (epoch {epoch}) not confirmed: {what}",
        before.value,
        to,
        reason,
        outcome="failed",
        details=details,
    )


async def _record(
    control: ControlPlane,
    summary: str,
    before: str,
    to: Colour,
    reason: str,
    *,
    outcome: str = "ok",
    details: Mapping[str, str] | None = None,
) -> None:
    """A ``switch`` event, best effort: the audit trail failing must not undo a switch or
    hide why one was refused."""
    with contextlib.suppress(ConsoleError):
        await control.record(
            "switch", summary, before=before, after=to.value, reason=reason, outcome=outcome,
            details=details,
        )  # fmt: skip
