"""``bgconsole flag``: list, set, toggle, copy and diff feature flags in both colours."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

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
from console.core.config import Config
from console.core.control import ControlPlane
from console.core.errors import ConsoleError, ControlPlaneUnavailable, UsageError
from console.core.flags import COLOURS, CopyResult, FlagChange, FlagStore, FlagTable, FlagValue
from console.core.models import Colour
from console.core.text import printable

Action = Callable[[argparse.Namespace, Config, FlagStore, ControlPlane], Awaitable[int]]


def register(subparsers: SubParsers) -> None:
    """Add the ``flag`` verb and its sub-verbs."""
    parser = subparsers.add_parser(
        "flag",
        help="feature flags in each colour's Redis: list, set, toggle, copy, diff",
        description="Feature flags live in each colour's own Redis (env.<colour>.flags_redis), "
        "one string key per flag. Changes are recorded as control-plane events; changing the "
        "live colour asks for confirmation unless --yes.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = _action(actions, "list", _list, "flags x colours table, differences marked '*'")
    add_json_option(ls)

    for name, handler, text in (
        ("set", _set, "set a flag on or off in one or both colours"),
        ("toggle", _toggle, "flip a flag in one or both colours"),
    ):
        sub = _action(actions, name, handler, text)
        sub.add_argument("name", metavar="NAME", help="a flag declared as [flags.NAME]")
        if name == "set":
            sub.add_argument("state", choices=("on", "off"), help="the new state")
        sub.add_argument(
            "--env", required=True, choices=("blue", "green", "both"), help="which colour(s)"
        )
        _change_options(sub)

    cp = _action(actions, "copy", _copy, "make one colour's flags match the other's")
    cp.add_argument("names", nargs="*", metavar="NAME", help="flags to copy (default: all)")
    cp.add_argument("--from", dest="src", required=True, choices=("blue", "green"))
    cp.add_argument("--to", dest="dst", required=True, choices=("blue", "green"))
    _change_options(cp)

    df = _action(actions, "diff", _diff, "the flags whose state differs between the colours")
    df.add_argument(
        "--exit-code", action="store_true", help="exit 1 when the colours differ (like git diff)"
    )
    add_json_option(df)


def _action(actions: Any, name: str, handler: Action, text: str) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
    add_config_option(sub)
    sub.set_defaults(handler=run, flag_action=handler)
    return sub


def _change_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="", help="why (recorded with the event)")
    parser.add_argument(
        "-y", "--yes", action="store_true", help="change the live colour without asking"
    )
    add_json_option(parser)


async def run(args: argparse.Namespace) -> int:
    """Build the flag store and the control plane, run the sub-verb, close both."""
    config = config_from(args)
    control = ControlPlane.from_config(config.control, config.console.name)
    store = FlagStore(config, control)
    try:
        action: Action = args.flag_action
        return await action(args, config, store, control)
    finally:
        await store.aclose()
        await control.aclose()


# list / diff


async def _list(
    args: argparse.Namespace, config: Config, store: FlagStore, cp: ControlPlane
) -> int:
    flags = await store.read_all()
    live = await _live(cp)
    _print_table(flags, live, args.json)
    return EXIT_OK if flags.complete else EXIT_FAILED


async def _diff(
    args: argparse.Namespace, config: Config, store: FlagStore, cp: ControlPlane
) -> int:
    flags = await store.diff()
    live = await _live(cp)
    if args.json:
        _print_table(flags, live, True)
    elif flags.rows:
        _print_table(flags, live, False)
    else:
        for colour, error in flags.errors.items():
            fail(f"{error} ({colour} shown as unknown)")
        if flags.complete:
            print("blue and green read every flag the same way")
    if not flags.complete:
        return EXIT_FAILED
    return EXIT_FAILED if args.exit_code and flags.rows else EXIT_OK


def _print_table(flags: FlagTable, live: set[Colour] | None, as_json: bool) -> None:
    if as_json:
        print_json(table_json(flags, live))
        return
    headers = ["", "FLAG"] + [_header(c, live) for c in COLOURS] + ["DESCRIPTION"]
    rows = []
    for row in flags.rows:
        description = row.description if row.declared else f"(undeclared: {row.key})"
        if row.kill_switch:
            description = f"[kill switch] {description}"
        cells = [_cell(row.value(c)) for c in COLOURS]
        rows.append(["*" if row.differs else "", row.name, *cells, description])
    print(table(rows, headers))
    for colour, error in flags.errors.items():
        fail(f"{error} ({colour} shown as unknown)", stream=sys.stderr)


def _header(colour: Colour, live: set[Colour] | None) -> str:
    if live is None:
        return colour.upper()
    return f"{colour.upper()} (live)" if colour in live else colour.upper()


def _cell(value: FlagValue) -> str:
    if value.state == "unknown":
        return "unknown"
    if value.raw is None:
        return f"{value.state} (unset)" if not value.note else f"{value.state} (unreadable)"
    if value.raw.upper() in ("ON", "OFF") and value.raw.upper() == value.state.upper():
        return value.state
    return f"{value.state} ({value.raw!r})"


def table_json(flags: FlagTable, live: set[Colour] | None) -> dict[str, Any]:
    """The ``--json`` document of ``list`` and ``diff``."""
    return {
        "colours": {
            c.value: {
                "readable": c not in flags.errors,
                "error": flags.errors.get(c),
                "live": None if live is None else c in live,
            }
            for c in COLOURS
        },
        "flags": [
            {
                "name": row.name,
                "key": row.key,
                "declared": row.declared,
                "description": row.description,
                "kill_switch": row.kill_switch,
                "differs": row.differs,
                "values": {
                    c.value: {
                        "state": row.value(c).state,
                        "raw": row.value(c).raw,
                        "note": row.value(c).note,
                    }
                    for c in COLOURS
                },
            }
            for row in flags.rows
        ],
    }


# set / toggle / copy


async def _set(args: argparse.Namespace, config: Config, store: FlagStore, cp: ControlPlane) -> int:
    store.flag(args.name)  # an undeclared name is a usage error before anything is asked
    colours = _colours(args.env)
    await _confirm_live(cp, colours, f"set flag {args.name!r} {args.state}", args.yes)
    return await _apply(
        args,
        colours,
        lambda c: store.set(args.name, c, args.state == "on", reason=args.reason),
    )


async def _toggle(
    args: argparse.Namespace, config: Config, store: FlagStore, cp: ControlPlane
) -> int:
    store.flag(args.name)
    colours = _colours(args.env)
    await _confirm_live(cp, colours, f"toggle flag {args.name!r}", args.yes)
    return await _apply(args, colours, lambda c: store.toggle(args.name, c, reason=args.reason))


async def _apply(
    args: argparse.Namespace,
    colours: list[Colour],
    change: Callable[[Colour], Awaitable[FlagChange]],
) -> int:
    """Apply a change colour by colour; one colour failing does not stop the other."""
    done: list[FlagChange] = []
    failed: dict[Colour, str] = {}
    for colour in colours:
        try:
            done.append(await change(colour))
        except ConsoleError as e:
            if isinstance(e, UsageError):
                raise
            failed[colour] = str(e)
    if args.json:
        print_json(
            {
                "changes": [_change_json(c) for c in done],
                "failed": {c.value: error for c, error in failed.items()},
            }
        )
    else:
        for c in done:
            print(_change_line(c))
    for c in done:
        if c.warning:
            fail(f"warning: {c.colour}: {c.warning}")
    if failed:
        for error in failed.values():
            fail(error)
        if done:
            applied = ", ".join(c.colour.value for c in done)
            fail(f"applied on {applied} only; {', '.join(failed)} unchanged or unknown")
        return EXIT_FAILED
    return EXIT_OK


async def _copy(
    args: argparse.Namespace, config: Config, store: FlagStore, cp: ControlPlane
) -> int:
    src, dst = Colour(args.src), Colour(args.dst)
    if src == dst:
        raise UsageError("--from and --to must be different colours")
    for name in args.names:
        store.flag(name)
    what = ", ".join(args.names) if args.names else "all flags"
    await _confirm_live(cp, [dst], f"copy {what} from {src} to {dst}", args.yes)
    result: CopyResult = await store.copy(src, dst, args.names or None, reason=args.reason)
    if args.json:
        print_json(
            {
                "from": src.value,
                "to": dst.value,
                "changes": [_change_json(c) for c in result.changes],
                "unchanged": list(result.unchanged),
            }
        )
    else:
        for change in result.changes:
            print(_change_line(change))
        if result.unchanged:
            print(f"already equal on {dst}: {', '.join(result.unchanged)}")
        if not result.changes:
            print(f"{dst} already reads these flags the way {src} does")
    for change in result.changes:
        if change.warning:
            fail(f"warning: {change.colour}: {change.warning}")
    return EXIT_OK


def _change_line(change: FlagChange) -> str:
    arrow = f"{change.before} -> {change.after}"
    suffix = "" if change.changed else " (unchanged)"
    recorded = " [recorded]" if change.event_id else " [NOT recorded]"
    # Before/after are what Redis held (anyone's text): escaped.
    return printable(f"{change.colour}: {change.name} {arrow}{suffix}{recorded}")


def _change_json(change: FlagChange) -> dict[str, Any]:
    return {
        "flag": change.name,
        "colour": change.colour.value,
        "key": change.key,
        "before": change.before,
        "after": change.after,
        "raw_before": change.raw_before,
        "raw_after": change.raw_after,
        "event_id": change.event_id,
        "warning": change.warning,
    }


def _colours(env: str) -> list[Colour]:
    return list(COLOURS) if env == "both" else [Colour(env)]


async def _live(control: ControlPlane) -> set[Colour] | None:
    """The live colour(s); None when the control plane cannot say."""
    try:
        state = await control.active()
    except ControlPlaneUnavailable:
        return None
    return None if state is None else {state.colour}


async def _confirm_live(
    control: ControlPlane, colours: list[Colour], what: str, assume_yes: bool
) -> None:
    """Ask before changing the live colour; unknown live colour counts as live."""
    if assume_yes:
        return
    live = await _live(control)
    # Without a control plane (or before the first switch) either colour may be live.
    touched = [c for c in colours if live is None or c in live]
    if not touched:
        return
    where = ", ".join(c.value for c in touched)
    why = "is live" if live is not None else "may be live (live colour unknown)"
    question = f"{where} {why}: {what} there?"
    if not sys.stdin.isatty():
        raise UsageError(f"{where} {why}; pass --yes to {what} there")
    if not confirm(question, assume_yes=False):
        raise UsageError(f"not confirmed: {what} on {where} cancelled")
