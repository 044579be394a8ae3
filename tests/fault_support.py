"""Shared helpers for the fault suite: an in-process agent and waiting for conditions."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from servers import HttpBackend, free_port

from console.core.agent import Agent
from console.core.agent_log import AgentLog
from console.core.config import Config, parse_config


def agent_config(
    redis_url: str,
    blue: HttpBackend,
    green: HttpBackend,
    *,
    router: dict[str, Any] | None = None,
    **failover: Any,
) -> Config:
    """A fast-moving configuration: 0.1 s probes, 2 failures to fall, no dwell."""
    return parse_config(
        {
            "console": {"name": "shop"},
            "control": {"redis": redis_url, "timeout": 0.5},
            "router": router or {"kind": "builtin", "listen": f"127.0.0.1:{free_port()}"},
            "failover": {
                "interval": 0.1,
                "timeout": 0.3,
                "fall": 2,
                "rise": 1,
                "min_dwell": 0.0,
                **failover,
            },
            "agent": {"heartbeat_interval": 0.2, "leader_lease": 2.0},
            "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
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


class Running:
    """An agent running as a task in this event loop, with a client for its proxy."""

    def __init__(self, agent: Agent, task: asyncio.Task[None], log: io.StringIO) -> None:
        self.agent = agent
        self.task = task
        self.log = log
        self.http = httpx.AsyncClient(base_url=f"http://{agent.address}", timeout=5.0)

    async def colour(self) -> str | None:
        """The colour that served a GET through the proxy (None: no good answer)."""
        try:
            response = await self.http.get("/")
        except httpx.HTTPError:
            return None
        return response.headers.get("x-bg-env") if response.status_code == 200 else None

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.http.aclose()


async def start_agent(config: Config, actor: str | None = None) -> Running:
    """Start an agent (proxy bound, control plane read once) and run it as a task."""
    log = io.StringIO()
    agent = Agent(config, log=AgentLog("logfmt", log), grace=1.0, actor=actor)
    await agent.start()
    return Running(agent, asyncio.create_task(agent.run()), log)
