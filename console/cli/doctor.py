"""``bgconsole doctor``: check the configuration against the real setup, one line a check."""

from __future__ import annotations

import argparse

from console.cli.common import (
    EXIT_OK,
    SubParsers,
    add_config_option,
    add_json_option,
    config_from,
    print_json,
)
from console.core.doctor import Report, diagnose
from console.core.text import printable


def register(subparsers: SubParsers) -> None:
    """Add the ``doctor`` verb."""
    parser = subparsers.add_parser(
        "doctor",
        help="check the configuration against the real setup (live), with a fix for each problem",
        description="Connect to everything the configuration names (control plane, router, "
        "each host's health URL and SSH, each colour's flags Redis) and print one line per "
        "check: ok, warn or FAIL, with the fix. Exit 0 when nothing failed (--strict: and "
        "nothing warned), 1 otherwise.",
    )
    add_config_option(parser)
    add_json_option(parser)
    add_strict_option(parser)
    parser.set_defaults(handler=run)


def add_strict_option(parser: argparse.ArgumentParser) -> None:
    """``--strict``: warnings fail too (for CI)."""
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")


def render(report: Report) -> str:
    """The report as printed: one line per check, then the summary."""
    # Details quote other machines (a Redis error, a host's key message): escaped.
    lines = [printable(check.line()) for check in report.checks]
    lines.append(report.summary())
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    """Diagnose; a bad configuration is exit 2 (ConfigError) before anything connects."""
    config = config_from(args)
    report = await diagnose(config)
    strict = bool(getattr(args, "strict", False))
    code = report.exit_code(strict=strict)
    if args.json:
        print_json(
            {
                "ok": code == EXIT_OK,
                "path": str(config.path) if config.path else None,
                "duration": round(report.duration, 3),
                "checks": [c.as_dict() for c in report.checks],
            }
        )
        return code
    print(f"doctor: {printable(str(config.path))}")
    print(render(report))
    return code
