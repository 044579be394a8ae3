"""The deploy and migrate forms: where focus starts, what Tab and Enter do, fitting 80x24."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import Button, Input, RadioSet

from console.core.migrate.plan import MigrationRequest
from console.core.models import Colour
from console.screens.deploy import DeployRequest, DeployScreen
from console.screens.migrate import MigrateScreen

SIZES = [(80, 24), (120, 35), (160, 45)]


class DeployForm(App[DeployRequest | None]):
    def on_mount(self) -> None:
        self.push_screen(DeployScreen(default=Colour.GREEN, live=Colour.BLUE), self.exit)


class MigrateForm(App[MigrationRequest | None]):
    def on_mount(self) -> None:
        self.push_screen(MigrateScreen(default=Colour.BLUE, live=Colour.BLUE), self.exit)


async def test_deploy_typing_at_once_fills_the_ref_and_enter_deploys() -> None:
    app = DeployForm()
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen.focused, Input)
        await pilot.press(*"good", "enter")
    assert app.return_value == DeployRequest(Colour.GREEN, "good")


@pytest.mark.parametrize("moves", [["tab"], ["tab", "tab"], ["shift+tab"]])
async def test_deploy_tab_then_typing_never_loses_the_ref(moves: list[str]) -> None:
    # Reported: Tab, type "good", Enter deployed with no ref (the text went to a button).
    app = DeployForm()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*moves, *"good")
        assert app.screen.query_one("#ref", Input).value == "good"
        await pilot.press("enter")
    assert app.return_value == DeployRequest(Colour.GREEN, "good")


async def test_deploy_enter_on_cancel_cancels_and_escape_cancels() -> None:
    app = DeployForm()
    async with app.run_test(size=(80, 24)) as pilot:
        app.screen.query_one("#cancel", Button).focus()
        await pilot.press("enter")
    assert app.return_value is None


async def test_migrate_enter_starts_from_the_first_field() -> None:
    app = MigrateForm()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
    request = app.return_value
    assert request is not None
    assert (request.source, request.target, request.strategy, request.dry_run) == (
        Colour.BLUE,
        Colour.GREEN,
        "rows",
        True,
    )


@pytest.mark.parametrize("size", SIZES)
async def test_forms_fit_the_screen_with_their_buttons_reachable(size: tuple[int, int]) -> None:
    for form in (DeployForm(), MigrateForm()):
        async with form.run_test(size=size) as pilot:
            await pilot.pause()
            screen = form.screen
            body = screen.query_one("FormScroll")
            assert body.region.right <= size[0], body.region
            assert body.region.bottom <= size[1], body.region
            start = screen.query_one("#deploy, #start", Button)
            start.focus()
            await pilot.pause()
            # Focusing the button scrolls it into view inside the dialog.
            assert body.content_region.contains_region(start.region), (start.region, body)


class MigrateFromGreen(App[MigrationRequest | None]):
    def on_mount(self) -> None:
        self.push_screen(MigrateScreen(default=Colour.GREEN, live=Colour.GREEN), self.exit)


@pytest.mark.parametrize(
    ("form", "choice"), [(DeployForm, "#colour"), (MigrateFromGreen, "#source")]
)
async def test_space_on_a_choice_keeps_what_the_form_shows(
    form: type[App[object]], choice: str
) -> None:
    # Reported: the keyboard highlight started on the first button whatever was chosen,
    # so Tab into the deploy form's colour (green) and space picked blue.
    app = form()
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.pause()
        choices = app.screen.query_one(choice, RadioSet)
        choices.focus()
        await pilot.press("space")
        await pilot.pause()
        pressed = choices.pressed_button
        assert pressed is not None
        assert pressed.name == "green"
