"""``bgconsole init``: write a commented starter configuration."""

from __future__ import annotations

import argparse
import copy
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from console.cli.common import EXIT_OK, SubParsers
from console.core.config import parse_config
from console.core.doctor.detect import Detection, detect
from console.core.errors import ConfigError, UsageError

# Deploy steps that cannot deploy a stale local branch: the ref is resolved to a commit
# (the fetched remote branch, else a tag or commit) and checked out detached; the last
# step restarts through a service manager, so no background process holds the step's
# output (which would keep the SSH channel open until [ssh] command_timeout).
STARTER_STEPS = (
    "git fetch --prune --tags --force origin",
    'git checkout --force --detach "$(git rev-parse --verify --quiet origin/{ref}'
    " || git rev-parse --verify {ref}^{commit})\" && git log -1 --format='deployed %H %s'",
    "sudo systemctl restart myapp",
)

# (comment, section data) in file order. The data is written by tomli-w so it is valid
# TOML whatever the values; the comments say what each section is for.
_STARTER: list[tuple[str, dict[str, Any]]] = [
    (
        "The application's name; control-plane keys live under bg:<name>: in [control].",
        {"console": {"name": "myapp", "theme": "bgconsole-dark"}},
    ),
    (
        "The shared control-plane Redis (redis://, rediss://; user:password@ for ACLs).",
        {"control": {"redis": "redis://127.0.0.1:6379/0", "timeout": 2.0}},
    ),
    (
        "How traffic moves: builtin (bgconsole serve is the proxy), haproxy, nginx, command.",
        {"router": {"kind": "builtin", "listen": "127.0.0.1:8080"}},
    ),
    (
        "Automatic failover by the agent: probe every interval; a host is down after `fall`\n"
        "failed probes, up after `rise` good ones; no automatic switch within min_dwell s.",
        {
            "failover": {
                "enabled": True,
                "interval": 0.5,
                "timeout": 0.4,
                "fall": 2,
                "rise": 2,
                "min_dwell": 30.0,
            }
        },
    ),
    (
        "SSH follows OpenSSH: ~/.ssh/config, the agent, known_hosts (strict by default).",
        {"ssh": {"known_hosts": "~/.ssh/known_hosts", "host_key_policy": "strict"}},
    ),
    (
        "The two environments. One host each here; list [[env.<colour>.hosts]] for fleets.\n"
        "Every value here is an example: `bgconsole doctor` flags the ones left unchanged\n"
        "and checks the rest against the real hosts. health_path: a light endpoint, not /.\n"
        "version: how the app says its release (json:FIELD, header:NAME, path:/URL); with\n"
        "it a deploy waits for the new release, without it the deploy says version unknown.",
        {
            "env": {
                colour: {
                    "url": f"http://10.0.0.{n}:3000",
                    "health_path": "/health",
                    "version": "json:version",
                    "ssh": f"deploy@10.0.0.{n}",
                    "workdir": "/srv/myapp",
                    "deploy": list(STARTER_STEPS),
                    "flags_redis": f"redis://10.0.0.{n}:6379/0",
                    "logs": {"app": "tail -F /srv/myapp/log/app.log"},
                }
                for n, colour in ((1, "blue"), (2, "green"))
            }
        },
    ),
    (
        "Feature flags: one key per flag in each colour's flags_redis, holding ON or OFF.",
        {"flags": {"new_feature": {"description": "An example flag"}}},
    ),
]


def starter_text(found: Detection | None = None) -> str:
    """The starter configuration as commented TOML; with ``found`` (``init --detect``),
    blue is the probed app and the comments say what was and was not found."""
    parts = [
        "# bgconsole configuration. Every key is documented in sample.toml and the README.\n"
        "# Check it against the real setup with: bgconsole doctor -c <this file>\n"
    ]
    for comment, data in _STARTER:
        if found is not None and "env" in data:
            comment, data = _detected(comment, data, found)
        lines = "".join(f"# {line}\n" for line in comment.splitlines())
        parts.append(lines + tomli_w.dumps(data))
    return "\n".join(parts)


def _detected(comment: str, data: dict[str, Any], found: Detection) -> tuple[str, dict[str, Any]]:
    """The env section with blue set to what probing the app found."""
    env = copy.deepcopy(data)
    blue = env["env"]["blue"]
    blue["url"] = found.url
    for colour in ("blue", "green"):
        if found.health_path is not None:
            env["env"][colour]["health_path"] = found.health_path
        if found.version is not None:
            env["env"][colour]["version"] = found.version
        else:
            env["env"][colour].pop("version", None)
    said = [f"Detected at {found.url} (blue; green is its second copy, not probed):"]
    said += [f"  {note}" for note in found.notes]
    return comment + "\n" + "\n".join(said), env


def register(subparsers: SubParsers) -> None:
    """Add the ``init`` verb."""
    parser = subparsers.add_parser(
        "init",
        help="write a commented starter configuration",
        description="Write a starter configuration to FILE (default ./bgconsole.toml); "
        "never overwrites an existing file.",
    )
    parser.add_argument("file", nargs="?", default="bgconsole.toml", help="where to write it")
    parser.add_argument(
        "--detect",
        metavar="URL",
        help="probe the running app at URL (health paths /health, /healthz, /status, /ping, "
        "/; version headers, JSON fields, /version) and write what was found as blue",
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Write the starter file, refusing to overwrite."""
    found = None
    if args.detect is not None:
        _refuse_existing(args.file)  # said before probing anything
        found = await detect(args.detect)
        for note in found.notes:
            print(f"detected {note}")
    path = write_starter(args.file, found)
    print(f"wrote {path}; edit it, then: bgconsole doctor -c {path}")
    return EXIT_OK


def write_starter(file: str, found: Detection | None = None) -> Path:
    """Write the starter configuration to a new file; returns its path."""
    path = Path(file).expanduser()
    text = starter_text(found)
    # The starter must itself be valid: fail here rather than hand out a broken file.
    parse_config(tomllib.loads(text), path)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting it") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot write: {e.strerror}") from None
    return path


def _refuse_existing(file: str) -> None:
    path = Path(file).expanduser()
    if path.exists():
        raise UsageError(f"{path} already exists; not overwriting it")
