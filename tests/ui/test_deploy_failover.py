"""A failover during a deploy stays on the deploy screen: title, outcome and evidence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.app import App
from ui_support import NOW, FixedServices, fake_config, screen_text, wait_for

from console.core.deploy import DeployResult, HealthWait, HostDeployResult, StepStarted
from console.core.models import ActiveState, Colour
from console.core.services import Services
from console.core.ssh import OutputLine
from console.messages import OperationFinished
from console.screens.deploy import DeployRequest
from console.screens.deploy_run import DeployRunScreen
from console.theming import DOMAIN_VARIABLES


class FailoverServices(FixedServices):
    """A deploy to the live green during which the agent fails over to blue."""

    async def deploy(
        self,
        colour: Colour,
        *,
        ref: str | None,
        live_ok: bool,
        reason: str = "",
        on_line: Callable[[OutputLine], None] | None = None,
        on_step: Callable[[StepStarted], None] | None = None,
        **options: object,
    ) -> DeployResult:
        reason_text = "live green is down (1/1 hosts down, 2+ consecutive failures)"
        return DeployResult(
            colour,
            ref,
            "steps",
            (HostDeployResult("green-1", 0, 1.0, 1, 1),),
            HealthWait(False, 2.0, {"green-1": None}, problems=("green-1: HTTP 500",)),
            3.0,
            previous_version="1.1.0",
            traffic_before=ActiveState(Colour.GREEN, 7, NOW - 60, "alice@jump", "go"),
            traffic_after=ActiveState(
                Colour.BLUE, 8, NOW - 1, "agent:router:4242", reason_text, "failover"
            ),
        )

    async def armed(self) -> bool:
        return True


class RunApp(App[None]):
    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(DOMAIN_VARIABLES)

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.finished: list[OperationFinished] = []

    def on_mount(self) -> None:
        request = DeployRequest(Colour.GREEN, "bad")
        self.push_screen(
            DeployRunScreen(self.services, request, live_ok=True, on_finished=self.finished.append)
        )


async def test_failover_during_deploy_is_the_lasting_outcome(tmp_path: Path) -> None:
    services = FailoverServices.build(fake_config(tmp_path))
    app = RunApp(services)
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_for(pilot, lambda: app.finished, what="the deploy to end")
        await pilot.pause(0.2)
        text = "\n".join(screen_text(app))
        title = screen_text(app)[0]
        assert "(live)" not in title
        assert "FAILED OVER: traffic now on BLUE (epoch 8)" in title
        assert "the agent failed over from green to blue during the deploy" in text
        assert "evidence: green/green-1: 2 failures: HTTP 500 (want 200) in 18 ms" in text
        assert not app.finished[0].ok
        # Still there long after any toast would have gone.
        await pilot.pause(0.5)
        assert "evidence: green/green-1" in "\n".join(screen_text(app))
