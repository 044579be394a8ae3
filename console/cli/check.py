"""``bgconsole check``: validate a configuration and summarise it."""

from __future__ import annotations

import argparse

from console.cli import doctor
from console.cli.common import EXIT_OK, SubParsers, add_config_option, add_json_option, print_json
from console.core.config import Config, find_config, load_config, redact_url
from console.core.models import Colour


def register(subparsers: SubParsers) -> None:
    """Add the ``check`` verb."""
    parser = subparsers.add_parser(
        "check",
        help="validate the configuration (static; doctor checks it live)",
        description="Validate the configuration file (exit 2 naming the bad key) and summarise "
        "it. Static: nothing is contacted, so a file with unreachable hosts passes; "
        "`bgconsole doctor` (or check --connect) checks it against the real setup.",
    )
    add_config_option(parser)
    add_json_option(parser)
    parser.add_argument(
        "--connect", action="store_true", help="also check it live (= bgconsole doctor)"
    )
    doctor.add_strict_option(parser)
    parser.set_defaults(handler=run)


def summary(config: Config) -> dict[str, object]:
    """What the configuration describes, without secrets."""
    return {
        "path": str(config.path) if config.path else None,
        "app": config.console.name,
        "control": redact_url(config.control.redis),
        "router": config.router.kind,
        "front_door": config.router.front_door,
        "failover": {
            "enabled": config.failover.enabled,
            "interval": config.failover.interval,
            "fall": config.failover.fall,
            "rise": config.failover.rise,
            "min_dwell": config.failover.min_dwell,
        },
        "envs": {
            colour.value: [
                {"name": h.name, "url": h.url, "ssh": str(h.ssh) if h.ssh else None}
                for h in config.env(colour).hosts
            ]
            for colour in Colour
        },
        "flags": sorted(config.flags),
    }


async def run(args: argparse.Namespace) -> int:
    """Load, validate and summarise; ConfigError (exit 2) propagates to main()."""
    if args.connect:
        return await doctor.run(args)
    config = load_config(find_config(getattr(args, "config", None)))
    if args.json:
        print_json({"ok": True, "static": True, **summary(config)})
        return EXIT_OK
    print(f"{config.path}: ok (static: the file is valid; nothing was contacted)")
    print(f"  app {config.console.name}, control plane {redact_url(config.control.redis)}")
    print(f"  router {config.router.kind}, front door {config.router.front_door}")
    f = config.failover
    state = "on" if f.enabled else "off"
    print(
        f"  failover {state}: probe every {f.interval:g}s, down after {f.fall}, "
        f"up after {f.rise}, min dwell {f.min_dwell:g}s"
    )
    for colour in Colour:
        hosts = config.env(colour).hosts
        names = ", ".join(h.name for h in hosts)
        print(f"  {colour}: {len(hosts)} host{'s' if len(hosts) != 1 else ''} ({names})")
    print(f"  flags: {', '.join(sorted(config.flags)) or 'none'}")
    print(f"next: bgconsole doctor -c {config.path} checks it against the real setup")
    return EXIT_OK
