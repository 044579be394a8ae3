"""The control plane: reachable, persistent, and what the router really does."""

from __future__ import annotations

from console.core.config import Config, redact_url
from console.core.control import ControlPlane
from console.core.doctor.model import Check, fail, ok, warn
from console.core.doctor.redis_hint import redis_fix
from console.core.errors import ConsoleError
from console.core.router.factory import build_router


async def check_control(config: Config, control: ControlPlane) -> list[Check]:
    """Control plane reachable (and persistent), then the router's real state."""
    where = redact_url(config.control.redis)
    try:
        rtt = await control.ping()
    except ConsoleError as e:
        return [
            fail("control", "control plane", str(e), redis_fix(str(e), "control.redis")),
            fail(
                "router",
                config.router.kind,
                "not checked: the control plane is unreachable",
                "fix the control plane first",
            ),
        ]
    checks = [ok("control", "control plane", f"{where} answers ({rtt:.1f} ms)")]
    try:
        persistence = await control.persistence()
    except ConsoleError as e:
        persistence = f"persistence not checked: {e}"
    if persistence:
        checks.append(
            warn(
                "control",
                "persistence",
                persistence,
                "run the control-plane Redis with appendonly yes (redis.conf or CONFIG SET)",
            )
        )
    else:
        checks.append(ok("control", "persistence", "the control-plane Redis keeps its data"))
    checks.append(await _router(config, control))
    return checks


async def _router(config: Config, control: ControlPlane) -> Check:
    kind = config.router.kind
    try:
        router = build_router(config, control)
    except ConsoleError as e:
        return fail("router", kind, str(e), "complete the [router] section")
    try:
        state = await router.state()
        active = await control.active()
    except ConsoleError as e:
        fix = (
            f"start the agent, which is the builtin router: bgconsole serve -c {config.path}"
            if kind == "builtin"
            else f"check the [router] section ({kind}) and that the router runs"
        )
        return fail("router", kind, f"cannot read what it does: {e}", fix)
    finally:
        await router.aclose()
    intended = active.colour if active is not None else None
    if state.live is None:
        fix = (
            "start the agent: bgconsole serve"
            if kind == "builtin"
            else "switch once to set a colour: bgconsole switch blue --yes"
        )
        detail = "reports no live colour"
        if state.detail:
            detail += f" ({state.detail})"
        return warn("router", kind, detail, fix)
    if intended is not None and state.live is not intended:
        return warn(
            "router",
            kind,
            f"sends traffic to {state.live}, but the control plane says {intended} (drift)",
            f"repair it with: bgconsole switch {intended} --yes",
        )
    said = "" if active is None else f", as the control plane says (epoch {active.epoch})"
    return ok("router", kind, f"sends traffic to {state.live}{said}")
