"""SSH to each host with the product's own SshPool, then what deploys and logs need there.

The same pool (host-key policy, ``~/.ssh/config``, agent, jump hosts) as ``deploy`` and
``logs``, so a pass here means they can connect. Its host-key message names the host as
written in the config; for an ``~/.ssh/config`` alias that is not something
``ssh-keyscan`` can resolve, so the fix here names the resolved host and port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
import time
from pathlib import Path

import asyncssh

from console.core.config import Config, HostConfig, SshSettings, SshTarget
from console.core.doctor.model import Check, fail, ok, warn
from console.core.errors import ConfigError, ConsoleError, HostKeyError, HostUnreachable
from console.core.models import Colour
from console.core.ssh import SshAuthFailed, SshPool


def resolve(target: SshTarget, settings: SshSettings) -> tuple[str, int]:
    """The host and port ``target`` really connects to, through ``~/.ssh/config``.

    Resolved by asyncssh exactly as :class:`SshPool` connects (its ``HostName`` and
    ``Port``); without ``use_config``, the target as written.
    """
    if not settings.use_config:
        return target.host, target.port or 22
    path = Path("~/.ssh/config").expanduser()
    try:
        options = asyncssh.SSHClientConnectionOptions(
            # Named explicitly: asyncssh's own default lookup is skipped for bare options.
            config=[str(path)] if os.access(path, os.R_OK) else [],
            host=target.host,
            known_hosts=None,
            agent_path=None,
            client_keys=None,
        )
    except (OSError, ValueError, asyncssh.Error):
        return target.host, target.port or 22
    host = options.config.get("Hostname") or target.host
    port = target.port or options.config.get("Port") or 22
    return str(host), int(str(port))


def keyscan_fix(target: SshTarget, settings: SshSettings, known_hosts: str) -> str:
    """``ssh-keyscan -p PORT HOST >> KNOWN_HOSTS`` with the resolved host and port."""
    host, port = resolve(target, settings)
    shown = known_hosts.replace(str(Path.home()), "~", 1)
    via = (
        f" ({target.host} resolves to {host}:{port} in ~/.ssh/config)"
        if host != target.host
        else ""
    )
    return (
        f"ssh-keyscan -p {port} {host} >> {shown}{via}; compare the fingerprint with the "
        "host's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host) first"
    )


def _subject(colour: Colour, host: HostConfig, hosts: int) -> str:
    return colour.value if hosts == 1 else f"{colour.value}/{host.name}"


async def check_ssh(config: Config, pool: SshPool) -> list[Check]:
    """Every host with an ssh target: login, then workdir and log files; concurrently."""
    jobs = []
    for colour, host in config.all_hosts():
        subject = _subject(colour, host, len(config.env(colour).hosts))
        jobs.append(_host(config, pool, subject, host))
    results = await asyncio.gather(*jobs)
    return [check for checks in results for check in checks]


async def _host(config: Config, pool: SshPool, subject: str, host: HostConfig) -> list[Check]:
    if host.ssh is None:
        if host.deploy or host.logs:
            return [
                fail(
                    "ssh",
                    subject,
                    "deploy steps or logs are set, but no ssh target",
                    'set ssh = "user@host:port" for the host',
                )
            ]
        return [warn("ssh", subject, "no ssh target: no deploys or logs", 'set ssh = "user@host"')]
    started = time.monotonic()
    try:
        await pool.connection(host)
    except HostKeyError as e:
        known = host.known_hosts or config.ssh.known_hosts
        message = str(e)
        if "CHANGED" in message:
            return [fail("ssh", subject, message, "confirm with the host's owner before trusting")]
        detail = message.split("; trust it with:")[0]
        return [fail("ssh", subject, detail, keyscan_fix(host.ssh, config.ssh, known))]
    except SshAuthFailed as e:
        return [
            fail(
                "ssh",
                subject,
                str(e),
                "install the public key in the host's ~/.ssh/authorized_keys "
                "(ssh-copy-id), or set identity for the host",
            )
        ]
    except ConfigError as e:
        return [fail("ssh", subject, str(e), "correct the host's identity path")]
    except HostUnreachable as e:
        jump = f" and its jump host {host.jump}" if host.jump else ""
        return [fail("ssh", subject, str(e), f"check the address{jump} and the firewall")]
    took = time.monotonic() - started
    checks = [ok("ssh", subject, f"login to {host.ssh} ({took:.1f} s)")]
    checks.extend(await _files(pool, subject, host))
    return checks


def log_files(command: str) -> list[str]:
    """The files a ``tail`` log command reads (other commands: none, they are not files)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    if not words or Path(words[0]).name != "tail":
        return []
    files: list[str] = []
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
        elif word in ("-n", "-c", "--lines", "--bytes", "-s", "--pid", "--sleep-interval"):
            skip = True
        elif not word.startswith("-") or word == "-":
            files.append(word)
    return files


async def _files(pool: SshPool, subject: str, host: HostConfig) -> list[Check]:
    """Workdir present, log files readable: one remote command for both."""
    probes: list[tuple[str, str]] = []  # (what, path)
    if host.workdir:
        probes.append(("workdir", host.workdir))
    for name, command in host.logs.items():
        files = log_files(command)
        for path in files:
            probes.append((f"logs.{name}", path))
        program = _program(command)
        if not files and program:
            probes.append((f"logs.{name}", f"command:{program}"))
    if not probes:
        return []
    # Not run in the workdir: a missing workdir must not hide the log files' state.
    script = "; ".join(_test(what, path) for what, path in probes)
    try:
        result = await pool.run(dataclasses.replace(host, workdir=None), script, timeout=10.0)
    except ConsoleError as e:
        return [fail("files", subject, f"could not check workdir and log files: {e}", "see ssh")]
    answers = result.stdout.split()
    checks: list[Check] = []
    for (what, path), answer in zip(probes, answers, strict=False):
        if answer == "ok":
            if path.startswith("command:"):
                shown = f"{path.removeprefix('command:')} is installed"
            else:
                shown = f"{path}: {'directory' if what == 'workdir' else 'readable'}"
            checks.append(ok("files", subject, f"{what} {shown}"))
        elif what == "workdir":
            checks.append(
                fail(
                    "files",
                    subject,
                    f"workdir {path} does not exist: every deploy step runs there",
                    "create it, or correct workdir",
                )
            )
        elif path.startswith("command:"):
            checks.append(
                fail(
                    "files",
                    subject,
                    f"{what}: {path.removeprefix('command:')} is not installed on the host",
                    f"install it, or change the command of {what}",
                )
            )
        else:
            checks.append(
                fail(
                    "files",
                    subject,
                    f"{what}: {path} is missing or unreadable",
                    f"correct the path in {what}, or have the app write its log there",
                )
            )
    return checks


def _program(command: str) -> str | None:
    """The program a log command runs (``journalctl``), when it is a plain word."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or "=" in words[0] or any(c in words[0] for c in "$`|;&<>("):
        return None
    return words[0]


def _test(what: str, path: str) -> str:
    """One line of shell printing ok or missing for one probe."""
    if path.startswith("command:"):
        test = f"command -v {shlex.quote(path.removeprefix('command:'))} >/dev/null 2>&1"
    else:
        test = f"[ {'-d' if what == 'workdir' else '-r'} {shlex.quote(path)} ]"
    return f"if {test}; then echo ok; else echo missing; fi"
