"""The deploy form says what deploying the chosen colour does to traffic."""

from __future__ import annotations

from textual.app import App
from textual.widgets import Label, RadioButton

from console.core.deploy import DeployResult, HealthWait, HostDeployResult
from console.core.models import ActiveState, Colour
from console.screens.deploy import DeployRequest, DeployScreen
from console.screens.deploy_run import deploy_summary


class FormApp(App[DeployRequest | None]):
    def on_mount(self) -> None:
        self.push_screen(DeployScreen(default=Colour.GREEN, live=Colour.BLUE), self.exit)


async def test_the_form_tells_stand_by_from_live() -> None:
    app = FormApp()
    async with app.run_test() as pilot:
        hint = app.screen.query_one("#traffic-hint", Label)
        assert "stand-by: traffic stays on blue" in str(hint.render())
        blue = next(b for b in app.screen.query(RadioButton) if b.name == "blue")
        # The form settles first (its fields' hints fill in on mount): then click.
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        assert await pilot.click(blue)
        await pilot.pause()
        assert "blue is LIVE" in str(hint.render())
        assert "fails over to green" in str(hint.render())


def _state(colour: Colour, epoch: int, kind: str = "switch") -> ActiveState:
    return ActiveState(colour, epoch, 0.0, "agent", "live blue is down", kind)


def test_the_run_summary_says_where_traffic_is() -> None:
    host = HostDeployResult("app1", 0, 1.0, 1, 1)
    result = DeployResult(
        Colour.BLUE,
        "v2",
        "steps",
        (host,),
        HealthWait(True, 0.5, {"app1": "v2"}),
        2.0,
        traffic_before=_state(Colour.BLUE, 3),
        traffic_after=_state(Colour.GREEN, 4, "failover"),
    )
    summary = deploy_summary(result)
    assert "FAILED: the agent failed over from blue to green during the deploy" in summary
    assert summary.endswith("traffic: on green (epoch 4): failed over from blue during the deploy")

    unknown = HostDeployResult("app1", None, 1.0, 1, 1, error="connection lost", unknown=True)
    result = DeployResult(
        Colour.GREEN,
        "v2",
        "steps",
        (unknown,),
        None,
        2.0,
        traffic_before=_state(Colour.BLUE, 3),
        traffic_after=_state(Colour.BLUE, 3),
    )
    assert "outcome UNKNOWN" in deploy_summary(result)
    assert deploy_summary(result).endswith("traffic: on blue (epoch 3), as before the deploy")
