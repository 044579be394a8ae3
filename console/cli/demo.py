"""``bgconsole demo``: the whole blue-green workflow on one machine, no setup."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from console.cli.common import EXIT_OK, SubParsers
from console.demo.sandbox import Sandbox
from console.demo.tour import SandboxInfo, summary, tour

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Each stops the sandbox and removes its files; SIGHUP is the terminal window closing."""

OpenConsole = Callable[[SandboxInfo], Awaitable[None]]
"""Opens the terminal UI on a sandbox and returns when the operator quits it."""


def register(subparsers: SubParsers) -> None:
    """Add the ``demo`` verb."""
    parser = subparsers.add_parser(
        "demo",
        help="a local blue-green sandbox to try everything on (no setup)",
        description=(
            "Start a sandbox on this machine: two hosts (blue, green) each running a sample "
            "web app with its own SQLite database, flags Redis, access log and SSH server; "
            "the control-plane Redis; the agent with the built-in router; and a trickle of "
            "traffic. Prints its config path (use it with -c from another terminal), then "
            "opens the console on it: t shows the config path, the command prefix and a "
            "guided tour; q quits. Quitting the console, Ctrl+C, SIGTERM or closing the "
            "terminal stops everything it started and removes its files."
        ),
    )
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="build the sandbox in DIR (new or empty) instead of a temp dir",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the sandbox's files when it stops"
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="only run the sandbox (print config path and URLs) until Ctrl+C / SIGTERM",
    )
    parser.add_argument(
        "--no-traffic", action="store_true", help="do not generate traffic through the router"
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Run the demo and open the console on it (``--no-console``: the sandbox only)."""
    if args.no_console:
        return await run_demo(args, None)
    return await run_demo(args, _run_console, preload=_load_ui)


def _load_ui() -> None:
    """Import the UI's code while the agent's process imports its own (two cores busy
    instead of one). Not in a thread: a first import compiles the modules, holding the
    GIL long enough to starve the event loop's Redis calls into timeouts. --no-console,
    and every other verb, never loads Textual."""
    importlib.import_module("console.app")


async def _run_console(info: SandboxInfo) -> None:
    """The console on the sandbox, with its Tour screen (key t)."""
    from console.app import ConsoleApp
    from console.core.config import load_config
    from console.core.services import Services

    services = Services.build(load_config(info.config_path))
    try:
        await ConsoleApp(services, close_services=False, tour=info).run_async()
    finally:
        await services.aclose()


async def run_demo(
    args: argparse.Namespace,
    open_console: OpenConsole | None,
    preload: Callable[[], object] | None = None,
) -> int:
    """Start the sandbox, then open the console on it or wait for Ctrl+C / SIGTERM.

    Args:
        args: the parsed ``demo`` arguments (dir, keep, no_console, no_traffic).
        open_console: opens the UI on the sandbox and returns when it is quit; None
            (or ``--no-console``) prints the guided tour and waits for a signal instead.
        preload: run while the agent's process loads (see :meth:`Sandbox.start`).

    Returns:
        0 once everything is stopped (and removed unless --keep).
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    sandbox = Sandbox(args.dir, keep=args.keep, traffic=not args.no_traffic)
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        starting = asyncio.create_task(sandbox.start(while_agent_loads=preload))
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # Interrupted while starting: stop whatever had started, quietly.
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return EXIT_OK
        info = starting.result()  # raises the ConsoleError of a failed start
        _print(summary(info, sandbox.startup_seconds))
        if open_console is not None and not args.no_console:
            console: asyncio.Future[None] = asyncio.ensure_future(open_console(info))
            waiting: set[asyncio.Future[Any]] = {console, stop_wait}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            console.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await console
        else:
            _print(tour(info))
            _print("\nRunning; Ctrl+C stops the sandbox" + _cleanup_note(args.keep, info.directory))
            await _watch(sandbox, stop_wait)
        _print("bgconsole demo: stopping")
        return EXIT_OK
    finally:
        stop_wait.cancel()
        await sandbox.stop()
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _watch(sandbox: Sandbox, stop_wait: asyncio.Future[Any]) -> None:
    """Wait for the stop signal, reporting (once each) sandbox processes that died."""
    reported: set[str] = set()
    while not stop_wait.done():
        for line in sandbox.exited():
            if line not in reported:
                reported.add(line)
                _print(f"bgconsole demo: warning: {line}")
        await asyncio.wait({stop_wait}, timeout=1.0)


def _cleanup_note(keep: bool, directory: Path) -> str:
    if keep:
        return f" (its files stay in {directory})."
    return " and removes its files."


def _print(text: str) -> None:
    # Flushed: the demo is often run with stdout piped (tests, scripts reading the path).
    print(text, file=sys.stdout, flush=True)
