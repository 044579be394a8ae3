"""``bgconsole`` without a command: load the config, build the services, run the console."""

from __future__ import annotations

import argparse
from pathlib import Path

from console.cli.common import EXIT_OK, config_from
from console.core.apps import AppEntry, apps_dir, load_apps
from console.core.config import Config, find_config, load_config
from console.core.errors import ConfigError
from console.core.services import Services


async def run(args: argparse.Namespace) -> int:
    """Open the console on the configuration named by the arguments (or the defaults).

    With ``--apps DIR``, or with no configuration found but an apps directory holding
    app configs, open the overview of every app instead.
    """
    apps = getattr(args, "apps", None)
    if apps is None and getattr(args, "config", None) is None:
        try:
            find_config(None)
        except ConfigError:
            if any(apps_dir().glob("*.toml")):
                apps = str(apps_dir())
    if apps is not None:
        await run_overview(load_apps(apps_dir(apps)))
    else:
        await run_console(config_from(args))
    return EXIT_OK


async def run_overview(entries: list[AppEntry]) -> None:
    """The overview until the operator quits; Enter opens an app, its Escape comes back."""
    from console.overview import OverviewApp

    while True:
        chosen = await OverviewApp(entries).run_async()
        if chosen is None:
            return
        await run_console(load_config(chosen), overview=True)
        entries = load_apps(chosen.parent)  # configs may have changed meanwhile


async def run_console(config: Config, *, overview: bool = False) -> None:
    """Run the terminal UI until the operator quits; the services close with it."""
    # Imported here: `bgconsole status` and friends should not pay for loading Textual.
    from console.app import ConsoleApp

    services = Services.build(config)
    try:
        await ConsoleApp(services, close_services=False, overview=overview).run_async()
    finally:
        await services.aclose()


async def open_console(config_path: Path) -> None:
    """Open the console on a config file (``bgconsole demo`` hands its sandbox config)."""
    await run_console(load_config(config_path))
