"""The ``bgconsole`` command: argument parsing, then one verb module per command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from console import __version__
from console.cli import check, demo, deploy, events, failover, flag, init, serve, status, switch, ui
from console.cli import doctor as doctor_verb
from console.cli import logs as logs_verb
from console.cli import migrate as migrate_verb
from console.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, fail
from console.core.errors import ConsoleError
from console.core.text import printable

# Each verb module provides ``register(subparsers)``, which adds its parser and sets
# ``handler`` (an ``async def (args) -> int``). The order here is the order in --help.
VERBS: tuple[ModuleType, ...] = (
    status,
    switch,
    failover,
    events,
    flag,
    deploy,
    logs_verb,
    migrate_verb,
    check,
    doctor_verb,
    init,
    demo,
    serve,
)


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error style: one line on stderr, exit 2.

    argparse's own error prints the whole usage block first; a script's log then holds
    several lines for one mistake, and the mistake is the last of them. Subparsers are
    built from the parent's class, so every verb gets this.
    """

    def error(self, message: str) -> NoReturn:
        # Escaped: the message quotes what was typed, which may hold control characters.
        self.exit(EXIT_USAGE, f"{self.prog}: {printable(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every verb."""
    parser = Parser(
        prog="bgconsole",
        description=(
            "Operator console for blue-green deployments. Without a command, opens the "
            "terminal UI; every key of the UI is also a command below."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bgconsole {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="configuration file (default: $BGCONSOLE_CONFIG, ./bgconsole.toml, "
        "then ~/.config/bgconsole/bgconsole.toml)",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="watch only: the console refuses every key that changes production "
        "(also [console] read_only = true)",
    )
    parser.add_argument(
        "--apps",
        metavar="DIR",
        help="open the overview of every app in DIR (one *.toml each; default when no "
        "configuration is found: ~/.config/bgconsole/apps)",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb in VERBS:
        verb.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``bgconsole`` script; exits with the verb's status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # No verb opens the terminal UI (config errors still exit 2 with one line).
    handler = ui.run if args.verb is None else args.handler
    if args.verb == "serve":
        # The builtin router's per-request work is markedly cheaper on uvloop (see
        # bench/proxy_bench.py); without it installed nothing changes.
        from console.core.proxy.fastloop import install

        install()
    try:
        code = asyncio.run(handler(args))
    except ConsoleError as e:
        code = fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # `bgconsole events | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again, and exit quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_FAILED
    except Exception as e:  # a bug: still one line, the traceback only on request
        if os.environ.get("BGCONSOLE_DEBUG"):
            raise
        code = fail(
            f"internal error: {type(e).__name__}: {e} (BGCONSOLE_DEBUG=1 shows the traceback; "
            "please report it)"
        )
    sys.exit(code)
