"""FlagGrid: flags x colours; enter/space asks to toggle the selected cell."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from console.core.flags import COLOURS, FlagRow, FlagTable, FlagValue
from console.core.models import Colour
from console.core.text import printable

COLOUR_COLUMNS: dict[str, Colour] = {c.value: c for c in COLOURS}


def flag_cell(value: FlagValue) -> Content:
    """``● on`` / ``○ off`` / ``? unknown``, with the raw value when it is unusual."""
    if value.state == "unknown":
        return Content.styled("? unknown", "bold $status-degraded")
    mark, style = ("● on", "bold $flag-on") if value.state == "on" else ("○ off", "$flag-off")
    extra = ""
    if value.raw is None:
        extra = " (unset)"
    elif value.raw.upper() not in ("ON", "OFF"):
        extra = f" ({value.raw!r})"
    return Content.assemble((mark, style), (extra, "$text-muted"))


def description_cell(row: FlagRow) -> Content:
    """The description, or why the flag is shown although not declared."""
    parts: list[str | tuple[str, str]] = []
    if row.differs:
        parts.append(("≠ differs  ", "bold $warning"))
    if row.kill_switch:
        parts.append(("[kill switch] ", "bold $status-down"))
    if row.declared:
        parts.append(row.description)
    else:
        # An undeclared key was found in Redis: anyone's text, escaped.
        parts.append((f"undeclared key {printable(row.key)} (read only)", "italic $text-muted"))
    return Content.assemble(*parts)


class FlagGrid(DataTable[Content]):
    """The flags table; the screen sets it with :meth:`show` and handles toggles."""

    DEFAULT_CSS = """
    FlagGrid { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "toggle_cell", "Toggle"),
        Binding("space", "toggle_cell", "Toggle", show=False),
    ]

    class ToggleRequested(Message):
        """The operator asked to toggle one flag in one colour."""

        def __init__(self, row: FlagRow, colour: Colour) -> None:
            super().__init__()
            self.row = row
            self.colour = colour

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="cell", zebra_stripes=True)
        self.table: FlagTable | None = None
        self.live: Colour | None = None

    def on_mount(self) -> None:
        self.add_column("FLAG", key="flag", width=18)
        for colour in COLOURS:
            self.add_column(colour.value.upper(), key=colour.value, width=16)
        self.add_column("DESCRIPTION", key="description", width=80)

    def show(self, table: FlagTable, live: Colour | None) -> None:
        """Show ``table``; ``live`` marks its column header (None: live unknown)."""
        self.table = table
        if live != self.live:
            self.live = live
            for colour in COLOURS:
                label = colour.value.upper() + (" (LIVE)" if colour is live else "")
                self.columns[ColumnKey(colour.value)].label = Text(label, style="bold")
            self.refresh()
        wanted = [row.name for row in table.rows]
        existing = [str(key.value) for key in self.rows]
        if wanted != existing:
            # Rows appeared or vanished: rebuild, keeping the cursor where it was.
            # The first fill starts on the BLUE column, so enter toggles at once.
            cursor = self.cursor_coordinate if existing else Coordinate(0, 1)
            self.clear()
            for row in table.rows:
                self.add_row(*self._cells(row), key=row.name)
            self.cursor_coordinate = cursor
            return
        for row in table.rows:
            for key, value in zip(self._keys(), self._cells(row), strict=True):
                if self.get_cell(row.name, key) != value:
                    self.update_cell(row.name, key, value)

    def _keys(self) -> list[str]:
        return ["flag", *(c.value for c in COLOURS), "description"]

    def _cells(self, row: FlagRow) -> list[Content]:
        name = Content.styled(printable(row.name), "bold" if row.declared else "italic $text-muted")
        return [name, *(flag_cell(row.value(c)) for c in COLOURS), description_cell(row)]

    def selected(self) -> tuple[FlagRow, Colour] | None:
        """The flag and colour under the cursor, None when the cursor is not on a colour."""
        if self.table is None or not self.row_count:
            return None
        coordinate = self.cursor_coordinate
        row_key, column_key = self.coordinate_to_cell_key(coordinate)
        colour = COLOUR_COLUMNS.get(str(column_key.value))
        row = self.table.row(str(row_key.value))
        if colour is None or row is None:
            return None
        return row, colour

    def action_toggle_cell(self) -> None:
        """Ask the screen to toggle the selected cell."""
        picked = self.selected()
        if picked is None:
            self.notify("Move to the BLUE or GREEN column of a flag to toggle it.")
            return
        self.post_message(self.ToggleRequested(*picked))
