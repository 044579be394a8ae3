"""``diagnose``: every check of a configuration against the real world, concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from console.core.config import Config
from console.core.control import ControlPlane
from console.core.doctor.control import check_control
from console.core.doctor.data import check_data
from console.core.doctor.flags import check_flags
from console.core.doctor.health import check_health
from console.core.doctor.model import Check, Report, fail
from console.core.doctor.placeholders import check_placeholders
from console.core.doctor.ssh import check_ssh
from console.core.doctor.steps import check_steps
from console.core.ssh import SshPool

AREA_TIMEOUT = 30.0
"""A backstop per area: every call inside is bounded already; this one says which hung."""


async def _guarded(area: str, job: Awaitable[list[Check]]) -> list[Check]:
    """An area's checks; a hang or a bug becomes a failed check, never a crash."""
    try:
        async with asyncio.timeout(AREA_TIMEOUT):
            return await job
    except TimeoutError:
        return [fail(area, area, f"no result within {AREA_TIMEOUT:g} s", "run doctor again")]
    except Exception as e:  # one broken check must not hide the others
        return [
            fail(
                area,
                area,
                f"the check itself failed: {type(e).__name__}: {e}",
                "please report it (BGCONSOLE_DEBUG=1 shows more)",
            )
        ]


async def diagnose(config: Config) -> Report:
    """Check ``config`` against the control plane, the hosts, their Redis and the router.

    Static checks first (placeholders, deploy steps), then the live ones, all areas and
    all hosts at once: a two-host setup takes about as long as its slowest host.
    """
    started = time.monotonic()
    control = ControlPlane.from_config(config.control, config.console.name)
    pool = SshPool(config.ssh)
    try:
        static = check_placeholders(config) + check_steps(config)
        live = await asyncio.gather(
            _guarded("control", check_control(config, control)),
            _guarded("health", check_health(config)),
            _guarded("ssh", check_ssh(config, pool)),
            _guarded("flags", check_flags(config)),
            _guarded("data", check_data(config, pool)),
        )
    finally:
        await pool.aclose()
        await control.aclose()
    checks = [*static, *(c for area in live for c in area)]
    return Report(tuple(checks), time.monotonic() - started)
