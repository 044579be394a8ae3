"""``bgconsole serve``: run the agent (health monitor, failover, builtin proxy) until stopped."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from console.cli.argtypes import listen_address, seconds
from console.cli.common import EXIT_OK, SubParsers, add_config_option, config_from
from console.core.agent import Agent
from console.core.errors import ConsoleError


def register(subparsers: SubParsers) -> None:
    """Add the ``serve`` verb."""
    parser = subparsers.add_parser(
        "serve",
        help="run the agent: health monitor, automatic failover, builtin reverse proxy",
        description=(
            "Run the long-lived agent. It probes both colours, fails over automatically "
            "when armed and leader, publishes a heartbeat, and with router.kind = "
            '"builtin" serves traffic on router.listen. Logs one line per event to stderr. '
            "SIGTERM or SIGINT stops it cleanly (exit 0)."
        ),
    )
    add_config_option(parser)
    parser.add_argument(
        "--listen",
        type=listen_address,
        metavar="HOST:PORT",
        help="override router.listen for the builtin proxy",
    )
    parser.add_argument(
        "--grace",
        type=seconds(0, 3600),
        default=5.0,
        metavar="SECONDS",
        help="how long requests in flight may take to finish on shutdown (default 5)",
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    config = config_from(args)
    agent = Agent(config, grace=args.grace, listen=args.listen)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    try:
        try:
            await agent.start()
        except BaseException:
            await agent.aclose()
            raise
        if agent.address is not None:
            print(f"bgconsole serve: proxy listening on http://{agent.address}", flush=True)
        else:
            print(f"bgconsole serve: monitoring for router kind {config.router.kind!r}", flush=True)
        task = asyncio.create_task(agent.run())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stopper.cancel()
            error = task.exception()
            if error is None:
                return EXIT_OK
            # The agent only ends by itself on a bug; say so in one line, no traceback.
            raise ConsoleError(f"agent stopped: {_first(error)}") from error
        task.cancel()
        # Bounded: systemd waits TimeoutStopSec and then SIGKILLs; better to finish first.
        done, _ = await asyncio.wait({task}, timeout=args.grace + 5.0)
        if not done:
            print("bgconsole serve: shutdown did not finish in time", file=sys.stderr)
        return EXIT_OK
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
        sys.stdout.flush()


def _first(error: BaseException) -> str:
    """The first real error inside (possibly nested) exception groups, as one line."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _dump_tasks() -> None:
    """SIGUSR1: write every asyncio task's stack to stderr (to see what a stuck agent waits on)."""
    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()}: {task.get_coro()!r}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()
