"""``bgconsole events``: the audit trail of switches, failovers, flags, deploys, migrations."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import random
import sys
import time

from console.cli.argtypes import count
from console.cli.common import EXIT_OK, SubParsers, add_config_option, add_json_option, config_from
from console.core.control import ControlPlane
from console.core.errors import ControlPlaneUnavailable
from console.core.models import Event
from console.core.text import printable

_RETRY_START = 0.2
_RETRY_CAP = 5.0


def register(subparsers: SubParsers) -> None:
    """Add the ``events`` verb."""
    parser = subparsers.add_parser(
        "events",
        help="the audit trail (who did what, when, with what result)",
        description="Print recent control-plane events, oldest first; --follow keeps printing "
        "new ones as they happen.",
    )
    add_config_option(parser)
    add_json_option(parser)
    parser.add_argument(
        "-n", "--limit", type=count(1, 1_000_000), default=20, help="events to show (default 20)"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    parser.add_argument("--kind", action="append", help="only these kinds (repeatable)")
    parser.set_defaults(handler=run)


def format_event(event: Event) -> str:
    """One event as one line: time, kind, actor, summary, reason, outcome.

    Every field is someone else's text (a ``--reason``, a ref, an actor name, anything
    written to the stream): escaped, so it can neither drive the terminal nor start a
    forged line of its own.
    """
    when = datetime.datetime.fromtimestamp(event.at).strftime("%Y-%m-%d %H:%M:%S")
    kind, actor = printable(event.kind), printable(event.actor)
    parts = [when, f"{kind:<8}", f"{actor:<24}", printable(event.summary)]
    if event.reason:
        parts.append(f'reason="{printable(event.reason)}"')
    if event.outcome and event.outcome != "ok":
        parts.append(f"[{printable(event.outcome)}]")
    return "  ".join(parts)


def _emit(event: Event, as_json: bool) -> None:
    if as_json:
        print(json.dumps(dataclasses.asdict(event), sort_keys=True), flush=True)
    else:
        print(format_event(event), flush=True)


async def _follow(control: ControlPlane, last: str, kinds: set[str], as_json: bool) -> None:
    """Print new events forever; ride out control-plane outages without losing any.

    Whoever watches the trail during an incident must not find it silently dead: an
    outage is a marker line on stderr, and on reconnect reading resumes after the last
    event printed (the stream keeps what was written meanwhile).
    """
    backoff = _RETRY_START
    down_since: float | None = None
    while True:
        try:
            async for event in control.follow_events(after=last):
                if down_since is not None:
                    print(f"-- control plane back after {time.monotonic() - down_since:.1f} s --",
                          file=sys.stderr, flush=True)  # fmt: skip
                    down_since, backoff = None, _RETRY_START
                last = event.id
                if not kinds or event.kind in kinds:
                    _emit(event, as_json)
        except ControlPlaneUnavailable as e:
            if down_since is None:
                down_since = time.monotonic()
                print(f"-- {e}; retrying --", file=sys.stderr, flush=True)
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, _RETRY_CAP)


async def run(args: argparse.Namespace) -> int:
    """Print the last events, then follow if asked."""
    config = config_from(args)
    control = ControlPlane.from_config(config.control, config.console.name)
    kinds = set(args.kind or [])
    try:
        events = await control.events(limit=args.limit if not kinds else 1000)
        if kinds:
            events = [e for e in events if e.kind in kinds][-args.limit :]
        for event in events:
            _emit(event, args.json)
        if args.follow:
            await _follow(control, events[-1].id if events else "$", kinds, args.json)
    finally:
        await control.aclose()
    sys.stdout.flush()
    return EXIT_OK
