"""``bgconsole`` without a command: load the config, build the services, run the console."""

from __future__ import annotations

import argparse
import dataclasses
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
    read_only = bool(getattr(args, "read_only", False))
    if apps is not None:
        await run_overview(load_apps(apps_dir(apps)), read_only=read_only)
    else:
        await run_console(_watch_only(config_from(args), read_only))
    return EXIT_OK


def _watch_only(config: Config, read_only: bool) -> Config:
    """``--read-only`` on top of the file's ``[console] read_only``."""
    if not read_only:
        return config
    return dataclasses.replace(config, console=dataclasses.replace(config.console, read_only=True))


async def run_overview(entries: list[AppEntry], *, read_only: bool = False) -> None:
    """The overview until the operator quits; Enter opens an app, its Escape comes back."""
    from console.overview import OverviewApp

    while True:
        chosen = await OverviewApp(entries).run_async()
        if chosen is None:
            return
        await run_console(_watch_only(load_config(chosen), read_only), overview=True)
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
