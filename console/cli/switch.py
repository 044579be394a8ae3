"""``bgconsole switch COLOUR``: move live traffic to a colour, confirmed and verified."""

from __future__ import annotations

import argparse
import sys

from console.cli.common import (
    EXIT_OK,
    SubParsers,
    add_config_option,
    add_json_option,
    config_from,
    confirm,
    print_json,
)
from console.core.control import ControlPlane
from console.core.errors import ConsoleError, UsageError
from console.core.health import HealthChecker
from console.core.migrate.runner import MigrationRunner
from console.core.models import Colour
from console.core.router.factory import build_router
from console.core.ssh import SshPool
from console.core.status import read_mirror
from console.core.switching import current_active, perform_switch
from console.core.text import printable


def register(subparsers: SubParsers) -> None:
    """Add the ``switch`` verb."""
    parser = subparsers.add_parser(
        "switch",
        help="move live traffic to a colour (checked, compare-and-set, verified)",
        description=(
            "Send live traffic to COLOUR. Refuses an unhealthy target unless --force; fails "
            "if someone else switched first; waits for the router to confirm, then checks "
            "that requests through the front door are served by COLOUR. Exit 0 when "
            "verified (or already live), 1 when not (the message says how to revert)."
        ),
    )
    parser.add_argument("colour", metavar="COLOUR", help="blue or green")
    parser.add_argument(
        "--force", action="store_true", help="switch even if the target has failing hosts"
    )
    parser.add_argument(
        "--skip-gates",
        action="store_true",
        help="do not run the pre_switch gates ([[hook]]); recorded, and asked on a terminal",
    )
    parser.add_argument("--reason", default="", metavar="TEXT", help="recorded with the event")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    add_config_option(parser)
    add_json_option(parser)
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Switch, printing progress lines and a one-line result."""
    try:
        to = Colour.parse(args.colour)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("pass --yes to switch non-interactively")
    config = config_from(args)
    # Progress goes to stderr under --json so stdout stays one JSON document.
    out = sys.stderr if args.json else sys.stdout
    control = ControlPlane.from_config(config.control, config.console.name)
    health = HealthChecker(config, hysteresis=False)
    router = None
    try:
        router = build_router(config, control)
        active = await current_active(control, router)
        # The go/no-go on data: a mirror still carrying changes into the target means the
        # target lacks rows the live colour has.
        mirror = ""
        if active.colour is not to:
            pool = SshPool(config.ssh)
            try:
                lag = MigrationRunner(config, control, pool).mirror_lag
                line, behind = await read_mirror(control, lag)
            finally:
                await pool.aclose()
            if line is not None:
                mirror = f" [{'NO-GO' if behind else 'go'}: {printable(line)}]"
                print(f"  data: {printable(line)}", file=out, flush=True)
        if active.colour is not to and not confirm(
            f"Switch live traffic {active.colour} -> {to}{mirror}"
            + (" even if unhealthy (--force)" if args.force else "")
            + (" SKIPPING the pre_switch gates (--skip-gates)" if args.skip_gates else "")
            + "?",
            args.yes,
        ):
            raise ConsoleError("switch cancelled; nothing changed")
        result = await perform_switch(
            config,
            control,
            router,
            health,
            to=to,
            force=args.force,
            reason=args.reason,
            skip_gates=args.skip_gates,
            # Progress and summary quote router output and response headers: escaped.
            on_progress=lambda line: print(f"  {printable(line)}", file=out, flush=True),
        )
    finally:
        await health.aclose()
        if router is not None:
            await router.aclose()
        await control.aclose()
    if args.json:
        print_json(result.as_dict())
    else:
        print(printable(result.summary()))
    return EXIT_OK
