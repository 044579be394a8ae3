"""``bgconsole`` without a command: load the config, build the services, run the console."""

from __future__ import annotations

import argparse
from pathlib import Path

from console.cli.common import EXIT_OK, config_from
from console.core.config import Config, load_config
from console.core.services import Services


async def run(args: argparse.Namespace) -> int:
    """Open the console on the configuration named by the arguments (or the defaults)."""
    await run_console(config_from(args))
    return EXIT_OK


async def run_console(config: Config) -> None:
    """Run the terminal UI until the operator quits; the services close with it."""
    # Imported here: `bgconsole status` and friends should not pay for loading Textual.
    from console.app import ConsoleApp

    services = Services.build(config)
    try:
        await ConsoleApp(services, close_services=False).run_async()
    finally:
        await services.aclose()


async def open_console(config_path: Path) -> None:
    """Open the console on a config file (``bgconsole demo`` hands its sandbox config)."""
    await run_console(load_config(config_path))
