"""Gates and hooks ([[hook]]) around a real switch: redis-server, HTTP backends, a router
driven by a command, a front door, and an agent failing over past the gates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from observe_support import eventually, observed_config, running_agent
from servers import HttpBackend, HttpBackendFactory, RedisServer
from traffic_helpers import ColourFile, FrontDoor, make_router

from console.core.config import Config, parse_config
from console.core.control import ControlPlane
from console.core.errors import ConfigError
from console.core.gates import GateFailed, after_deploy, hook_env, run_hook
from console.core.health import HealthChecker
from console.core.models import Colour
from console.core.router.base import Router
from console.core.switching import SwitchResult, perform_switch

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    config: Config
    control: ControlPlane
    router: Router
    health: HealthChecker
    colour_file: ColourFile
    lines: list[str]

    async def switch(self, to: Colour, **kwargs: Any) -> SwitchResult:
        return await perform_switch(
            self.config,
            self.control,
            self.router,
            self.health,
            to=to,
            on_progress=self.lines.append,
            **kwargs,
        )


@pytest.fixture
async def rig_factory(
    redis_server: RedisServer, http_backend_factory: HttpBackendFactory, tmp_path: Path
) -> AsyncIterator[Callable[[list[dict[str, Any]]], Any]]:
    opened: list[tuple[Rig, FrontDoor]] = []

    async def build(hooks: list[dict[str, Any]]) -> Rig:
        blue, green = http_backend_factory("blue", "1.0"), http_backend_factory("green", "2.0")
        colour_file = ColourFile(tmp_path / "live")

        def pick() -> str:
            return blue.address if colour_file.read() == "blue" else green.address

        front = await FrontDoor(pick).start()
        config = parse_config(
            {
                "console": {"name": "gated"},
                "control": {"redis": redis_server.url, "timeout": 2.0},
                "router": {
                    "kind": "command",
                    "switch_command": colour_file.switch_command,
                    "state_command": colour_file.state_command,
                    "public_url": front.url,
                    "verify_requests": 2,
                    "confirm_timeout": 2.0,
                },
                "failover": {"interval": 0.2, "timeout": 0.5},
                "env": {"blue": {"url": blue.url}, "green": {"url": green.url}},
                "hook": hooks,
            }
        )
        control = ControlPlane.from_config(config.control, config.console.name, actor="ops@here")
        rig = Rig(
            config,
            control,
            make_router(config, control),
            HealthChecker(config, hysteresis=False),
            colour_file,
            [],
        )
        await control.ensure_active(Colour.BLUE)
        opened.append((rig, front))
        return rig

    yield build
    for rig, front in opened:
        await rig.health.aclose()
        await rig.router.aclose()
        await rig.control.aclose()
        await front.aclose()


def test_hook_config_names_the_key_path() -> None:
    base: dict[str, Any] = {
        "console": {"name": "shop"},
        "control": {"redis": "redis://127.0.0.1:1"},
        "router": {"kind": "builtin"},
        "env": {"blue": {"url": "http://127.0.0.1:1"}, "green": {"url": "http://127.0.0.1:2"}},
    }
    config = parse_config({**base, "hook": [{"when": "pre_switch", "command": "./smoke.sh"}]})
    assert config.hooks[0].name == "./smoke.sh"
    assert config.hooks[0].timeout == 120.0
    with pytest.raises(ConfigError, match=r"^hook\[0\]\.when: unknown 'pre-switch' "):
        parse_config({**base, "hook": [{"when": "pre-switch", "command": "true"}]})
    with pytest.raises(ConfigError, match=r"^hook\[0\]\.ssh: "):
        parse_config({**base, "hook": [{"when": "post_switch", "command": "x", "ssh": "a@b:0"}]})


async def test_a_hook_gets_the_facts_in_its_environment(rig_factory: Any) -> None:
    rig: Rig = await rig_factory([])
    hook = parse_config(
        {
            "console": {"name": "x"},
            "control": {"redis": "redis://127.0.0.1:1"},
            "router": {"kind": "builtin"},
            "env": {"blue": {"url": "http://a:1"}, "green": {"url": "http://b:1"}},
            "hook": [
                {
                    "when": "post_switch",
                    "name": "facts",
                    "command": 'echo "$BG_FROM>$BG_TO@$BG_EPOCH $BG_ACTOR: $BG_REASON"; exit 3',
                }
            ],
        }
    ).hooks[0]
    env = hook_env("shop", before="blue", to="green", epoch=7, actor="bob@vm", reason="it's $HOME")
    run = await run_hook(rig.config, hook, env)
    assert run.exit_status == 3
    assert run.output == "blue>green@7 bob@vm: it's $HOME"  # quoted: never expanded twice
    assert run.describe().startswith("facts: exit 3 in ")


async def test_a_failing_gate_blocks_the_switch_and_leaves_the_router(
    rig_factory: Any, tmp_path: Path
) -> None:
    ran = tmp_path / "second-gate-ran"
    rig: Rig = await rig_factory(
        [
            {
                "when": "pre_switch",
                "name": "smoke",
                "command": "echo checking $BG_TO; echo 'checkout returned 500' >&2; exit 1",
            },
            {"when": "pre_switch", "name": "second", "command": f"touch {ran}"},
        ]
    )
    with pytest.raises(GateFailed, match=r"gate smoke: exit 1 in .*: checkout returned 500"):
        await rig.switch(Colour.GREEN, reason="release 2.0")
    assert rig.colour_file.read() == "blue"  # the router was never told
    state = await rig.control.active()
    assert state is not None
    assert (state.colour, state.epoch) == (Colour.BLUE, 1)
    assert not ran.exists()  # gates stop at the first failure
    assert "  smoke | checking green" in rig.lines
    refused = (await rig.control.events(1))[0]
    assert refused.outcome == "refused"
    assert "gate smoke: exit 1" in refused.summary
    assert "checkout returned 500" in refused.details["gate smoke"]


async def test_a_passing_gate_lets_the_switch_through_with_its_output_in_the_event(
    rig_factory: Any, tmp_path: Path
) -> None:
    post = tmp_path / "post"
    rig: Rig = await rig_factory(
        [
            {"when": "pre_switch", "name": "smoke", "command": "echo smoke ok on $BG_TO"},
            {"when": "post_switch", "name": "tell", "command": f"echo $BG_EPOCH > {post}"},
            {"when": "post_switch", "name": "broken", "command": "exit 4"},
        ]
    )
    result = await rig.switch(Colour.GREEN)
    assert (result.after, result.epoch) == (Colour.GREEN, 2)
    assert rig.colour_file.read() == "green"
    events = await rig.control.events(5)
    verified = next(e for e in events if e.summary.endswith("verified"))
    assert verified.details["gate smoke"].startswith("smoke: exit 0 in ")
    assert verified.details["gate smoke"].endswith("\nsmoke ok on green")
    # post_switch hooks: they get the new epoch; a failing one is recorded, undoes nothing.
    assert post.read_text().strip() == "2"
    hook_event = events[-1]
    assert (hook_event.kind, hook_event.outcome) == ("hook", "failed")
    assert "post_switch hook broken: exit 4" in hook_event.summary
    assert (await rig.control.active()) is not None
    assert rig.colour_file.read() == "green"


async def test_skip_gates_is_recorded(rig_factory: Any) -> None:
    rig: Rig = await rig_factory([{"when": "pre_switch", "name": "smoke", "command": "exit 1"}])
    await rig.switch(Colour.GREEN, skip_gates=True)
    assert rig.colour_file.read() == "green"
    verified = next(e for e in await rig.control.events(5) if e.summary.endswith("verified"))
    assert verified.details["gates"] == "skipped by the operator (--skip-gates): smoke"
    assert "gates SKIPPED (--skip-gates): smoke" in rig.lines


async def test_failover_never_waits_for_gates_and_says_so(
    redis_server: RedisServer,
    http_backend_factory: HttpBackendFactory,
    tmp_path: Path,
) -> None:
    blue: HttpBackend = http_backend_factory("blue", "1.0")
    green: HttpBackend = http_backend_factory("green", "2.0")
    never = tmp_path / "gate-ran"
    config = observed_config(
        redis_server.url,
        blue,
        green,
        hook=[{"when": "pre_switch", "name": "slow", "command": f"touch {never}; sleep 60"}],
    )
    control = ControlPlane(redis_server.url, "shop", timeout=0.5)
    try:
        async with running_agent(config):
            blue.kill()

            async def failed_over() -> bool:
                return any(e.kind == "failover" for e in await control.events())

            await eventually(failed_over, limit=3.0)
        failover = next(e for e in await control.events() if e.kind == "failover")
        assert failover.details["gates"].startswith("skipped (automatic failover does not")
        assert not never.exists()
    finally:
        await control.aclose()


async def test_post_deploy_hooks_get_the_release_and_report_failures(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    config = parse_config(
        {
            "console": {"name": "shop"},
            "control": {"redis": redis_server.url},
            "router": {"kind": "builtin"},
            "env": {"blue": {"url": "http://127.0.0.1:1"}, "green": {"url": "http://127.0.0.1:2"}},
            "hook": [
                {
                    "when": "post_deploy",
                    "name": "record",
                    "command": f'echo "$BG_COLOUR $BG_REF $BG_FROM>$BG_TO" > {seen}',
                },
                {"when": "post_deploy", "name": "flaky", "command": "exit 2"},
                {"when": "post_switch", "name": "not-now", "command": f"touch {tmp_path}/x"},
            ],
        }
    )
    control = ControlPlane.from_config(config.control, "shop", actor="ci@runner")
    try:
        warnings = await after_deploy(
            config, control, colour="green", ref="v2", before="1.0", after="2.0", reason="r"
        )
        assert seen.read_text() == "green v2 1.0>2.0\n"
        assert not (tmp_path / "x").exists()
        assert len(warnings) == 1
        assert warnings[0].startswith("post_deploy hook flaky: exit 2 in ")
        event = (await control.events(1))[0]
        assert (event.kind, event.outcome, event.actor) == ("hook", "failed", "ci@runner")
    finally:
        await control.aclose()
