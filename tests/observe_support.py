"""Helpers for the metrics, notification and gate tests (issue 16): an agent config on
real servers, a running agent, and waiting for a condition."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from servers import HttpBackend, free_port

from console.core.agent import Agent
from console.core.agent_log import AgentLog
from console.core.config import Config, parse_config


def observed_config(redis_url: str, blue: HttpBackend, green: HttpBackend, **extra: Any) -> Config:
    """A builtin-router agent config with fast probes, plus ``extra`` top-level tables."""
    agent = {"heartbeat_interval": 0.2, "leader_lease": 2.0, **extra.pop("agent", {})}
    return parse_config(
        {
            "console": {"name": "shop"},
            "control": {"redis": redis_url, "timeout": 0.5},
            "router": {"kind": "builtin", "listen": f"127.0.0.1:{free_port()}"},
            "failover": {"interval": 0.1, "timeout": 0.3, "fall": 2, "rise": 1, "min_dwell": 0.0},
            "agent": agent,
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
            **extra,
        }
    )


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 5.0) -> float:
    """Wait until ``check()`` is true; return how long it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@asynccontextmanager
async def running_agent(config: Config, actor: str | None = None) -> AsyncIterator[Agent]:
    """An agent started and running as a task; cancelled (and awaited) on exit."""
    # Port 0: several agents of one config can run side by side (agent.address has it).
    agent = Agent(
        config,
        log=AgentLog("logfmt", io.StringIO()),
        grace=0.5,
        actor=actor,
        listen="127.0.0.1:0",
    )
    await agent.start()
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
