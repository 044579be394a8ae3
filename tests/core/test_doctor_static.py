"""doctor's static checks: deploy-step traps and values left from the init starter."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from console.cli.init import starter_text
from console.core.config import parse_config
from console.core.doctor.placeholders import check_placeholders
from console.core.doctor.steps import background_unredirected, check_steps, stale_checkout


@pytest.mark.parametrize(
    ("step", "stale"),
    [
        ("git fetch --all && git checkout --force {ref}", True),
        ("git checkout -f {ref}", True),
        ("git switch {ref}", True),
        ("git checkout --force --detach origin/{ref}", False),
        ('git checkout --force --detach "$(git rev-parse origin/{ref})"', False),
        ("git checkout {ref} && git reset --hard origin/{ref}", False),
        ("./deploy.sh {ref}", False),
    ],
)
def test_stale_checkout(step: str, stale: bool) -> None:
    assert stale_checkout(step) is stale


@pytest.mark.parametrize(
    ("step", "holds"),
    [
        ("nohup node app.js &", True),
        ("node app.js 2>err.log &", True),
        ("node app.js >out.log &", True),
        ("nohup node app.js >>log/app.log 2>&1 </dev/null &", False),
        ("node app.js &>log &", False),
        ("npm ci && npm run build", False),
        ("echo 'a & b'", False),
        ("systemctl restart app", False),
    ],
)
def test_background_without_redirect(step: str, holds: bool) -> None:
    assert background_unredirected(step) is holds


def _data(**blue: Any) -> dict[str, Any]:
    return {
        "console": {"name": "shop"},
        "control": {"redis": "redis://127.0.0.1:1/0"},
        "router": {"kind": "builtin"},
        "env": {
            "blue": {"url": "http://127.0.0.1:2", **blue},
            "green": {"url": "http://127.0.0.1:3"},
        },
    }


def test_step_warnings_name_the_safe_form_and_the_timeout() -> None:
    config = parse_config(
        _data(deploy=["git fetch --all", "git checkout --force {ref}", "nohup node app.js &"])
    )
    checks = check_steps(config)
    blue = [c for c in checks if c.subject == "blue deploy"]
    assert [c.status for c in blue] == ["warn", "warn"]
    assert "old local branch" in blue[0].detail
    assert "--detach" in blue[0].fix
    assert "holds the SSH channel open" in blue[1].detail
    assert "600 s" in blue[1].detail
    assert "2>&1 </dev/null" in blue[1].fix
    green = [c for c in checks if c.subject == "green deploy"]
    assert green[0].status == "warn"
    assert "no deploy steps" in green[0].detail


def test_the_untouched_init_starter_is_flagged_and_a_real_config_is_not() -> None:
    starter = parse_config(tomllib.loads(starter_text()))
    flagged = {c.subject for c in check_placeholders(starter) if c.status == "warn"}
    assert {"env.blue.url", "env.green.ssh", "env.blue.workdir", "console.name"} <= flagged
    real = check_placeholders(parse_config(_data()))
    assert [c.status for c in real] == ["ok"]


def test_the_init_starter_deploy_steps_pass_the_step_checks() -> None:
    starter = parse_config(tomllib.loads(starter_text()))
    assert all("old local branch" not in c.detail for c in check_steps(starter))
    assert all("background" not in c.detail for c in check_steps(starter))


def test_a_git_pipeline_restart_that_backgrounds_without_redirect_is_flagged() -> None:
    git = {"repo": "/srv/a.git", "worktree": "/srv/a", "restart": "nohup node app.js &"}
    checks = check_steps(parse_config(_data(git=git)))
    blue = [c for c in checks if c.subject == "blue deploy"]
    assert blue[0].status == "warn"
    assert "git restart 'nohup node app.js &'" in blue[0].detail
