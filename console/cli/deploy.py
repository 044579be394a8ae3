"""``bgconsole deploy COLOUR`` and ``bgconsole deploy setup COLOUR``: releases over SSH or git."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from console.cli.argtypes import count
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
)
from console.core.config import Config
from console.core.control import ControlPlane
from console.core.deploy import (
    DEFAULT_PARALLEL,
    BatchProgress,
    DeployMethod,
    DeployResult,
    DeployRunner,
    StepStarted,
    check_ref,
    live_deploy_preview,
)
from console.core.errors import ConsoleError, UsageError
from console.core.fleet import name_list
from console.core.git_pipeline import HostRun
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.ssh import OutputLine, SshPool
from console.core.text import printable

SETUP = "setup"
TAIL_SHOWN = 10
"""Lines per failed host printed with the error."""


def register(subparsers: SubParsers) -> None:
    """Add the ``deploy`` verb (``deploy COLOUR`` and ``deploy setup COLOUR``)."""
    parser = subparsers.add_parser(
        "deploy",
        help="deploy a release to a colour (steps over SSH, or git push)",
        usage=(
            "bgconsole deploy COLOUR [--ref REF] [--live [--yes]] [--git] [--repo PATH] "
            "[--parallel N] [--no-canary] [--reason TEXT] [--json]\n"
            "       bgconsole deploy setup COLOUR"
        ),
        description=(
            "Deploy to COLOUR: run each host's deploy steps over SSH (or, with --git or an "
            "environment that only has [env.COLOUR.git], push REF from the local repository "
            "to the hosts' bare repositories, whose hook checks it out and restarts), with "
            "output streamed live; then wait for COLOUR to turn healthy and report its "
            "version. Hosts go in batches (steps or git pushes alike): the first host alone "
            "(the canary), then --parallel "
            "hosts at a time, each batch healthy before the next; the first batch that fails "
            "stops the rollout and the rest are left untouched. Holds the control-plane "
            "lock deploy:COLOUR and records events. The "
            "live colour is refused unless --live, and then says what happens to traffic "
            "and asks (--yes in scripts). The result always says where traffic is at the "
            "end. 'deploy setup COLOUR' creates the bare repository and post-receive hook "
            "on each host. Exit 0 when deployed and healthy, 1 when a step, the push or the "
            "health wait failed, the outcome is unknown (a host stopped answering "
            "mid-step) or the agent failed over during the deploy, 130 on Ctrl+C."
        ),
    )
    parser.add_argument("target", metavar="COLOUR", help="blue or green (or 'setup')")
    parser.add_argument(
        "setup_colour", metavar="COLOUR", nargs="?", help=argparse.SUPPRESS, default=None
    )
    parser.add_argument("--ref", metavar="REF", help="what to deploy ({ref} in steps; git ref)")
    parser.add_argument(
        "--live", action="store_true", help="allow deploying to the live colour (affects users)"
    )
    parser.add_argument(
        "--yes", action="store_true", help="do not ask before deploying to the live colour"
    )
    parser.add_argument(
        "--git", action="store_true", help="use the git push pipeline ([env.COLOUR.git])"
    )
    parser.add_argument(
        "--repo", metavar="PATH", type=Path, help="local repository to push from (default: .)"
    )
    parser.add_argument("--reason", default="", metavar="TEXT", help="recorded with the events")
    parser.add_argument(
        "--parallel",
        type=count(1, 1000),
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"hosts per batch after the canary (default {DEFAULT_PARALLEL})",
    )
    parser.add_argument(
        "--no-canary",
        action="store_true",
        help="no canary: the first batch is --parallel hosts, not the first host alone",
    )
    add_config_option(parser)
    add_json_option(parser)
    parser.set_defaults(handler=run)


def _colour(text: str) -> Colour:
    try:
        return Colour.parse(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


async def run(args: argparse.Namespace) -> int:
    """Dispatch to a deploy or a setup after checking the positional arguments."""
    if args.target == SETUP:
        if args.setup_colour is None:
            raise UsageError("deploy setup needs a colour: bgconsole deploy setup COLOUR")
        if args.ref or args.live or args.git or args.repo or args.yes:
            raise UsageError("deploy setup takes only COLOUR (no --ref/--live/--yes/--git/--repo)")
        return await _setup(args, _colour(args.setup_colour))
    if args.setup_colour is not None:
        raise UsageError(
            f"unexpected argument {args.setup_colour!r}: use 'bgconsole deploy COLOUR' "
            "or 'bgconsole deploy setup COLOUR'"
        )
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    colour = _colour(args.target)
    check_ref(args.ref)  # before anything connects: a bad ref is a usage error
    return await _deploy(args, colour)


class _Services:
    """The clients a deploy needs, closed together."""

    def __init__(self, config: Config, parallel: int, canary: bool = True) -> None:
        self.control = ControlPlane.from_config(config.control, config.console.name)
        self.pool = SshPool(config.ssh)
        # No hysteresis: the wait should see a host as soon as it answers again.
        self.health = HealthChecker(config, hysteresis=False)
        self.runner = DeployRunner(
            config, self.control, self.pool, self.health, parallel=parallel, canary=canary
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.health.aclose()
        await self.control.aclose()


def _batch_printer(colour: Colour, out: TextIO) -> Callable[[BatchProgress], None]:
    """``blue: canary app1`` / ``blue: batch 2/5 (app2, ...) healthy after 0.4 s`` lines."""

    def on_batch(batch: BatchProgress) -> None:
        if batch.total <= 1:
            return  # one batch: the per-host lines say it all
        what = (
            f"canary {batch.hosts[0]} (batch 1/{batch.total})"
            if batch.canary
            else f"batch {batch.index}/{batch.total} ({name_list(batch.hosts)})"
        )
        if batch.state == "started":
            text = f"{colour}: {what}: deploying"
        elif batch.state == "healthy":
            text = f"{colour}: {what}: {batch.detail}"
        else:
            text = f"{colour}: {what}: FAILED: {printable(batch.detail)}; stopping the rollout"
        print(text, file=out, flush=True)

    return on_batch


def _printer(
    colour: Colour, out: TextIO
) -> tuple[Callable[[OutputLine], None], Callable[[StepStarted], None]]:
    """Callbacks printing ``blue/app1 | line`` and ``blue/app1 $ step`` as they come."""

    def on_line(line: OutputLine) -> None:
        # Host output is someone else's text: escaped, so it cannot move the cursor or
        # forge lines of ours.
        print(f"{colour}/{line.host} | {printable(line.text)}", file=out, flush=True)

    def on_step(step: StepStarted) -> None:
        print(
            f"{colour}/{step.host} $ {printable(step.command)}   (step {step.index}/{step.total})",
            file=out,
            flush=True,
        )

    return on_line, on_step


async def _deploy(args: argparse.Namespace, colour: Colour) -> int:
    config = config_from(args)
    # Live output goes to stderr under --json so stdout stays one JSON document.
    out = sys.stderr if args.json else sys.stdout
    method: DeployMethod | None = "git" if args.git or args.repo else None
    services = _Services(config, args.parallel, canary=not args.no_canary)
    on_line, on_step = _printer(colour, out)
    try:
        if args.live:
            await _consent_live(services.control, config, colour, args.yes)
        result = await services.runner.deploy(
            colour,
            ref=args.ref,
            live_ok=args.live,
            method=method,
            repo=args.repo,
            reason=args.reason,
            on_line=on_line,
            on_step=on_step,
            on_batch=_batch_printer(colour, out),
        )
    except asyncio.CancelledError:
        print(
            f"bgconsole: deploy to {colour} cancelled; lock released, event recorded",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        await services.aclose()
    if args.json:
        print_json(result.as_dict())
    else:
        print(summary(result))
    for warning in result.warnings:
        print(f"bgconsole: warning: {warning}", file=sys.stderr)
    if result.ok:
        return EXIT_OK
    _print_tails(result)
    return fail(result.failure() or f"deploy to {colour} failed", EXIT_FAILED)


async def _consent_live(
    control: ControlPlane, config: Config, colour: Colour, assume_yes: bool
) -> None:
    """Before a deploy to the live colour: say what happens to traffic, then ask.

    Only when ``colour`` is live: the stand-by needs no question, and a live colour
    without --live is refused by the runner (and recorded).
    """
    active = await control.active()
    if active is None or active.colour is not colour:
        return
    if not assume_yes and not sys.stdin.isatty():
        raise UsageError(f"{colour} is live: deploying to it needs confirmation; pass --yes")
    try:
        armed: bool | None = await control.armed()
    except ConsoleError:
        armed = None
    print(f"bgconsole: {live_deploy_preview(config, colour, armed)}", file=sys.stderr)
    if not assume_yes and not confirm(f"Deploy to the live colour {colour}?", assume_yes=False):
        raise UsageError(f"not confirmed: nothing deployed to {colour}")


def summary(result: DeployResult) -> str:
    """The text summary printed after a deploy."""
    verdict = {"ok": "ok", "failed": "FAILED", "unknown": "UNKNOWN"}[result.outcome]
    lines = [
        f"deploy {printable(result.ref or '(no ref)')} -> {result.colour} ({result.method}): "
        f"{verdict} in {result.duration:.1f} s"
    ]
    for host in result.hosts:
        status = "-" if host.exit_status is None else str(host.exit_status)
        if host.unknown:
            status = "?"
        extra = f"  {host.error}" if host.error else ""
        if host.unknown:
            extra = f"  outcome unknown: {host.error}"
        if host.note:
            extra = f"  {host.note}"
        lines.append(f"  {host.host:<16} exit {status:<4} {host.duration:6.1f} s{extra}")
    rollout = result.rollout()
    if rollout is not None:
        where = result.stopped()
        batches = len(result.batches)
        how = f"stopped at {where}" if where else f"{batches} batch(es), every one healthy"
        lines.append(f"rollout: {rollout}; {how}")
        if result.untouched:
            lines.append(f"  untouched (not deployed): {', '.join(result.untouched)}")
    health = result.health
    if health is None:
        lines.append("health: not checked (the deploy did not complete)")
    elif health.healthy:
        version = health.version or "unknown"
        if result.previous_version and result.previous_version != health.version:
            version = f"{result.previous_version} -> {version}"
        lines.append(f"health: healthy after {health.waited:.1f} s; version {version}")
    else:
        lines.append(f"health: NOT healthy after {health.waited:.1f} s")
        lines.extend(f"  {problem}" for problem in health.problems)
    lines.append(result.traffic())
    return "\n".join(lines)


def _print_tails(result: DeployResult) -> None:
    """The last output lines of every failed host, on stderr next to the error."""
    for host in result.hosts:
        if host.ok or not host.tail:
            continue
        print(f"last lines from {result.colour}/{host.host}:", file=sys.stderr)
        for text in host.tail[-TAIL_SHOWN:]:
            print(f"  {result.colour}/{host.host} | {printable(text)}", file=sys.stderr)


async def _setup(args: argparse.Namespace, colour: Colour) -> int:
    config = config_from(args)
    out = sys.stderr if args.json else sys.stdout
    services = _Services(config, args.parallel)
    on_line, _ = _printer(colour, out)
    try:
        runs = await services.runner.setup_git(colour, on_line=on_line)
    finally:
        await services.aclose()
    if args.json:
        print_json([_run_dict(r) for r in runs])
    else:
        good = sum(r.ok for r in runs)
        print(f"git pipeline on {colour}: ready on {good}/{len(runs)} host(s)")
        for r in runs:
            print(f"  {r.host:<16} {'ok' if r.ok else r.error}")
    failed = [r for r in runs if not r.ok]
    if not failed:
        return EXIT_OK
    for r in failed:
        for text in r.tail[-TAIL_SHOWN:]:
            print(f"  {colour}/{r.host} | {text}", file=sys.stderr)
    return fail(f"git setup failed on {failed[0].host}: {failed[0].error}", EXIT_FAILED)


def _run_dict(run: HostRun) -> dict[str, object]:
    return {
        "host": run.host,
        "ok": run.ok,
        "exit_status": run.exit_status,
        "error": run.error,
        "tail": list(run.tail),
    }
