"""Gates and hooks (``[[hook]]``): commands run before a switch, or after a switch or deploy.

- ``pre_switch`` hooks are **gates**: each must exit 0 before an operator's switch
  commits (e.g. a smoke test against the stand-by). They run after the target's health
  check, holding the switch lock, before the compare-and-set: a failing gate leaves the
  control plane and the router untouched. Their output is shown as progress and kept
  (the last lines) in the switch's event.
- ``post_switch`` and ``post_deploy`` hooks report: a failure is shown and recorded,
  and undoes nothing.
- ``--skip-gates`` skips the gates and says so in the event. The agent's automatic
  failover never runs them: it is the emergency path, and its event says so.

Every hook runs through the router's executors (:mod:`console.core.remote_exec`):
locally, or over SSH with ``ssh = "user@host:port"``. The facts are environment variables
(``BG_FROM``, ``BG_TO``, ``BG_EPOCH``, ``BG_ACTOR``, ``BG_REASON``, ``BG_APP``, and
``BG_REF`` after a deploy), exported by a shell prefix so they reach a command over SSH
too (sshd drops client environment variables unless ``AcceptEnv`` lists them).
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from console.core.config import Config, HookConfig
from console.core.control import ControlPlane
from console.core.errors import BackendError, ConfigError, ConsoleError
from console.core.remote_exec import Executor, LocalExecutor, SshExecutor

Progress = Callable[[str], None]

_OUTPUT_LINES = 20
"""Lines of a hook's output kept in the event (the end: where scripts say why)."""
_EVENT_CHARS = 2000


class GateFailed(ConsoleError):
    """A ``pre_switch`` gate did not exit 0: the switch did not happen."""


@dataclass(frozen=True, slots=True)
class HookRun:
    """One hook's run: where, how it ended, and the end of its output."""

    name: str
    when: str
    where: str
    exit_status: int | None
    """None when it could not run or was killed at its timeout (see ``error``)."""
    output: str
    """The last lines of stdout and stderr."""
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Exited 0."""
        return self.exit_status == 0

    def describe(self) -> str:
        """``smoke: exit 0 in 1.2 s`` or why it failed."""
        how = f"exit {self.exit_status}" if self.error is None else self.error
        return f"{self.name}: {how} in {self.seconds:.1f} s"

    def detail(self) -> str:
        """The run and its output, for the event's details."""
        text = self.describe()
        if self.output:
            text += "\n" + self.output
        return text[-_EVENT_CHARS:]


def hook_env(
    app: str,
    *,
    before: str,
    to: str,
    epoch: int | None,
    actor: str,
    reason: str,
    ref: str | None = None,
    colour: str | None = None,
) -> dict[str, str]:
    """The facts a hook gets as environment variables.

    For a switch ``BG_FROM``/``BG_TO`` are colours; after a deploy they are the versions
    before and after, ``BG_COLOUR`` the colour deployed and ``BG_REF`` the ref.
    """
    env = {
        "BG_APP": app,
        "BG_FROM": before,
        "BG_TO": to,
        "BG_EPOCH": "" if epoch is None else str(epoch),
        "BG_ACTOR": actor,
        "BG_REASON": reason,
    }
    if ref is not None:
        env["BG_REF"] = ref
    if colour is not None:
        env["BG_COLOUR"] = colour
    return env


async def after_deploy(
    config: Config,
    control: ControlPlane,
    *,
    colour: str,
    ref: str | None,
    before: str,
    after: str,
    reason: str,
) -> list[str]:
    """Run the ``post_deploy`` hooks after a successful deploy; warnings for the failed."""
    if not any(hook.when == "post_deploy" for hook in config.hooks):
        return []
    env = hook_env(
        config.console.name, before=before, to=after, epoch=None, actor=control.actor,
        reason=reason, ref=ref or "", colour=colour,
    )  # fmt: skip
    runs = await run_after(config, control, "post_deploy", env, lambda _line: None)
    return [f"post_deploy hook {run.describe()} (nothing was undone)" for run in runs if not run.ok]


def _executor(config: Config, hook: HookConfig) -> Executor:
    if hook.ssh is None:
        return LocalExecutor()
    return SshExecutor(hook.ssh, config.ssh, identity=hook.identity)


def _tail(stdout: str, stderr: str) -> str:
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    return "\n".join(lines[-_OUTPUT_LINES:])


async def run_hook(config: Config, hook: HookConfig, env: Mapping[str, str]) -> HookRun:
    """Run one hook with the facts exported; never raises for the command's own failure."""
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    command = f"export {exports}; {hook.command}"
    executor = _executor(config, hook)
    where = "local" if hook.ssh is None else f"ssh {hook.ssh}"
    started = time.monotonic()
    try:
        result = await executor.run(command, hook.timeout)
    except (BackendError, ConfigError) as e:
        # The executor quotes the whole command; say it with the hook's own words.
        error = str(e).replace(repr(command), repr(hook.command))
        return HookRun(hook.name, hook.when, where, None, "", time.monotonic() - started, error)
    finally:
        with contextlib.suppress(ConsoleError, OSError):
            await executor.aclose()
    return HookRun(
        hook.name,
        hook.when,
        where,
        result.exit_status,
        _tail(result.stdout, result.stderr),
        time.monotonic() - started,
    )


def _say_run(run: HookRun, say: Progress) -> None:
    say(f"{run.when} {run.describe()} ({run.where})")
    for line in run.output.splitlines():
        say(f"  {run.name} | {line}")


async def run_gates(
    config: Config,
    control: ControlPlane,
    *,
    before: str,
    to: str,
    epoch: int,
    reason: str,
    skip: bool,
    say: Progress,
) -> dict[str, str]:
    """Run the ``pre_switch`` gates in order; the event details to record with the switch.

    Raises:
        GateFailed: a gate did not exit 0 (recorded as a refused switch, with its output);
            the gates after it did not run.
    """
    gates = [hook for hook in config.hooks if hook.when == "pre_switch"]
    if not gates:
        return {}
    names = ", ".join(gate.name for gate in gates)
    if skip:
        say(f"gates SKIPPED (--skip-gates): {names}")
        return {"gates": f"skipped by the operator (--skip-gates): {names}"}
    env = hook_env(
        config.console.name, before=before, to=to, epoch=epoch, actor=control.actor, reason=reason
    )
    details: dict[str, str] = {}
    for gate in gates:
        say(f"gate {gate.name}: running ({'local' if gate.ssh is None else f'ssh {gate.ssh}'})")
        run = await run_hook(config, gate, env)
        _say_run(run, say)
        details[f"gate {gate.name}"] = run.detail()
        if not run.ok:
            what = f"gate {run.describe()}"
            with contextlib.suppress(ConsoleError):
                await control.record(
                    "switch",
                    f"switch {before} -> {to} refused: {what}",
                    before=before,
                    after=to,
                    reason=reason,
                    outcome="refused",
                    details=details,
                )
            last = run.output.splitlines()[-1] if run.output else ""
            raise GateFailed(
                f"switch {before} -> {to} refused: {what}"
                + (f": {last}" if last else "")
                + "; nothing changed (bypass with --skip-gates)"
            )
    return details


async def run_after(
    config: Config,
    control: ControlPlane,
    when: str,
    env: Mapping[str, str],
    say: Progress,
) -> list[HookRun]:
    """Run the ``post_switch`` or ``post_deploy`` hooks; failures are shown and recorded.

    Every hook runs, whatever the one before it did: they report, they do not gate.
    """
    runs: list[HookRun] = []
    for hook in (h for h in config.hooks if h.when == when):
        run = await run_hook(config, hook, env)
        _say_run(run, say)
        runs.append(run)
        if not run.ok:
            with contextlib.suppress(ConsoleError):
                await control.record(
                    "hook",
                    f"{when} hook {run.describe()} (nothing was undone)",
                    before=env.get("BG_FROM", ""),
                    after=env.get("BG_TO", ""),
                    outcome="failed",
                    details={hook.name: run.detail()},
                )
    return runs


def failover_gates_note(config: Config) -> dict[str, str]:
    """For the agent's failover event: the gates it did not run (the emergency path)."""
    names = [hook.name for hook in config.hooks if hook.when == "pre_switch"]
    if not names:
        return {}
    return {"gates": f"skipped (automatic failover does not wait for gates): {', '.join(names)}"}
