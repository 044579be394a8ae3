"""The deploy pipeline: lock, steps over SSH (or a git push), events, then a health wait."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shlex
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from console.core.config import Config, EnvConfig, HostConfig
from console.core.control import ControlPlane
from console.core.errors import ConfigError, ConsoleError, HostUnreachable, UsageError
from console.core.fleet import name_list
from console.core.gates import after_deploy
from console.core.git_pipeline import GitPipeline, HostRun
from console.core.locks import HeldLock
from console.core.models import ActiveState, Colour, HealthSnapshot, Probe
from console.core.ssh import CommandExit, CommandTimeout, OutputLine, SshPool
from console.core.text import printable

DeployMethod = Literal["steps", "git"]
Outcome = Literal["ok", "failed", "unknown"]
LineCallback = Callable[[OutputLine], None]

TAIL_LINES = 20
"""Output lines kept per host for the failure message."""
DEFAULT_PARALLEL = 10
"""Hosts deployed at once: a fleet of tens of hosts goes in waves, not all in one burst."""
BatchState = Literal["started", "healthy", "failed"]
BatchRunner = Callable[[Sequence[HostConfig]], Awaitable[list["HostDeployResult"]]]
"""Deploys one batch of hosts (steps over SSH, or a git push); a result per host."""
LOCK_TTL = 60.0
"""The deploy lock lives this long unrenewed, so a crashed deploy frees it within a minute."""
LOCK_RENEW_EVERY = 15.0
_CONNECTION_LOST = "connection lost"


class HealthSource(Protocol):
    """What the health wait needs from :class:`console.core.health.HealthChecker`."""

    async def check_all(self) -> HealthSnapshot: ...


@runtime_checkable
class HostProber(Protocol):
    """A health source that can probe chosen hosts (``HealthChecker`` can): the waits
    then probe only the hosts they are about, not every host of both colours each round."""

    async def probe(self, host: HostConfig, *, want_version: bool = True) -> Probe: ...


@dataclass(frozen=True, slots=True)
class StepStarted:
    """Reported through ``on_step`` when a host starts a deploy step."""

    host: str
    index: int
    """1-based position of the step."""
    total: int
    command: str


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Reported through ``on_batch`` as a batch of hosts starts, turns healthy or fails."""

    index: int
    """1-based position of the batch."""
    total: int
    hosts: tuple[str, ...]
    canary: bool
    """The first batch, one host alone, when the deploy has a canary."""
    state: BatchState
    detail: str = ""
    """``healthy after 0.4 s``, or why the batch failed."""
    waited: float = 0.0


def plan_batches(hosts: Sequence[str], parallel: int, canary: bool) -> list[tuple[str, ...]]:
    """The hosts in the order they are deployed: the canary alone (the first host), then
    batches of ``parallel``. Each batch must be deployed and healthy before the next starts,
    so a bad release stops at the canary, or at the first batch it breaks."""
    size = max(1, parallel)
    names = list(hosts)
    first: list[tuple[str, ...]] = []
    if canary and len(names) > 1:
        first, names = [(names[0],)], names[1:]
    return first + [tuple(names[i : i + size]) for i in range(0, len(names), size)]


@dataclass(frozen=True, slots=True)
class HostDeployResult:
    """How the deploy went on one host."""

    host: str
    exit_status: int | None
    """The failing step's exit status, 0 when every step passed, None if it never finished."""
    duration: float
    steps_run: int
    steps_total: int
    failed_step: str | None = None
    error: str | None = None
    """Why the host could not finish (unreachable, timed out, cancelled...)."""
    tail: tuple[str, ...] = ()
    """The host's last output lines, oldest first."""
    unknown: bool = False
    """A step started, then the host stopped answering (connection lost, timed out): it
    may or may not have done its work, and a re-check could not tell."""
    note: str | None = None
    """How an interrupted host was found to be deployed after all (the version probe)."""

    @property
    def ok(self) -> bool:
        """Every step ran and exited 0 (or the last one was cut short, yet the release is
        found installed)."""
        return self.exit_status == 0 and self.error is None

    def describe(self) -> str:
        """One line: what happened on this host."""
        if self.ok:
            done = f"{self.host}: ok ({self.steps_run} step(s), {self.duration:.1f} s)"
            return f"{done}; {self.note}" if self.note else done
        if self.unknown:
            step = f"step {self.steps_run}/{self.steps_total}"
            return f"{self.host}: outcome unknown: {self.error} (during {step})"
        if self.error:
            return f"{self.host}: {self.error}"
        step = f"step {self.steps_run}/{self.steps_total}"
        return f"{self.host}: {step} {self.failed_step!r} exited {self.exit_status}"


@dataclass(frozen=True, slots=True)
class HealthWait:
    """The wait for the environment to turn healthy after the deploy."""

    healthy: bool
    waited: float
    versions: dict[str, str | None] = field(default_factory=dict)
    """host -> version it reports (None when it reports none)."""
    problems: tuple[str, ...] = ()
    """``host: cause`` for every host still failing when the wait ended."""
    stale: bool = False
    """Every host answered, but some still served the version from before the deploy
    when the wait ended (``problems`` names them): the new release is not serving."""
    failing: tuple[str, ...] = ()
    """The hosts ``problems`` is about (names only), in config order."""

    @property
    def version(self) -> str | None:
        """The environment's version: the one every host reports, or a mix shown as a list."""
        found = sorted({v for v in self.versions.values() if v is not None})
        if not found:
            return None
        return found[0] if len(found) == 1 else ", ".join(found)


@dataclass(frozen=True, slots=True)
class DeployResult:
    """The outcome of one deploy."""

    colour: Colour
    ref: str | None
    method: DeployMethod
    hosts: tuple[HostDeployResult, ...]
    health: HealthWait | None
    """None when the deploy failed before the wait."""
    duration: float
    warnings: tuple[str, ...] = ()
    previous_version: str | None = None
    """The version the colour reported just before the deploy (None if unknown)."""
    traffic_before: ActiveState | None = None
    """The control plane's live colour when the deploy began (None: none set yet)."""
    traffic_after: ActiveState | None = None
    """The live colour read again at the end (None: unknown, the read failed)."""
    batches: tuple[tuple[str, ...], ...] = ()
    """The rollout plan (canary first), for steps and git pushes alike."""
    stopped_at: int | None = None
    """1-based batch that failed and stopped the rollout (None: it did not stop)."""
    untouched: tuple[str, ...] = ()
    """Hosts of later batches, left as they were (nothing ran on them)."""

    @property
    def deployed(self) -> bool:
        """Every host ran its deploy successfully (none left untouched)."""
        return all(h.ok for h in self.hosts) and not self.untouched

    @property
    def failed_hosts(self) -> tuple[str, ...]:
        """Hosts whose steps failed (or whose outcome is unknown), then hosts deployed but
        not healthy when the rollout stopped."""
        bad = [h.host for h in self.hosts if not h.ok]
        if self.health is not None and not self.health.healthy:
            bad += [name for name in self.health.failing if name not in bad]
        return tuple(bad)

    @property
    def deployed_hosts(self) -> tuple[str, ...]:
        """Hosts that ran every step and were not found unhealthy."""
        failed = set(self.failed_hosts)
        return tuple(h.host for h in self.hosts if h.ok and h.host not in failed)

    def rollout(self) -> str | None:
        """``6 of 20 host(s) deployed, 1 failed (app7), 13 left untouched (app8, ...)``;
        None for a deploy in one batch that did not stop (nothing to add)."""
        if len(self.batches) <= 1 and not self.untouched:
            return None
        total = len(self.hosts) + len(self.untouched)
        text = f"{len(self.deployed_hosts)} of {total} host(s) deployed"
        failed = self.failed_hosts
        if failed:
            text += f", {len(failed)} failed ({name_list(failed)})"
        if self.untouched:
            text += f", {len(self.untouched)} left untouched ({name_list(self.untouched)})"
        return text

    def stopped(self) -> str | None:
        """``the canary app1`` / ``batch 3/5 (app7, ...)``: where the rollout stopped."""
        if self.stopped_at is None or len(self.batches) <= 1:
            return None  # one batch: the failure itself says it all
        batch = self.batches[self.stopped_at - 1]
        if self.stopped_at == 1 and len(batch) == 1 and len(self.batches) > 1:
            return f"the canary {batch[0]}"
        return f"batch {self.stopped_at}/{len(self.batches)} ({name_list(batch)})"

    @property
    def failover(self) -> ActiveState | None:
        """The agent's failover (or failback) that moved traffic during the deploy, if any."""
        before, after = self.traffic_before, self.traffic_after
        if before is None or after is None or after.epoch <= before.epoch:
            return None
        if after.kind not in ("failover", "failback"):
            return None
        return after

    @property
    def ok(self) -> bool:
        """Deployed everywhere, healthy afterwards, and no failover on the way."""
        healthy = self.health is not None and self.health.healthy
        return self.deployed and healthy and self.failover is None

    @property
    def outcome(self) -> Outcome:
        """ok; unknown when some host's outcome cannot be told and none failed; else failed."""
        if self.ok:
            return "ok"
        definite = [h for h in self.hosts if not h.ok and not h.unknown]
        if not definite and any(h.unknown for h in self.hosts):
            return "unknown"
        return "failed"

    def traffic(self) -> str:
        """Where traffic is at the end, in one line (``traffic: on blue (epoch 7) ...``)."""
        before, after = self.traffic_before, self.traffic_after
        if after is None:
            return "traffic: unknown (the control plane could not be read at the end)"
        where = f"traffic: on {after.colour} (epoch {after.epoch})"
        if before is None:
            return where
        if after.epoch == before.epoch:
            return f"{where}, as before the deploy"
        how = "failed over" if after.kind in ("failover", "failback") else "switched"
        return f"{where}: {how} from {before.colour} during the deploy"

    @property
    def version(self) -> str | None:
        """The version reported after the deploy, if the health wait saw one."""
        return self.health.version if self.health else None

    def failure(self) -> str | None:
        """One line on why the deploy failed (or has an unknown outcome), None when it did not."""
        why = self._failure()
        if why is None:
            return None
        where, rollout = self.stopped(), self.rollout()
        if where is not None:
            why = f"{why}; stopped at {where}"
        return f"{why}; {rollout}" if rollout else why

    def _failure(self) -> str | None:
        failover = self.failover
        if failover is not None and self.traffic_before is not None:
            return (
                f"the agent failed over from {self.traffic_before.colour} to {failover.colour} "
                f"during the deploy (epoch {failover.epoch}: {printable(failover.reason)}); "
                f"traffic is on {failover.colour} (epoch {failover.epoch})"
            )
        if self.outcome == "unknown":
            hosts = [h for h in self.hosts if h.unknown]
            more = f" (and {len(hosts) - 1} more host(s))" if len(hosts) > 1 else ""
            return (
                f"deploy to {self.colour}: {hosts[0].describe()}{more}; the release may or "
                "may not be installed: check the host, then deploy again"
            )
        failed = [h for h in self.hosts if not h.ok]
        if failed:
            more = f" (and {len(failed) - 1} more host(s))" if len(failed) > 1 else ""
            return f"deploy to {self.colour} failed on {failed[0].describe()}{more}"
        if self.health is not None and self.health.stale:
            return (
                f"deploy to {self.colour} ran, but {'; '.join(self.health.problems)}: the "
                "restart did not take, or the steps installed the old release "
                "(bgconsole doctor checks the deploy steps)"
            )
        if self.health is not None and not self.health.healthy:
            why = "; ".join(self.health.problems) or "not healthy"
            return (
                f"deploy to {self.colour} ran, but it did not turn healthy "
                f"(checked for {self.health.waited:.1f} s): {why}"
            )
        return None

    def as_dict(self) -> dict[str, object]:
        """Plain data for ``--json`` output."""
        return {
            "colour": self.colour.value,
            "ref": self.ref,
            "method": self.method,
            "ok": self.ok,
            "outcome": self.outcome,
            "deployed": self.deployed,
            "duration": round(self.duration, 3),
            "version": self.version,
            "previous_version": self.previous_version,
            "error": self.failure(),
            "batches": [list(b) for b in self.batches],
            "stopped_at_batch": self.stopped_at,
            "deployed_hosts": list(self.deployed_hosts),
            "failed_hosts": list(self.failed_hosts),
            "untouched_hosts": list(self.untouched),
            "hosts": [
                {
                    "host": h.host,
                    "ok": h.ok,
                    "exit_status": h.exit_status,
                    "duration": round(h.duration, 3),
                    "steps_run": h.steps_run,
                    "steps_total": h.steps_total,
                    "failed_step": h.failed_step,
                    "error": h.error,
                    "unknown": h.unknown,
                    "note": h.note,
                    "tail": list(h.tail),
                }
                for h in self.hosts
            ],
            "traffic": self.traffic(),
            "live_before": _active_dict(self.traffic_before),
            "live_after": _active_dict(self.traffic_after),
            "health": None
            if self.health is None
            else {
                "healthy": self.health.healthy,
                "waited": round(self.health.waited, 3),
                "versions": self.health.versions,
                "problems": list(self.health.problems),
            },
            "warnings": list(self.warnings),
        }

    def exit_statuses(self) -> str:
        """``host=status`` for every host, for events (``-`` when it never finished)."""
        return ",".join(
            f"{h.host}={'-' if h.exit_status is None else h.exit_status}" for h in self.hosts
        )


def _active_dict(active: ActiveState | None) -> dict[str, object] | None:
    if active is None:
        return None
    return {"colour": active.colour.value, "epoch": active.epoch, "kind": active.kind}


def _joined(versions: Mapping[str, str | None]) -> str | None:
    """The colour's version for the record: one, or the mix as a list; None if unknown."""
    return ", ".join(sorted({v for v in versions.values() if v is not None})) or None


def _is_new(version: str, was: str | None, targets: set[str]) -> bool:
    """Whether a host reporting ``version`` (``was`` before the deploy) runs the release
    named by ``targets`` (the ref, the commit): it says so, or it changed."""
    if version in targets or was is None or version != was:
        return True
    # A short commit id as the version, the full one as the target (or the other way).
    return len(version) >= 7 and any(
        t.startswith(version) or version.startswith(t) for t in targets if len(t) >= 7
    )


def _version_warnings(env: EnvConfig, health: HealthWait) -> list[str]:
    """ "version unknown", said loudly: nothing could tell the new release from the old."""
    if not health.healthy:
        return []
    blind = [h.name for h in env.hosts if h.version is None]
    if not blind:
        return []
    which = "" if len(blind) == len(env.hosts) else f" (host(s) {', '.join(blind)})"
    return [
        f"version unknown: {env.colour}{which} reports no version, so this deploy cannot "
        "tell the new release from the old one: a restart that did not take, or steps "
        "that checked out an old commit, pass as ok. Set env."
        f"{env.colour}.version (bgconsole doctor shows what the app exposes)"
    ]


def check_ref(ref: str | None) -> None:
    """Refuse a ref that a remote command could read as an option or as more than one word.

    Steps get the ref shell-quoted, but quoting does not stop ``bin/deploy '--help'`` from
    seeing an option, and not every deploy script takes ``--``.

    Raises:
        UsageError: the ref is empty, starts with ``-``, or holds control characters.
    """
    if ref is None:
        return
    if not ref:
        raise UsageError("--ref is empty: name a version, tag or commit")
    if ref.startswith("-"):
        raise UsageError(
            f"--ref {printable(ref)!r} starts with '-': a remote command would read it as "
            "an option; name a version, tag or commit"
        )
    if not ref.isprintable():
        raise UsageError(f"--ref {printable(ref)!r} holds control characters")


def live_deploy_preview(config: Config, colour: Colour, armed: bool | None) -> str:
    """What a deploy to the live ``colour`` does to traffic, said before it starts."""
    grace = config.failover.restart_grace
    head = f"{colour} is LIVE: its users are served by it while it deploys."
    if armed is False:
        return (
            f"{head} Automatic failover is DISARMED: if {colour} stops answering or answers "
            f"5xx, nothing moves traffic to {colour.other}; users get the errors."
        )
    tolerance = (
        f"A restart may refuse connections for up to {grace:g} s (restart_grace) without a "
        "failover; "
        if grace > 0
        else ""
    )
    unknown = " (if failover is armed; the control plane did not say)" if armed is None else ""
    return (
        f"{head} {tolerance}if {colour} answers 5xx or stays down longer, the agent fails "
        f"over to {colour.other}{unknown}, and the deploy says so and exits 1."
    )


def plan_method(env: EnvConfig, method: DeployMethod | None) -> DeployMethod:
    """Which pipeline deploys ``env``: the one asked for, else steps, else git.

    Raises:
        ConfigError: the environment has no way to deploy (names the key to add).
    """
    key = f"env.{env.colour}"
    if method == "git":
        if env.git is None:
            raise ConfigError(f"{key}.git: missing; add repo and worktree to deploy with --git")
        return "git"
    if method == "steps" or env.git is None:
        missing = [h.name for h in env.hosts if not h.deploy]
        if missing:
            raise ConfigError(
                f"{key}.deploy: no deploy steps for host(s) {', '.join(missing)}; "
                f"set deploy = [...] (or configure {key}.git)"
            )
        return "steps"
    if all(h.deploy for h in env.hosts):
        return "steps"
    return "git"


def render_step(step: str, ref: str | None) -> str:
    """A deploy step with ``{ref}`` replaced by the shell-quoted ref.

    Only ``{ref}`` is replaced (not ``str.format``), so shell braces like ``${HOME}`` in
    steps stay as written.

    Raises:
        UsageError: the step uses ``{ref}`` but no ref was given.
    """
    if "{ref}" not in step:
        return step
    if ref is None:
        raise UsageError(f"deploy step {step!r} uses {{ref}}: pass --ref REF")
    return step.replace("{ref}", shlex.quote(ref))


class DeployRunner:
    """Runs deploys to one colour at a time under the control-plane lock ``deploy:<colour>``.

    Services are passed in and owned by the caller (who closes them).
    """

    def __init__(
        self,
        config: Config,
        control: ControlPlane,
        pool: SshPool,
        health: HealthSource,
        *,
        parallel: int = DEFAULT_PARALLEL,
        canary: bool = True,
        preconnect: bool = True,
        lock_ttl: float = LOCK_TTL,
        lock_renew_every: float = LOCK_RENEW_EVERY,
    ) -> None:
        self.config = config
        self.control = control
        self.pool = pool
        self.health = health
        self.parallel = max(1, parallel)
        self.canary = canary
        """Deploy the first host alone, and see it healthy, before any other (steps or git)."""
        self.preconnect = preconnect
        """Open the next batch's SSH connections while a batch waits for health (steps)."""
        self.lock_ttl = lock_ttl
        self.lock_renew_every = lock_renew_every
        self._lock: HeldLock | None = None
        """The deploy lock while a deploy runs; every step checks it first."""

    async def deploy(
        self,
        colour: Colour,
        *,
        ref: str | None = None,
        live_ok: bool = False,
        method: DeployMethod | None = None,
        repo: Path | None = None,
        reason: str = "",
        on_line: LineCallback | None = None,
        on_step: Callable[[StepStarted], None] | None = None,
        on_batch: Callable[[BatchProgress], None] | None = None,
    ) -> DeployResult:
        """Deploy ``ref`` to ``colour`` and wait for it to turn healthy.

        Hosts go in batches (``plan_batches``), with steps or a git push alike: the canary
        alone, then ``parallel`` at a time, each batch deployed and healthy (with every host
        before it) before the next starts. The first batch that fails stops the rollout:
        the hosts of later batches are left untouched, and the result names them.

        Failures of the deploy itself (a step exits non-zero, a host is unreachable, the
        health wait times out) come back in the result; refusals raise.

        Raises:
            UsageError: ``colour`` is live and ``live_ok`` is False, or a step needs a ref.
            ConfigError: the environment has nothing to deploy with.
            LockHeld: another deploy to this colour is running (the message names who).
            ControlPlaneUnavailable: the control plane cannot be reached.
        """
        check_ref(ref)
        env = self.config.env(colour)
        chosen = plan_method(env, method)
        git = GitPipeline(self.config, self.pool, parallel=self.parallel)
        steps: dict[str, tuple[str, ...]] = {}
        if chosen == "steps":
            steps = {h.name: tuple(render_step(s, ref) for s in h.deploy) for h in env.hosts}
        else:
            ref = ref or "HEAD"
            git.check_local(repo)
        before = await self._refuse_live(colour, ref, live_ok, reason)
        live_epoch = before.epoch if before is not None and before.colour is colour else None
        holding = self.control.holding(
            f"deploy:{colour}",
            f"deploy {ref or '(no ref)'}",
            ttl=self.lock_ttl,
            renew_every=self.lock_renew_every,
        )
        async with holding as held:
            self._lock = held
            started = time.monotonic()
            warnings: list[str] = []
            try:
                details = {"ref": ref or "", "method": chosen, "hosts": str(len(env.hosts))}
                plan = plan_batches([h.name for h in env.hosts], self.parallel, self.canary)
                if len(plan) > 1:
                    details["batches"] = "+".join(str(len(b)) for b in plan)
                    if self.canary:
                        details["canary"] = plan[0][0]
                if chosen == "git":
                    details["commit"] = await git.resolve(ref or "HEAD", repo)
                previous_versions = await self._versions(colour)
                previous = _joined(previous_versions)
                await self.control.record(
                    "deploy",
                    f"deploy {ref or '(no ref)'} to {colour} started",
                    before=previous or "",
                    after=ref or "",
                    reason=reason,
                    outcome="started",
                    details=details,
                )
                await self._publish(colour, "started", ref)
                targets = {t for t in (ref, details.get("commit")) if t}
                new_release = (targets, previous_versions) if targets else None
                run_batch: BatchRunner
                if chosen == "steps":
                    run_batch = self._steps_batch(
                        env, steps, ref, previous_versions, on_line, on_step
                    )
                else:
                    # The commit resolved once: a ref that moves mid-rollout (HEAD) must not
                    # give later batches another release than the canary's.
                    run_batch = self._git_batch(git, colour, details["commit"], repo, on_line)
                # Steps: the next batch's SSH connections are made while the batch before
                # waits for health (nothing runs on them before their turn).
                warm = self._connect_batch if chosen == "steps" and self.preconnect else None
                hosts, health, rollout = await self._rollout(
                    env, plan, run_batch, live_epoch, new_release, on_batch, warm
                )
                if health is not None:
                    warnings.extend(_version_warnings(env, health))
                result = DeployResult(
                    colour,
                    ref,
                    chosen,
                    tuple(hosts),
                    health,
                    time.monotonic() - started,
                    previous_version=previous,
                    traffic_before=before,
                    # Read again at the end: the answer to "where is traffic now?" is a
                    # fact of the control plane, not what it was when the deploy began.
                    traffic_after=await self._active_or_none(),
                    batches=rollout[0],
                    stopped_at=rollout[1],
                    untouched=rollout[2],
                )
                await self._record_end(result, reason, details, warnings)
                if result.ok:  # [[hook]] post_deploy: reported, never undoing the deploy
                    warnings += await after_deploy(
                        self.config, self.control, colour=colour.value, ref=ref,
                        before=previous or "", after=result.version or "", reason=reason,
                    )  # fmt: skip
                return dataclasses.replace(result, warnings=tuple(warnings))
            except asyncio.CancelledError:
                # Ctrl+C (or the UI closing): the audit trail must say the deploy was cut short.
                with contextlib.suppress(ConsoleError):
                    await self.control.record(
                        "deploy",
                        f"deploy {ref or '(no ref)'} to {colour} cancelled",
                        after=ref or "",
                        reason=reason,
                        outcome="cancelled",
                        details={"ref": ref or "", "duration": f"{time.monotonic() - started:.1f}"},
                    )
                raise

    def _steps_batch(
        self,
        env: EnvConfig,
        steps: Mapping[str, Sequence[str]],
        ref: str | None,
        previous_versions: Mapping[str, str | None],
        on_line: LineCallback | None,
        on_step: Callable[[StepStarted], None] | None,
    ) -> BatchRunner:
        """Deploys one batch with the hosts' steps over SSH (then re-checks cut-short hosts)."""

        async def run(batch: Sequence[HostConfig]) -> list[HostDeployResult]:
            done = await self._run_steps(env, steps, on_line, on_step, batch)
            return await self._recheck(env.colour, ref, done, previous_versions)

        return run

    async def _connect_batch(self, batch: Sequence[HostConfig]) -> None:
        """Open the SSH connections of ``batch`` (nothing runs on the hosts). Failures are
        left to the steps, which connect again and report them."""
        await asyncio.gather(*(self.pool.connection(h) for h in batch), return_exceptions=True)

    def _git_batch(
        self,
        git: GitPipeline,
        colour: Colour,
        commit: str,
        repo: Path | None,
        on_line: LineCallback | None,
    ) -> BatchRunner:
        """Deploys one batch with a git push of ``commit`` to each of its hosts."""

        async def run(batch: Sequence[HostConfig]) -> list[HostDeployResult]:
            names = [h.name for h in batch]
            started = time.monotonic()
            try:
                if self._lock is not None:
                    await self._lock.verify()  # fenced, as every step is
                runs = await git.push(colour, commit, repo=repo, on_line=on_line, hosts=names)
            except ConsoleError as e:
                lasted = time.monotonic() - started
                return [HostDeployResult(n, None, lasted, 0, 1, "git push", str(e)) for n in names]
            return [
                HostDeployResult(
                    r.host,
                    r.exit_status,
                    r.duration,
                    1,
                    1,
                    None if r.ok else "git push",
                    r.error,
                    r.tail,
                )
                for r in runs
            ]

        return run

    async def _rollout(
        self,
        env: EnvConfig,
        plan: list[tuple[str, ...]],
        run_batch: BatchRunner,
        live_epoch: int | None,
        new_release: tuple[set[str], Mapping[str, str | None]] | None,
        on_batch: Callable[[BatchProgress], None] | None,
        warm: Callable[[Sequence[HostConfig]], Coroutine[Any, Any, None]] | None = None,
    ) -> tuple[
        list[HostDeployResult],
        HealthWait | None,
        tuple[tuple[tuple[str, ...], ...], int | None, tuple[str, ...]],
    ]:
        """Deploy ``plan`` batch by batch with ``run_batch`` (steps or a git push); stop at
        the first batch that fails to deploy or its health wait. Returns the hosts'
        results, the last health wait (None when the last batch failed to deploy: it was
        not waited for) and (plan, stopped at, untouched).

        ``warm`` readies the next batch (its SSH connections) during a health wait, which
        is mostly idle: the wave after it then starts with its handshakes done.
        """
        warming: set[asyncio.Task[None]] = set()
        try:
            return await self._batches(
                env, plan, run_batch, live_epoch, new_release, on_batch, warm, warming
            )
        finally:
            for task in warming:
                task.cancel()
            await asyncio.gather(*warming, return_exceptions=True)

    async def _batches(
        self,
        env: EnvConfig,
        plan: list[tuple[str, ...]],
        run_batch: BatchRunner,
        live_epoch: int | None,
        new_release: tuple[set[str], Mapping[str, str | None]] | None,
        on_batch: Callable[[BatchProgress], None] | None,
        warm: Callable[[Sequence[HostConfig]], Coroutine[Any, Any, None]] | None,
        warming: set[asyncio.Task[None]],
    ) -> tuple[
        list[HostDeployResult],
        HealthWait | None,
        tuple[tuple[tuple[str, ...], ...], int | None, tuple[str, ...]],
    ]:
        by_name = {h.name: h for h in env.hosts}
        results: list[HostDeployResult] = []
        health: HealthWait | None = None
        canary = self.canary and len(plan) > 1
        for index, batch in enumerate(plan, start=1):

            def report(
                state: BatchState,
                detail: str = "",
                waited: float = 0.0,
                index: int = index,
                batch: tuple[str, ...] = batch,
            ) -> None:
                if on_batch is not None:
                    first = canary and index == 1
                    progress = BatchProgress(index, len(plan), batch, first, state, detail, waited)
                    on_batch(progress)

            report("started")
            if warm is not None and index < len(plan):
                # While this batch runs and waits for health, the next one's connections
                # are opened: its wave then starts with the handshakes done.
                warming.add(asyncio.create_task(warm([by_name[n] for n in plan[index]])))
            done = await run_batch([by_name[n] for n in batch])
            results += done
            untouched = tuple(name for later in plan[index:] for name in later)
            failed = [h for h in done if not h.ok]
            if failed:
                report("failed", "; ".join(h.describe() for h in failed))
                return results, None, (tuple(plan), index, untouched)
            # Every host deployed so far, not just this batch: a canary that broke once
            # the next batch came up (shared state, load) stops the rollout too.
            health = await self.wait_healthy(
                env.colour,
                live_epoch=live_epoch,
                new_release=new_release,
                hosts={h.host for h in results},
            )
            if not health.healthy:
                report("failed", "; ".join(health.problems), health.waited)
                return results, health, (tuple(plan), index, untouched)
            report("healthy", f"healthy after {health.waited:.1f} s", health.waited)
        return results, health, (tuple(plan), None, ())

    def _old_release(
        self,
        colour: Colour,
        versions: Mapping[str, str | None],
        new_release: tuple[set[str], Mapping[str, str | None]] | None,
    ) -> tuple[str, ...]:
        """``host: still serving V`` for each host with a version source not on the new release."""
        if new_release is None:
            return ()
        targets, before = new_release
        old: list[str] = []
        for host in self.config.env(colour).hosts:
            if host.name not in versions:
                continue  # not part of this wait (a later batch)
            if host.version is None:
                continue  # cannot tell; said once, as a warning, at the end
            now, was = versions.get(host.name), before.get(host.name)
            if now is None:
                old.append(f"{host.name}: reports no version yet (was {was or 'unknown'})")
            elif not _is_new(now, was, targets):
                old.append(f"{host.name}: still serving {now}")
        return tuple(old)

    async def _active_or_none(self) -> ActiveState | None:
        with contextlib.suppress(ConsoleError):
            return await self.control.active()
        return None

    async def _recheck(
        self,
        colour: Colour,
        ref: str | None,
        hosts: list[HostDeployResult],
        before: Mapping[str, str | None],
    ) -> list[HostDeployResult]:
        """Look again at hosts whose last step was cut short (connection lost, timed out).

        The step may have done its work before the host stopped answering. When the host
        now reports the ref as its version, or a version other than before the deploy, the
        release is installed: the host counts as deployed, with a note saying how it was
        found. Otherwise its outcome stays unknown (never "failed": nothing says it did).
        A step other than the last one cut short stays unknown too: the steps after it
        never ran.
        """
        cut = [h for h in hosts if h.unknown and h.steps_run == h.steps_total]
        if not cut:
            return hosts
        now = await self._versions(colour)
        checked = []
        for host in hosts:
            version, was = now.get(host.host), before.get(host.host)
            installed = version is not None and (
                version == ref or (was is not None and version != was)
            )
            if host in cut and installed:
                host = dataclasses.replace(
                    host,
                    exit_status=0,
                    error=None,
                    unknown=False,
                    note=(
                        f"the last step was cut short ({host.error}), but the release is "
                        f"installed (version probe: {was or 'unknown'} -> {version})"
                    ),
                )
            checked.append(host)
        return checked

    async def setup_git(
        self, colour: Colour, *, on_line: LineCallback | None = None
    ) -> list[HostRun]:
        """Create the bare repository and hook on every host of ``colour`` (idempotent).

        Runs under the deploy lock so a push cannot meet a half-installed hook, and is
        recorded as a ``deploy`` event.

        Raises:
            ConfigError: the environment has no ``git`` table.
            LockHeld: a deploy to this colour is running.
        """
        git = GitPipeline(self.config, self.pool, parallel=self.parallel)
        git.git_config(colour)
        holding = self.control.holding(
            f"deploy:{colour}", "git setup", ttl=self.lock_ttl, renew_every=self.lock_renew_every
        )
        async with holding:
            runs = await git.setup(colour, on_line=on_line)
            ok = all(r.ok for r in runs)
            failed = [f"{r.host}: {r.error}" for r in runs if not r.ok]
            with contextlib.suppress(ConsoleError):
                await self.control.record(
                    "deploy",
                    f"git pipeline set up on {colour}: "
                    + ("ok" if ok else f"failed on {len(failed)} host(s)"),
                    outcome="ok" if ok else "failed",
                    details={"setup": "git", "errors": "; ".join(failed)},
                )
            return runs

    async def _refuse_live(
        self, colour: Colour, ref: str | None, live_ok: bool, why: str
    ) -> ActiveState | None:
        """Refuse the live colour without ``live_ok``; else the live colour as it is now."""
        active = await self.control.active()
        if active is None or active.colour != colour or live_ok:
            return active
        await self.control.record(
            "deploy",
            f"deploy {ref or '(no ref)'} to live {colour} refused (no --live)",
            after=ref or "",
            reason=why,
            outcome="refused",
        )
        raise UsageError(
            f"{colour} is live: deploying to it affects users; pass --live to do it anyway "
            f"(or deploy to the stand-by {colour.other})"
        )

    async def _failed_over_from(self, colour: Colour, epoch: int) -> bool:
        with contextlib.suppress(ConsoleError):
            active = await self.control.active()
            return (
                active is not None
                and active.epoch > epoch
                and active.colour is not colour
                and active.kind == "failover"
            )
        return False

    async def _publish(self, colour: Colour, state: str, ref: str | None) -> None:
        with contextlib.suppress(ConsoleError):
            await self.control.publish(
                "deploy", {"colour": colour.value, "state": state, "ref": ref or ""}
            )

    async def _record_end(
        self,
        result: DeployResult,
        reason: str,
        details: Mapping[str, str],
        warnings: list[str],
    ) -> None:
        version = result.version or ""
        outcome = result.outcome
        summary = f"deploy {result.ref or '(no ref)'} to {result.colour}: {outcome}"
        summary += f" in {result.duration:.1f} s"
        if version:
            summary += f", version {version}"
        failure = result.failure()
        end_details = {
            **details,
            "duration": f"{result.duration:.1f}",
            "exit_status": result.exit_statuses(),
            "version": version,
            "healthy": "" if result.health is None else str(result.health.healthy).lower(),
            "traffic": result.traffic(),
        }
        if result.failover is not None and result.traffic_before is not None:
            moved = result.failover
            end_details["failover"] = (
                f"{result.traffic_before.colour} -> {moved.colour} (epoch {moved.epoch})"
            )
        rollout = result.rollout()
        if rollout is not None:
            # Who has the release and who does not, for whoever picks up a stopped rollout.
            end_details["rollout"] = rollout
            end_details["deployed_hosts"] = ",".join(result.deployed_hosts)
            end_details["failed_hosts"] = ",".join(result.failed_hosts)
            end_details["untouched_hosts"] = ",".join(result.untouched)
            where = result.stopped()
            if where is not None:
                end_details["stopped_at"] = where
        notes = [f"{h.host}: {h.note}" for h in result.hosts if h.note]
        if notes:
            end_details["notes"] = "; ".join(notes)
        if failure:
            end_details["error"] = failure
        try:
            await self.control.record(
                "deploy",
                summary,
                before=result.previous_version or "",
                after=version or result.ref or "",
                reason=reason,
                outcome=outcome,
                details=end_details,
            )
        except ConsoleError as e:
            # The deploy happened either way; losing its audit entry must not hide that.
            warnings.append(f"the end event was not recorded: {e}")
        await self._publish(result.colour, outcome, result.ref)

    async def _run_steps(
        self,
        env: EnvConfig,
        steps: Mapping[str, Sequence[str]],
        on_line: LineCallback | None,
        on_step: Callable[[StepStarted], None] | None,
        only: Sequence[HostConfig] | None = None,
    ) -> list[HostDeployResult]:
        """The steps of ``only`` (default every host), hosts concurrently (at most
        ``parallel`` at once), all within ``deploy_timeout``."""
        batch = env.hosts if only is None else tuple(only)
        semaphore = asyncio.Semaphore(self.parallel)
        tails = {h.name: deque[str](maxlen=TAIL_LINES) for h in batch}
        progress = {h.name: 0 for h in batch}
        started = time.monotonic()

        async def one(host: HostConfig) -> HostDeployResult:
            async with semaphore:
                return await self._host_steps(
                    host, steps[host.name], tails[host.name], progress, on_line, on_step
                )

        tasks = {h.name: asyncio.create_task(one(h)) for h in batch}
        try:
            await asyncio.wait(tasks.values(), timeout=env.deploy_timeout)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        results: list[HostDeployResult] = []
        for host in batch:
            task = tasks[host.name]
            if task.done() and not task.cancelled() and task.exception() is None:
                results.append(task.result())
                continue
            error = f"timed out after {env.deploy_timeout:g} s (env.{env.colour}.deploy_timeout)"
            crashed = task.done() and not task.cancelled() and task.exception() is not None
            if crashed:
                error = f"failed: {task.exception()}"
            results.append(
                HostDeployResult(
                    host.name,
                    None,
                    time.monotonic() - started,
                    progress[host.name],
                    len(steps[host.name]),
                    error=error,
                    tail=tuple(tails[host.name]),
                    # Stopped mid-step: the step may have done its work, or part of it.
                    unknown=not crashed and progress[host.name] > 0,
                )
            )
        return results

    async def _host_steps(
        self,
        host: HostConfig,
        steps: Sequence[str],
        tail: deque[str],
        progress: dict[str, int],
        on_line: LineCallback | None,
        on_step: Callable[[StepStarted], None] | None,
    ) -> HostDeployResult:
        """One host's steps in order, stopping at the first that fails."""
        started = time.monotonic()
        for index, command in enumerate(steps, start=1):
            if self._lock is not None:
                # Fenced: a deploy whose lock expired (frozen client, lost control plane)
                # stops here rather than run a step someone else may be running too.
                await self._lock.verify()
            if on_step is not None:
                on_step(StepStarted(host.name, index, len(steps), command))
            try:
                # Connecting first separates "nothing ran" (a definite failure) from a
                # connection lost once the step may have started (an unknown outcome).
                await self.pool.connection(host)
                progress[host.name] = index
            except ConsoleError as e:
                return HostDeployResult(
                    host.name,
                    None,
                    time.monotonic() - started,
                    index - 1,
                    len(steps),
                    failed_step=command,
                    error=str(e),
                    tail=tuple(tail),
                )
            try:
                end = await self._stream(host, command, tail, on_line)
            except ConsoleError as e:
                return HostDeployResult(
                    host.name,
                    None,
                    time.monotonic() - started,
                    index,
                    len(steps),
                    failed_step=command,
                    error=str(e),
                    tail=tuple(tail),
                    unknown=isinstance(e, (HostUnreachable, CommandTimeout)),
                )
            if end.exit_status != 0:
                status = end.exit_status
                error = None if status is not None else f"step {command!r} ended by {end.signal}"
                return HostDeployResult(
                    host.name,
                    status,
                    time.monotonic() - started,
                    index,
                    len(steps),
                    failed_step=command,
                    error=error,
                    tail=tuple(tail),
                    unknown=end.signal == _CONNECTION_LOST,
                )
        return HostDeployResult(
            host.name, 0, time.monotonic() - started, len(steps), len(steps), tail=tuple(tail)
        )

    async def _stream(
        self, host: HostConfig, command: str, tail: deque[str], on_line: LineCallback | None
    ) -> CommandExit:
        end: CommandExit | None = None
        async for item in self.pool.stream(host, command, timeout=self.config.ssh.command_timeout):
            if isinstance(item, OutputLine):
                tail.append(item.text)
                if on_line is not None:
                    on_line(item)
            else:
                end = item
        if end is None:
            # The pool promises a CommandExit last; without one the channel just vanished.
            return CommandExit(host.name, None, _CONNECTION_LOST, 0.0)
        return end

    async def _round(
        self, colour: Colour, hosts: Collection[str] | None = None
    ) -> list[tuple[str, Probe | None, str | None]]:
        """One probe round of ``colour``'s hosts (only ``hosts`` when given): (host, its
        latest probe, the version it reports), in config order."""
        if isinstance(self.health, HostProber):
            wanted = [h for h in self.config.env(colour).hosts if hosts is None or h.name in hosts]
            probes = await asyncio.gather(*(self.health.probe(h) for h in wanted))
            return [(h.name, p, p.version) for h, p in zip(wanted, probes, strict=True)]
        snapshot = await self.health.check_all()
        env = snapshot.envs.get(colour)
        probed = [h for h in env.hosts if hosts is None or h.host in hosts] if env else []
        # The last probe carries the version when the source is in the health answer;
        # a version fetched from its own path is only refreshed now and then.
        return [(h.host, h.last, (h.last.version if h.last else None) or h.version) for h in probed]

    async def _versions(self, colour: Colour) -> dict[str, str | None]:
        """host -> the version it reports right now (None if unknown), in one probe round."""
        try:
            async with asyncio.timeout(self.config.failover.timeout * 2 + 1.0):
                probed = await self._round(colour)
        except TimeoutError:
            return {}
        # The latest probe's version only: an older one would report a release the host
        # no longer runs ("1.0.0 -> 1.2.0" after 1.1.0 was deployed, or from a dead host).
        return {host: last.version if last else None for host, last, _ in probed}

    async def wait_healthy(
        self,
        colour: Colour,
        *,
        live_epoch: int | None = None,
        new_release: tuple[set[str], Mapping[str, str | None]] | None = None,
        hosts: Collection[str] | None = None,
    ) -> HealthWait:
        """Probe until every host of ``colour`` answers its health check, or time out.

        With ``hosts``, only those hosts count (a rollout's batches so far); the others
        may be down or on the old release.

        Polls every ``[failover] interval`` for at most the environment's ``health_timeout``;
        looks at each host's last probe (not the fall/rise verdict), since a host that just
        restarted should count as soon as it answers. With ``live_epoch`` (the colour was
        live at that epoch when the deploy began), stop as soon as the agent has failed
        over away from it: the release is bad, and waiting out the timeout helps no one.

        With ``new_release`` (the ref and commit deployed, and each host's version before
        the deploy), a host with a version source counts only once it serves the new
        release: the ref (or commit) as its version, or another version than before. A
        restart that lags leaves the old process answering its health check for a while;
        without this the wait would pass on the old release. Still the old version at
        the deadline: not healthy, ``stale``, and the problem says what it serves.
        """
        timeout = self.config.env(colour).health_timeout
        interval = self.config.failover.interval
        started = time.monotonic()
        deadline = started + timeout
        versions: dict[str, str | None] = {}
        problems: tuple[str, ...] = ("no probe finished",)
        while True:
            remaining = deadline - time.monotonic()
            try:
                # A probe round is bounded by the probe timeout already; this is the backstop.
                async with asyncio.timeout(max(remaining, 0.0) + interval + 1.0):
                    probed = await self._round(colour, hosts)
            except TimeoutError:
                return HealthWait(False, time.monotonic() - started, versions, problems)
            versions = {host: version for host, _, version in probed}
            down = [host for host, last, _ in probed if last is None or not last.ok]
            problems = tuple(
                f"{host}: {(last.error if last else None) or 'no answer'}"
                for host, last, _ in probed
                if host in down
            )
            old = self._old_release(colour, versions, new_release) if not problems else ()
            if probed and not problems and not old:
                return HealthWait(True, time.monotonic() - started, versions)
            if old and time.monotonic() + interval > deadline:
                stale = tuple(f"{o} after {timeout:g} s" for o in old)
                failing = tuple(o.split(":", 1)[0] for o in old)
                return HealthWait(False, time.monotonic() - started, versions, stale, True, failing)
            failing = tuple(down)
            if live_epoch is not None and await self._failed_over_from(colour, live_epoch):
                return HealthWait(
                    False, time.monotonic() - started, versions, problems, failing=failing
                )
            if time.monotonic() + interval > deadline:
                return HealthWait(
                    False, time.monotonic() - started, versions, problems, failing=failing
                )
            await asyncio.sleep(interval)
