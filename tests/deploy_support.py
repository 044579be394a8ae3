"""Helpers for the deploy tests: configs whose blue hosts are real sshd + HTTP backends."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import tomli_w
from servers import HttpBackend, SshServer

from console.core.config import Config, parse_config

APP = "deploytest"


def control_step(backend: HttpBackend, version: str) -> str:
    """A shell step that tells ``backend`` (the "app") it now runs ``version``.

    Stands in for "restart the app on the new release": the health wait then sees it.
    """
    script = (
        "import json, sys, urllib.request; "
        "body = json.dumps({'version': sys.argv[2]}).encode(); "
        "r = urllib.request.Request(sys.argv[1], data=body, "
        "headers={'Content-Type': 'application/json'}); "
        "urllib.request.urlopen(r, timeout=5).read()"
    )
    # ``version`` may be the ``{ref}`` placeholder, which the runner substitutes quoted.
    return shlex.join(["python3", "-c", script, f"{backend.url}/__control"]) + " " + version


def deploy_config_data(
    ssh: SshServer,
    workdir: Path,
    control_url: str,
    backend: HttpBackend,
    *,
    steps: list[str] | None = None,
    git: dict[str, str] | None = None,
    health_timeout: float = 5.0,
    deploy_timeout: float = 30.0,
    hosts: int = 1,
) -> dict[str, Any]:
    """TOML data: blue's host(s) reachable over ``ssh`` with ``backend`` as their app.

    Green points at a closed port: it is never deployed to in these tests.
    """
    host_keys: dict[str, Any] = {
        "url": backend.url,
        "version": "json:version",
        "ssh": ssh.target,
        "identity": str(ssh.client_key_path),
        "workdir": str(workdir),
    }
    if steps is not None:
        host_keys["deploy"] = steps
    blue: dict[str, Any] = {"health_timeout": health_timeout, "deploy_timeout": deploy_timeout}
    if hosts == 1:
        blue.update(host_keys)
    else:
        blue["hosts"] = [{"name": f"app{i + 1}", **host_keys} for i in range(hosts)]
    if git is not None:
        blue["git"] = git
    return {
        "console": {"name": APP},
        "control": {"redis": control_url, "timeout": 2.0},
        "router": {"kind": "builtin"},
        "failover": {"interval": 0.1, "timeout": 0.3},
        "ssh": {
            "use_config": False,
            "use_agent": False,
            "known_hosts": str(ssh.known_hosts_path),
            "connect_timeout": 5.0,
            "keepalive": 0.0,
            "command_timeout": 30.0,
        },
        "env": {"blue": blue, "green": {"url": "http://127.0.0.1:9"}},
    }


def deploy_config(*args: Any, **kwargs: Any) -> Config:
    """A parsed config (see :func:`deploy_config_data`)."""
    return parse_config(deploy_config_data(*args, **kwargs))


def write_deploy_config(path: Path, *args: Any, **kwargs: Any) -> Path:
    """Render the config as TOML at ``path`` (for CLI tests)."""
    path.write_text(tomli_w.dumps(deploy_config_data(*args, **kwargs)))
    return path


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity (no global git config is assumed)."""
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout


def make_app_repo(path: Path, content: str) -> str:
    """A local git repository with one commit holding ``app.txt``; returns the commit id."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    return commit_file(path, content)


def commit_file(repo: Path, content: str) -> str:
    """Write ``app.txt`` and commit it; returns the new commit id."""
    (repo / "app.txt").write_text(content)
    git(repo, "add", "app.txt")
    git(repo, "commit", "--quiet", "-m", f"release {content.strip()}")
    return git(repo, "rev-parse", "HEAD").strip()
