"""``bgconsole migrate --from COLOUR --to COLOUR``: carry data between the colours."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import TextIO

from console.cli.argtypes import seconds
from console.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    SubParsers,
    add_config_option,
    add_json_option,
    config_from,
    confirm,
    fail,
    print_json,
    table,
)
from console.core.control import ControlPlane
from console.core.errors import UsageError
from console.core.migrate.mirror import MirrorStatus
from console.core.migrate.plan import (
    RESULT_COLUMNS,
    STRATEGIES,
    MigrationRequest,
    MigrationResult,
    Progress,
)
from console.core.migrate.runner import MigrationRunner
from console.core.models import Colour
from console.core.ssh import SshPool
from console.core.text import printable

_BAR = 30
_REDRAW = 0.1
"""Seconds between progress-bar redraws on a terminal."""


def register(subparsers: SubParsers) -> None:
    """Add the ``migrate`` verb."""
    parser = subparsers.add_parser(
        "migrate",
        help="copy data between the colours (SQLite rows or snapshot, mirror, Redis keys)",
        description=(
            "Carry data from one colour to the other so the stand-by does not lose what the "
            "live one wrote. Strategies: rows (default; copy the rows the target lacks, one "
            "transaction per table, then verify checksums), snapshot (replace the target "
            "database with a consistent copy of the source; the old file is kept as "
            "<db>.bak-<time>), mirror (rows, then keep copying new rows until Ctrl+C, with "
            "the lag shown), redis (keys matching data.redis_keys, with their TTLs). Holds "
            "the control-plane lock 'migrate' and records events. Rows or keys that exist "
            "on both sides with different content are conflicts: reported, left alone "
            "unless --overwrite. Exit 0 when migrated and verified, 1 on failure or "
            "conflicts left, 2 on bad usage, 130 on Ctrl+C (each table then has all of its "
            "new rows or none; run again to finish)."
        ),
    )
    parser.add_argument(
        "strategy_arg",
        nargs="?",
        choices=STRATEGIES,
        metavar="STRATEGY",
        help="the strategy, as an alternative to --strategy (e.g. 'migrate mirror --setup')",
    )
    parser.add_argument("--from", dest="source", required=True, metavar="COLOUR")
    parser.add_argument("--to", dest="target", required=True, metavar="COLOUR")
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="rows", help="how to migrate (default: rows)"
    )
    parser.add_argument(
        "--table",
        dest="tables",
        action="append",
        default=[],
        metavar="T",
        help="only this table (repeatable; rows and mirror)",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan; write nothing")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace conflicting target rows/keys with the source's version",
    )
    parser.add_argument(
        "--whole-tables",
        action="store_true",
        help="rows: each table in one transaction, all or nothing (holds the target's write "
        "lock for a whole table; default: short slices of [migrate] slice seconds)",
    )
    parser.add_argument(
        "--yes", action="store_true", help="do not ask before writing into the live colour"
    )
    parser.add_argument(
        "--interval",
        type=seconds(0, 3600, above_minimum=True),
        default=1.0,
        metavar="S",
        help="mirror: seconds between copies (default 1)",
    )
    parser.add_argument(
        "--throttle",
        type=seconds(0, 10),
        default=0.0,
        metavar="S",
        help="rows: seconds to pause after each row applied, to spare a busy target",
    )
    parser.add_argument(
        "--setup",
        action="store_true",
        help="mirror: install change capture (triggers and a change table) on the source, "
        "so the mirror carries updates and deletes too; idempotent",
    )
    parser.add_argument(
        "--teardown",
        action="store_true",
        help="mirror: remove change capture from the source and the target; idempotent",
    )
    parser.add_argument(
        "--lag",
        action="store_true",
        help="mirror: print the changes not yet applied and the oldest one's age, then exit",
    )
    parser.add_argument("--reason", default="", metavar="TEXT", help="recorded with the events")
    add_config_option(parser)
    add_json_option(parser)
    parser.set_defaults(handler=run)


def _colour(text: str, option: str) -> Colour:
    try:
        return Colour.parse(text)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None


class ProgressPrinter:
    """Draws progress: a redrawn bar on a terminal, a plain line per phase otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last_key: tuple[str, str] | None = None
        self.last_draw = 0.0

    def __call__(self, progress: Progress) -> None:
        key = (progress.phase, progress.item)
        if not self.tty:
            if key != self.last_key:
                self.last_key = key
                # Item names are the hosts' table names: escaped.
                print(f"{progress.phase}: {printable(progress.item)}", file=self.out, flush=True)
            return
        now = time.monotonic()
        finished = progress.total and progress.done >= progress.total
        if key == self.last_key and not finished and now - self.last_draw < _REDRAW:
            return
        self.last_key, self.last_draw = key, now
        share = progress.share
        filled = int(_BAR * share)
        bar = "#" * filled + "-" * (_BAR - filled)
        amount = progress.amount()
        item = printable(progress.item)
        line = f"\r{progress.phase:<8} [{bar}] {share:4.0%} {amount}  {item}"
        print(line[:200].ljust(80), end="", file=self.out, flush=True)

    def end(self) -> None:
        """Finish the bar's line."""
        if self.tty and self.last_key is not None:
            print(file=self.out, flush=True)
            self.last_key = None


async def run(args: argparse.Namespace) -> int:
    """Check the request, ask before touching the live colour, migrate, report."""
    source = _colour(args.source, "--from")
    target = _colour(args.target, "--to")
    if args.interval <= 0:
        raise UsageError("--interval must be greater than 0")
    if not 0 <= args.throttle <= 10:
        raise UsageError("--throttle must be between 0 and 10 seconds")
    if args.strategy_arg:
        args.strategy = args.strategy_arg
    mirror_actions = [name for name in ("setup", "teardown", "lag") if getattr(args, name)]
    if mirror_actions and args.strategy != "mirror":
        raise UsageError(f"--{mirror_actions[0]} applies to the mirror strategy only")
    if len(mirror_actions) > 1:
        raise UsageError("pick one of --setup, --teardown and --lag")
    config = config_from(args)
    out = sys.stderr if args.json else sys.stdout
    control = ControlPlane.from_config(config.control, config.console.name)
    pool = SshPool(config.ssh)
    runner = MigrationRunner(config, control, pool)
    printer = ProgressPrinter(out)
    try:
        # Change-capture set-up touches no rows (triggers on the source, a cursor table on
        # the target): no live-colour confirmation.
        live_ok = True if mirror_actions else await _consent(control, target, args)
        request = MigrationRequest(
            source,
            target,
            args.strategy,
            tables=tuple(args.tables),
            dry_run=args.dry_run,
            overwrite=args.overwrite,
            live_ok=live_ok,
            reason=args.reason,
            row_delay=args.throttle,
            whole_tables=args.whole_tables,
        )
        if mirror_actions:
            return await _mirror_action(runner, request, mirror_actions[0], args.json)
        if args.strategy == "mirror" and not args.dry_run:
            return await _mirror(runner, request, args, printer, out)
        try:
            result = await runner.migrate(request, printer)
        except asyncio.CancelledError:
            printer.end()
            print(
                "bgconsole: migration cancelled; each table has all of its new rows or none "
                "(run it again to finish); lock released, event recorded",
                file=sys.stderr,
                flush=True,
            )
            raise
        printer.end()
    finally:
        await pool.aclose()
        await control.aclose()
    return _report(result, args.json)


async def _mirror_action(
    runner: MigrationRunner, request: MigrationRequest, action: str, as_json: bool
) -> int:
    """``--setup``, ``--teardown`` or ``--lag`` of the mirror's change capture."""
    if action == "lag":
        lag = await runner.mirror_lag(request.source, request.target)
        if as_json:
            print_json(lag.as_dict())
        else:
            print(lag.describe())
        return EXIT_OK
    count = await runner.mirror_setup(request, teardown=action == "teardown")
    if as_json:
        print_json({"action": action, "count": count})
    elif action == "setup":
        print(f"change capture installed on {count} table(s) of {request.source}")
    else:
        print(f"change capture removed ({count} object(s))")
    return EXIT_OK


async def _consent(control: ControlPlane, target: Colour, args: argparse.Namespace) -> bool:
    """Whether writing into ``target`` is allowed: always for the stand-by; else ask."""
    if args.dry_run or args.yes:
        return True
    active = await control.active()
    if active is None or active.colour != target:
        return True
    question = f"{target} is live: the application is using its data. Migrate into it?"
    if confirm(question, False):
        return True
    raise UsageError(
        f"{target} is live: migrating into it needs confirmation; pass --yes in scripts"
    )


def _report(result: MigrationResult, as_json: bool) -> int:
    if as_json:
        print_json(result.as_dict())
    else:
        print(render(result))
    if result.ok:
        return EXIT_OK
    return fail(result.problems[0], EXIT_FAILED)


def render(result: MigrationResult) -> str:
    """The text report: one line per table or key pattern, then the summary."""
    rows = [item.cells() for item in result.items]
    lines = [table(rows, RESULT_COLUMNS)] if rows else ["(nothing to migrate)"]
    # Notes carry the hosts' keys, table names and constraint messages: escaped.
    lines.extend(printable(note) for note in result.notes())
    lines.append(result.summary())
    return "\n".join(lines)


async def _mirror(
    runner: MigrationRunner,
    request: MigrationRequest,
    args: argparse.Namespace,
    printer: ProgressPrinter,
    out: TextIO,
) -> int:
    """Run the mirror in the foreground until Ctrl+C (or SIGTERM), then report."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = [False]

    def on_status(status: MirrorStatus) -> None:
        if not started[0]:
            printer.end()
            started[0] = True
            print("mirroring; Ctrl+C stops", file=out, flush=True)
        text = (
            f"mirror {request.source} -> {request.target}: {status.copied} copied, "
            f"{status.behind} behind, lag {status.lag:.1f} s"
            + (f", {status.conflicts} conflicting" if status.conflicts else "")
            + (f"  [error: {printable(status.error)}]" if status.error else "")
        )
        if out.isatty():
            print(f"\r{text}".ljust(100), end="", file=out, flush=True)
        else:
            print(text, file=out, flush=True)

    try:
        catch_up, status = await runner.mirror(
            request, on_status, stop, interval=args.interval, on_progress=printer
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    if out.isatty():
        print(file=out)
    if args.json:
        print_json({"catch_up": catch_up.as_dict(), "mirror": status.as_dict()})
    else:
        print(render(catch_up))
        print(
            f"mirror stopped after {status.cycles} cycle(s): {status.copied} row(s) copied, "
            f"{status.behind} behind"
        )
    if not catch_up.ok:
        return fail(catch_up.problems[0], EXIT_FAILED)
    return EXIT_OK
