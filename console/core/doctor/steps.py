"""Deploy steps read before they run: the traps that deploy the wrong thing or hang.

Static: nothing is run. Two traps seen on real apps:

- ``git checkout --force {ref}`` with a branch name checks out the host's *local*
  branch of that name, which ``git fetch`` does not move: the old commit is deployed and
  the deploy reports ok.
- a restart step that starts a background process without redirecting its output: the
  process keeps the step's stdout/stderr open, sshd keeps the channel open until every
  holder of them exits, so the step "runs" until ``[ssh] command_timeout``.
"""

from __future__ import annotations

import re
import shlex

from console.core.config import Config, EnvConfig
from console.core.doctor.model import Check, ok, warn

SAFE_CHECKOUT = (
    "git fetch --prune --tags --force origin, then "
    'git checkout --force --detach "$(git rev-parse --verify --quiet origin/{ref} '
    '|| git rev-parse --verify {ref}^{commit})" (a commit or tag works too)'
)
SAFE_DAEMON = (
    "redirect its output and input: nohup CMD >>log/app.log 2>&1 </dev/null &  "
    "(or let a service manager start it: systemctl restart APP)"
)

_QUOTED = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"")
# A lone '&' (not '&&', not part of a redirection like '2>&1' or '&>').
_BACKGROUND = re.compile(r"(?<![&>|])&(?![&>])")


def _unquoted(step: str) -> str:
    """The step with quoted strings blanked, so an '&' inside quotes is not an operator."""
    return _QUOTED.sub("''", step)


def stale_checkout(step: str) -> bool:
    """``git checkout`` (or ``switch``) of ``{ref}`` that can land on an old local branch."""
    if "{ref}" not in step or not re.search(r"\bgit\b.*\b(checkout|switch)\b", step):
        return False
    try:
        words = shlex.split(step)
    except ValueError:
        words = step.split()
    # Detached checkouts and remote-tracking refs always name what was fetched.
    if "--detach" in words or "-d" in words or "origin/{ref}" in step:
        return False
    # `git reset --hard origin/{ref}` elsewhere in the same step fixes it up too.
    return "reset --hard origin/" not in step


def background_unredirected(step: str) -> bool:
    """A step that backgrounds a process whose stdout or stderr still goes to the step."""
    text = _unquoted(step)
    backgrounds = bool(_BACKGROUND.search(text)) or re.search(r"\bnohup\b", text) is not None
    if not backgrounds:
        return False
    out = re.search(r"(?:^|[^0-9&])>|1>|&>", text) is not None
    err = "2>" in text or "&>" in text
    return not (out and err)


def check_steps(config: Config) -> list[Check]:
    """One check per colour: deploy steps present, and free of the traps above."""
    checks: list[Check] = []
    for env in config.envs.values():
        checks.extend(_env_steps(config, env))
    return checks


def _env_steps(config: Config, env: EnvConfig) -> list[Check]:
    subject = f"{env.colour} deploy"
    if env.git is not None and not any(h.deploy for h in env.hosts):
        if background_unredirected(env.git.restart):
            return [
                warn(
                    "steps",
                    subject,
                    f"git restart {env.git.restart!r} starts a background process without "
                    "redirecting its output: the push (and the deploy) waits for it to exit",
                    SAFE_DAEMON,
                )
            ]
        return [ok("steps", subject, f"git push pipeline to {env.git.repo}")]
    steps: dict[str, list[str]] = {}
    missing = [h.name for h in env.hosts if not h.deploy]
    for host in env.hosts:
        for step in host.deploy:
            steps.setdefault(step, []).append(host.name)
    if missing and not steps:
        return [
            warn(
                "steps",
                subject,
                "no deploy steps: bgconsole deploy cannot deploy this colour",
                f"set env.{env.colour}.deploy = [...] (see the README, Onboarding)",
            )
        ]
    found: list[Check] = []
    if missing:
        found.append(
            warn(
                "steps",
                subject,
                f"host(s) {', '.join(missing)} have no deploy steps",
                f"set deploy for every host of env.{env.colour}",
            )
        )
    timeout = config.ssh.command_timeout
    for step in steps:
        if stale_checkout(step):
            found.append(
                warn(
                    "steps",
                    subject,
                    f"{step!r}: with a branch name this checks out the host's old local "
                    "branch (git fetch does not move it): the old commit is deployed and "
                    "reported ok",
                    SAFE_CHECKOUT,
                )
            )
        if background_unredirected(step):
            found.append(
                warn(
                    "steps",
                    subject,
                    f"{step!r} starts a background process without redirecting its output: "
                    "it holds the SSH channel open, so the step only ends at the command "
                    f"timeout ({timeout:g} s, [ssh] command_timeout)",
                    SAFE_DAEMON,
                )
            )
    if not found:
        n = len(steps)
        found.append(ok("steps", subject, f"{n} step{'s' if n != 1 else ''}, none risky"))
    return found
