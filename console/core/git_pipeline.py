"""Push-to-deploy: a bare repository with a post-receive hook on each host, fed by git push."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from console.core.config import Config, EnvConfig, GitDeployConfig, HostConfig, SshTarget
from console.core.errors import ConfigError, ConsoleError, UsageError
from console.core.models import Colour
from console.core.ssh import CommandExit, OutputLine, SshPool

DEPLOY_BRANCH = "refs/heads/deploy"
"""The branch every push updates on the hosts; the hook deploys what lands on it."""
MARK_OK = "bgconsole-hook: DEPLOYED"
MARK_FAILED = "bgconsole-hook: FAILED"
TAIL_LINES = 20
_LOCAL_GIT_TIMEOUT = 30.0
_PARALLEL = 10

LineCallback = Callable[[OutputLine], None]


@dataclass(frozen=True, slots=True)
class HostRun:
    """What one host did during a setup or a push."""

    host: str
    exit_status: int | None
    """0 on success; None when the host never answered."""
    duration: float
    error: str | None = None
    tail: tuple[str, ...] = ()
    """The last output lines, oldest first."""

    @property
    def ok(self) -> bool:
        """The host finished and succeeded."""
        return self.exit_status == 0 and self.error is None


def _sh_path(path: str) -> str:
    """A path for a POSIX shell: quoted, but a leading ``~/`` still means the home dir."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def hook_script(git: GitDeployConfig) -> str:
    """The post-receive hook: check out what was pushed to the deploy branch, then restart.

    It prints progress lines (git relays them as ``remote: ...``) and ends with a marker
    line the pusher reads: git push succeeds even when post-receive fails, so the exit
    status alone cannot tell a broken deploy.
    """
    repo, worktree = _sh_path(git.repo), _sh_path(git.worktree)
    restart = (
        f'echo "bgconsole-hook: restarting: "{shlex.quote(git.restart)}\n'
        f"  ( cd {worktree} && {git.restart} ) 2>&1\n"
        "  status=$?\n"
        '  if [ "$status" -ne 0 ]; then\n'
        f'    echo "{MARK_FAILED} restart exited $status"; exit "$status"\n'
        "  fi\n"
        if git.restart.strip()
        else 'echo "bgconsole-hook: no restart command configured"\n'
    )
    return (
        "#!/bin/sh\n"
        "# Installed by 'bgconsole deploy setup'; rewritten on every setup, do not edit.\n"
        "# The restart command runs in the work tree, not inside the repository.\n"
        "unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE\n"
        f"repo={repo}\n"
        f"worktree={worktree}\n"
        "deployed=0\n"
        "while read -r old new ref; do\n"
        f'  if [ "$ref" != "{DEPLOY_BRANCH}" ]; then\n'
        '    echo "bgconsole-hook: ignoring $ref (only deploy is deployed)"; continue\n'
        "  fi\n"
        '  echo "bgconsole-hook: checking out $new into $worktree"\n'
        '  mkdir -p "$worktree" || { echo "' + MARK_FAILED + ' cannot create $worktree"; '
        "exit 1; }\n"
        '  if ! git --work-tree="$worktree" --git-dir="$repo" checkout -f "$new" 2>&1; then\n'
        f'    echo "{MARK_FAILED} checkout of $new"; exit 1\n'
        "  fi\n"
        f"  {restart}"
        f'  echo "{MARK_OK} $new"\n'
        "  deployed=1\n"
        "done\n"
        'if [ "$deployed" -eq 0 ]; then echo "bgconsole-hook: nothing to deploy"; fi\n'
        "exit 0\n"
    )


def setup_script(git: GitDeployConfig) -> str:
    """Shell that creates the bare repo and installs the hook read from stdin; idempotent."""
    repo, worktree = _sh_path(git.repo), _sh_path(git.worktree)
    hook = f"{repo}/hooks/post-receive"
    return (
        "set -e\n"
        "command -v git >/dev/null 2>&1 || "
        '{ echo "git is not installed on this host (install the git package)" >&2; exit 127; }\n'
        f"mkdir -p {repo} {worktree}\n"
        # Re-running init on an existing bare repository is safe: it keeps the history.
        f"git init --bare --quiet {repo}\n"
        f"mkdir -p {repo}/hooks\n"
        f"cat > {hook}.bgconsole-new\n"
        f"chmod 755 {hook}.bgconsole-new\n"
        # Rename into place so a push arriving meanwhile never runs a half-written hook.
        f"mv -f {hook}.bgconsole-new {hook}\n"
        f'echo "ready: bare repository "{repo}", hook installed, work tree "{worktree}\n'
    )


def ssh_url(target: SshTarget, repo: str) -> str:
    """``ssh://user@host:port/path`` for git; ``~/x`` and relative paths are in the home dir."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    user = f"{target.user}@" if target.user else ""
    port = f":{target.port}" if target.port else ""
    if repo.startswith("~"):
        path = "/" + repo
    elif repo.startswith("/"):
        path = repo
    else:
        path = "/~/" + repo
    return f"ssh://{user}{host}{port}{path}"


class GitPipeline:
    """Sets up the bare repository + hook on each host and pushes refs to it."""

    def __init__(self, config: Config, pool: SshPool, *, parallel: int = _PARALLEL) -> None:
        self.config = config
        self.pool = pool
        self.parallel = max(1, parallel)

    def git_config(self, colour: Colour) -> GitDeployConfig:
        """The environment's ``git`` table.

        Raises:
            ConfigError: it is missing.
        """
        git = self.config.env(colour).git
        if git is None:
            raise ConfigError(
                f"env.{colour}.git: missing; set repo and worktree (and restart) to use "
                "the git pipeline"
            )
        return git

    async def setup(self, colour: Colour, *, on_line: LineCallback | None = None) -> list[HostRun]:
        """Create the bare repository and install the hook on every host of ``colour``."""
        env = self.config.env(colour)
        git = self.git_config(colour)
        script, hook = setup_script(git), hook_script(git)

        async def one(host: HostConfig) -> HostRun:
            started = time.monotonic()
            tail: deque[str] = deque(maxlen=TAIL_LINES)
            try:
                # Not in the host's workdir: it may not exist before the first deploy.
                result = await self.pool.run(
                    dataclasses.replace(host, workdir=None),
                    script,
                    input=hook,
                    timeout=self.config.ssh.command_timeout,
                )
            except ConsoleError as e:
                return HostRun(host.name, None, time.monotonic() - started, str(e))
            lines = [
                OutputLine(host.name, "stdout", t, time.time()) for t in result.stdout.splitlines()
            ]
            lines += [
                OutputLine(host.name, "stderr", t, time.time()) for t in result.stderr.splitlines()
            ]
            for line in lines:
                tail.append(line.text)
                if on_line is not None:
                    on_line(line)
            error = None if result.exit_status == 0 else f"setup exited {result.exit_status}"
            return HostRun(
                host.name, result.exit_status, time.monotonic() - started, error, tuple(tail)
            )

        return await self._fan_out(env, one)

    async def _fan_out(
        self,
        env: EnvConfig,
        one: Callable[[HostConfig], Awaitable[HostRun]],
        only: Collection[str] | None = None,
    ) -> list[HostRun]:
        """Run ``one`` for every host (or those named in ``only``), at most ``parallel``
        at once; results in config order."""
        semaphore = asyncio.Semaphore(self.parallel)
        if only is not None:
            unknown = set(only) - {h.name for h in env.hosts}
            if unknown:
                raise UsageError(f"env.{env.colour}: no host(s) {', '.join(sorted(unknown))}")
        hosts = [h for h in env.hosts if only is None or h.name in only]

        async def bounded(host: HostConfig) -> HostRun:
            async with semaphore:
                return await one(host)

        return list(await asyncio.gather(*(bounded(h) for h in hosts)))

    def check_local(self, repo: Path | None) -> Path:
        """The local repository to push from, after checking git and ssh are installed.

        Raises:
            ConsoleError: git or ssh is missing locally.
            UsageError: the directory does not exist.
        """
        for tool, package in (("git", "git"), ("ssh", "openssh-client")):
            if shutil.which(tool) is None:
                raise ConsoleError(
                    f"{tool} is not installed on this machine; the git pipeline needs it "
                    f"(e.g. apt-get install {package})"
                )
        path = (repo or Path.cwd()).expanduser()
        if not path.is_dir():
            raise UsageError(f"{path}: no such directory (--repo PATH names the local repo)")
        return path

    async def resolve(self, ref: str, repo: Path | None = None) -> str:
        """The commit id ``ref`` names in the local repository.

        Raises:
            UsageError: not a repository, or no such ref.
        """
        path = self.check_local(repo)
        code, out = await _run_local(
            ["git", "-C", str(path), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]
        )
        if code != 0:
            inside, _ = await _run_local(["git", "-C", str(path), "rev-parse", "--git-dir"])
            if inside != 0:
                raise UsageError(
                    f"{path} is not a git repository; run from one or pass --repo PATH"
                )
            raise UsageError(f"ref {ref!r} is not a commit in {path}; check --ref")
        return out.strip()

    def ssh_command(self, host: HostConfig) -> str:
        """The ``GIT_SSH_COMMAND`` for ``host``: its key and known_hosts, verification on."""
        return shlex.join(self._ssh_argv(host))

    def _ssh_argv(self, host: HostConfig, *, jump: bool = True) -> list[str]:
        settings = self.config.ssh
        known_hosts = os.path.expanduser(host.known_hosts or settings.known_hosts)
        # accept-new learns unknown keys but still refuses changed ones, as the SSH pool does.
        checking = "yes" if settings.host_key_policy == "strict" else "accept-new"
        argv = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", f"StrictHostKeyChecking={checking}",
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", f"ConnectTimeout={max(1, round(settings.connect_timeout))}",
        ]  # fmt: skip
        if not settings.use_config:
            argv += ["-F", "/dev/null"]
        if not settings.use_agent:
            argv += ["-o", "IdentityAgent=none"]
        if host.identity:
            argv += ["-i", os.path.expanduser(host.identity), "-o", "IdentitiesOnly=yes"]
        if settings.keepalive > 0:
            argv += ["-o", f"ServerAliveInterval={max(1, round(settings.keepalive))}"]
        if jump and host.jump is not None:
            # ProxyCommand rather than -J: -J would drop the options above on the jump leg.
            inner = self._ssh_argv(host, jump=False)
            if host.jump.port:
                inner += ["-p", str(host.jump.port)]
            target = f"{host.jump.user}@{host.jump.host}" if host.jump.user else host.jump.host
            inner += ["-W", "%h:%p", target]
            argv += ["-o", f"ProxyCommand={shlex.join(inner)}"]
        return argv

    async def push(
        self,
        colour: Colour,
        ref: str,
        *,
        repo: Path | None = None,
        on_line: LineCallback | None = None,
        time_limit: float | None = None,
        hosts: Collection[str] | None = None,
    ) -> list[HostRun]:
        """Push ``ref`` from the local repository to every host's deploy branch (or only
        to ``hosts``: one batch of a rollout, see ``DeployRunner``).

        Each host's hook checks it out and restarts; its output streams through
        ``on_line``. A push that changes nothing (the same commit again) re-runs the hook
        over SSH, so deploying the same ref twice still restarts the app.

        Raises:
            UsageError: ``hosts`` names a host the colour does not have.
        """
        env = self.config.env(colour)
        git = self.git_config(colour)
        path = self.check_local(repo)
        commit = await self.resolve(ref, path)
        limit = time_limit or env.deploy_timeout

        async def one(host: HostConfig) -> HostRun:
            started = time.monotonic()
            tail: deque[str] = deque(maxlen=TAIL_LINES)
            try:
                async with asyncio.timeout(limit):
                    status = await self._push_host(host, git, path, commit, tail, on_line)
            except TimeoutError:
                error = f"timed out after {limit:g} s (env.{colour}.deploy_timeout)"
                return HostRun(host.name, None, time.monotonic() - started, error, tuple(tail))
            except ConsoleError as e:
                return HostRun(host.name, None, time.monotonic() - started, str(e), tuple(tail))
            return _outcome(host.name, status, time.monotonic() - started, tail)

        return await self._fan_out(env, one, hosts)

    async def _push_host(
        self,
        host: HostConfig,
        git: GitDeployConfig,
        path: Path,
        commit: str,
        tail: deque[str],
        on_line: LineCallback | None,
    ) -> tuple[int, bool, bool]:
        """Push to one host; (git's exit status, hook reported success, hook reported failure)."""
        if host.ssh is None:
            raise ConfigError(f"env: host {host.name} has no 'ssh' target; git pushes over SSH")
        url = ssh_url(host.ssh, git.repo)
        env = {
            **os.environ,
            "GIT_SSH_COMMAND": self.ssh_command(host),
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }
        seen_ok = seen_failed = up_to_date = False

        def emit(text: str) -> None:
            nonlocal seen_ok, seen_failed, up_to_date
            # Strip git's "clear to end of line" sequences from relayed hook output.
            text = text.replace("\x1b[K", "").rstrip()
            if not text:
                return
            body = text.removeprefix("remote: ")
            seen_ok = seen_ok or body.startswith(MARK_OK)
            seen_failed = seen_failed or body.startswith(MARK_FAILED)
            up_to_date = up_to_date or text.strip() == "Everything up-to-date"
            tail.append(text)
            if on_line is not None:
                on_line(OutputLine(host.name, "stderr", text, time.time()))

        argv = ["git", "-C", str(path), "push", url, f"+{commit}:{DEPLOY_BRANCH}"]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            assert process.stdout is not None
            async for raw in process.stdout:
                for piece in raw.decode("utf-8", "replace").split("\r"):
                    emit(piece)
            code = await process.wait()
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if code == 0 and up_to_date and not seen_ok:
            code = await self._rerun_hook(host, git, commit, emit)
        return code, seen_ok, seen_failed

    async def _rerun_hook(
        self, host: HostConfig, git: GitDeployConfig, commit: str, emit: Callable[[str], None]
    ) -> int:
        """Run the hook again as if ``commit`` had just been pushed (a redeploy)."""
        repo = _sh_path(git.repo)
        command = (
            f"cd {repo} && printf '%s %s %s\\n' {commit} {commit} {DEPLOY_BRANCH} "
            "| ./hooks/post-receive"
        )
        emit(f"remote: bgconsole-hook: {commit[:12]} is already there; running the hook again")
        exit_status: int | None = None
        plain = dataclasses.replace(host, workdir=None)
        async for item in self.pool.stream(plain, command, timeout=self.config.ssh.command_timeout):
            if isinstance(item, CommandExit):
                exit_status = item.exit_status
            else:
                emit("remote: " + item.text)
        return 255 if exit_status is None else exit_status


def _outcome(
    host: str, status: tuple[int, bool, bool], duration: float, tail: deque[str]
) -> HostRun:
    code, seen_ok, seen_failed = status
    if code != 0:
        return HostRun(
            host, code, duration, f"git push exited {code}{_push_hint(tail)}", tuple(tail)
        )
    if seen_failed or not seen_ok:
        why = "the hook reported a failure" if seen_failed else "the hook did not confirm"
        return HostRun(host, 1, duration, f"{why} (see its output)", tuple(tail))
    return HostRun(host, 0, duration, None, tuple(tail))


_PUSH_HINTS = (
    (
        "Host key verification failed",
        "the host key is not in known_hosts; add it with ssh-keyscan (verification stays on)",
    ),
    ("Permission denied", "the SSH key was refused; check identity and authorized_keys"),
    ("does not appear to be a git repository", "run 'bgconsole deploy setup COLOUR' first"),
    ("Could not resolve hostname", "the host name does not resolve; check env.<colour>.ssh"),
    ("Connection refused", "nothing listens on the SSH port"),
)


def _push_hint(tail: deque[str]) -> str:
    """A fix for the usual reasons a push fails, read from git's/ssh's own words."""
    text = "\n".join(tail)
    for needle, hint in _PUSH_HINTS:
        if needle in text:
            return f": {hint}"
    return ""


async def _run_local(argv: list[str]) -> tuple[int, str]:
    """Run a short local command; (exit status, stdout). Bounded by a timeout."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(_LOCAL_GIT_TIMEOUT):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ConsoleError(f"{argv[0]} did not finish within {_LOCAL_GIT_TIMEOUT:g} s") from None
    return process.returncode or 0, out.decode("utf-8", "replace")
