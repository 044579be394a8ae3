"""``bgconsole logs``: the hosts' logs of a colour, streamed over SSH into one terminal."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from console.cli.argtypes import count
from console.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    SubParsers,
    add_config_option,
    add_json_option,
    config_from,
)
from console.core.config import HostConfig
from console.core.errors import UsageError
from console.core.health import PROBE_MARK
from console.core.logs import PER_HOST_LINES, LogBatch, LogFollower
from console.core.models import Colour
from console.core.ssh import SshPool
from console.core.text import printable


def register(subparsers: SubParsers) -> None:
    """Add the ``logs`` verb."""
    parser = subparsers.add_parser(
        "logs",
        help="stream the hosts' logs of a colour over SSH",
        description="Print the last lines of every host's log commands ([env.<colour>.logs]) "
        "of a colour, each line prefixed with colour/host (aligned); --follow keeps "
        "streaming, reconnecting when a host drops, with a bounded buffer per host whose "
        "oldest lines are dropped when the reader falls behind (gaps and reconnects are "
        "marked with '[...]' lines).",
    )
    add_config_option(parser)
    add_json_option(parser)
    parser.add_argument("colour", metavar="COLOUR", help="blue, green, or both")
    parser.add_argument("log", metavar="LOG", nargs="?", help="only this log (default: all)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines")
    parser.add_argument(
        "-n",
        "--lines",
        type=count(0, 1_000_000),
        default=10,
        metavar="N",
        help="lines of backlog (default 10)",
    )
    parser.add_argument("--grep", metavar="RE", help="only lines matching this regex")
    parser.add_argument(
        "--host", action="append", metavar="NAME", help="only this host (repeatable)"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="also show the health probes' lines (hidden by default: lines holding "
        f"{PROBE_MARK}, the User-Agent of bgconsole's probes)",
    )
    parser.add_argument(
        "--color",
        action="store_true",
        help="keep the app's ANSI colours (only colours; other escapes are still shown "
        "escaped); by default they are stripped",
    )
    parser.set_defaults(handler=run)


# CSI sequences (colours, cursor moves, erases), OSC sequences (titles, hyperlinks) and
# two-character escapes. An app's log written for a terminal carries them; printed raw
# they drive the reader's terminal, escaped they bury the text in \x1b[32m noise.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def terminal_text(text: str, color: bool) -> str:
    """A host's log line made safe for the terminal: ANSI stripped (``color``: colours kept,
    the rest escaped), every other control character escaped, tabs kept."""
    if "\x1b" not in text:
        return printable(text, multiline=True)
    if not color:
        return printable(_ANSI.sub("", text), multiline=True)
    # Colours only: every other escape is shown escaped, so it cannot move the cursor.
    parts = _SGR.split(text)
    colours = _SGR.findall(text)
    out = [printable(parts[0], multiline=True)]
    for sgr, part in zip(colours, parts[1:], strict=True):
        out.append(sgr + printable(part, multiline=True))
    return "".join(out)


def _hosts(
    args: argparse.Namespace, envs: dict[Colour, tuple[HostConfig, ...]]
) -> list[tuple[Colour, HostConfig]]:
    if args.colour.strip().lower() == "both":
        colours = [Colour.BLUE, Colour.GREEN]
    else:
        try:
            colours = [Colour.parse(args.colour)]
        except ValueError as e:
            raise UsageError(f"{e}; or 'both'") from None
    hosts = [(colour, host) for colour in colours for host in envs[colour]]
    if args.host:
        known = {host.name for _, host in hosts}
        unknown = [name for name in args.host if name not in known]
        if unknown:
            raise UsageError(
                f"no host {unknown[0]!r} in {args.colour}; hosts: {', '.join(sorted(known))}"
            )
        hosts = [(colour, host) for colour, host in hosts if host.name in args.host]
    return hosts


def _closed(line: str) -> str:
    colours = _SGR.findall(line)
    return line + "\x1b[0m" if colours and colours[-1] not in ("\x1b[0m", "\x1b[m") else line


def format_batch(batch: LogBatch, with_log: bool, color: bool = False, width: int = 0) -> str:
    """The batch as printed: ``blue/app1 | text`` per line (``blue/app1:app | text`` when
    ``with_log``), the source padded to ``width`` so the texts of a fleet line up; markers
    as ``[text]`` (``[blue/app7: 1,234 lines dropped ...]``); every line ends in a newline."""
    # Log lines are the hosts' text (an access log holds whatever clients sent): control
    # characters escaped so an ESC sequence cannot drive the terminal; tabs kept, since
    # lines are already split at newlines. --json carries the exact text.
    lines = [terminal_text(text, color) for text in batch.lines]
    if color:
        # A colour left open must not run into the next line's prefix.
        lines = [_closed(line) for line in lines]
    if batch.marker:
        return "".join(f"[{text}]\n" for text in lines)
    source = f"{batch.source}:{batch.log}" if with_log else batch.source
    prefix = f"{source:<{width}} | "
    return prefix + f"\n{prefix}".join(lines) + "\n"


def batch_as_json(batch: LogBatch) -> str:
    """One JSON object per line of the batch, each on its own line."""
    fields = {
        "colour": batch.colour.value,
        "host": batch.host,
        "log": batch.log,
        "text": "",
        "at": batch.at,
        "marker": batch.marker,
        "stream": batch.stream,
    }
    out = []
    for text in batch.lines:
        fields["text"] = text
        out.append(json.dumps(fields, sort_keys=True))
    out.append("")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> int:
    """Stream the logs until they end (without --follow) or until Ctrl+C."""
    if args.lines < 0:
        raise UsageError(f"--lines must be 0 or more, got {args.lines}")
    try:
        grep = re.compile(args.grep) if args.grep is not None else None
    except re.error as e:
        raise UsageError(f"--grep: not a valid regular expression: {e}") from None
    config = config_from(args)
    hosts = _hosts(args, {c: env.hosts for c, env in config.envs.items()})
    pool = SshPool(config.ssh)
    try:
        follower = LogFollower(
            pool,
            hosts,
            args.log,
            lines=args.lines,
            follow=args.follow,
            grep=grep,
            hide_probes=not args.all,
            # Following: a bounded buffer per host, oldest lines dropped (and said) when
            # the reader falls behind. Without --follow every line asked for is printed.
            per_host_lines=PER_HOST_LINES if args.follow else None,
        )
        with_log = len({name for _, _, name, _ in follower.streams}) > 1
        width = max(
            len(f"{c.value}/{h.name}:{log}" if with_log else f"{c.value}/{h.name}")
            for c, h, log, _ in follower.streams
        )
        failed = False
        out = sys.stdout
        stream = follower.batches()
        try:
            async for batch in stream:
                failed |= batch.marker and not args.follow
                # One write per batch, not per line: a busy log is a million lines a second.
                out.write(
                    batch_as_json(batch)
                    if args.json
                    else format_batch(batch, with_log, color=args.color, width=width)
                )
                out.flush()
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, and keep Python's final flush
            # of stdout from raising again at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        finally:
            await stream.aclose()
    finally:
        await pool.aclose()
    # Without --follow a marker means a host failed; with it, the streams only end when
    # every one hit an error a retry cannot fix.
    return EXIT_FAILED if failed or args.follow else EXIT_OK
