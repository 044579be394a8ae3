"""Shared pieces of the CLI verbs: config loading, output, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TextIO

from console.core.config import Config, find_config, load_config
from console.core.text import printable

EXIT_OK = 0
EXIT_FAILED = 1
"""An operational failure: the thing asked for did not happen or could not be confirmed."""
EXIT_USAGE = 2
"""Bad usage or bad configuration."""
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], Awaitable[int]]


class SubParsers(Protocol):
    """The part of ``argparse._SubParsersAction`` the verbs use."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``-c FILE`` after the verb too (``bgconsole status -c x.toml``)."""
    parser.add_argument(
        "-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file"
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output on stdout."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def config_from(args: argparse.Namespace) -> Config:
    """Find and load the configuration named by the arguments (or the defaults)."""
    return load_config(find_config(getattr(args, "config", None)))


def fail(message: str, code: int = EXIT_FAILED, stream: TextIO | None = None) -> int:
    """Print a one-line error the way every verb does; return the exit code.

    Messages quote other people's text (a holder's name, a host's error, a remote
    line): escaped, so an error stays one line and cannot drive the terminal.
    """
    print(f"bgconsole: {printable(message)}", file=stream or sys.stderr)
    return code


def print_json(data: Any) -> None:
    """JSON on stdout, one document, stable key order."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Plain aligned columns, for terminals and for grep.

    Cells are escaped (host errors, versions and flag values come from elsewhere): a
    newline or an ESC sequence in one would break the columns or drive the terminal.
    """
    body = [[printable(cell) for cell in row] for row in rows]
    all_rows = [[printable(cell) for cell in header], *body] if header else body
    if not all_rows:
        return ""
    widths = [max(len(row[i]) for row in all_rows if i < len(row)) for i in range(len(all_rows[0]))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in all_rows
    ]
    return "\n".join(lines)


def ago(at: float, now: float | None = None) -> str:
    """How long ago a wall-clock time was, compactly (``3.2s``, ``5m``, ``2h``)."""
    seconds = max(0.0, (now if now is not None else time.time()) - at)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask y/N on the terminal; without a terminal, only ``--yes`` says yes."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
