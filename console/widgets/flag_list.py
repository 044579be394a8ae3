"""FlagList: one colour's flags as a compact on/off list under its environment panel."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from console.core.flags import FlagTable
from console.core.models import Colour
from console.core.text import printable


def flag_line(table: FlagTable | None, colour: Colour) -> Content:
    """``flags: ● uploads  ○ banner`` for one colour; why when they cannot be read."""
    if table is None:
        return Content.styled("flags: reading…", "$text-muted")
    error = table.errors.get(colour)
    if error is not None:
        return Content.assemble(("flags: ", "$text-muted"), ("unknown", "bold $status-degraded"))
    if not table.rows:
        return Content.styled("flags: none declared", "$text-muted")
    parts: list[str | tuple[str, str]] = [("flags: ", "$text-muted")]
    for row in table.rows:
        value = row.value(colour)
        if value.state == "on":
            parts.append(("● ", "$flag-on"))
            parts.append((printable(row.name), "bold"))
        elif value.state == "off":
            parts.append(("○ ", "$flag-off"))
            parts.append((printable(row.name), "$flag-off"))
        else:
            parts.append(("? ", "$status-degraded"))
            parts.append((printable(row.name), "$status-degraded"))
        if not row.declared:
            parts.append((" (undeclared)", "italic $text-muted"))
        parts.append("  ")
    return Content.assemble(*parts)


class FlagList(Widget):
    """The flags of one colour; ``table`` is set by the screen that reads them."""

    DEFAULT_CSS = """
    FlagList {
        height: auto;
        padding: 0 1;
    }
    """

    table: reactive[FlagTable | None] = reactive(None)
    """Both colours' flags, or None before the first read."""

    def __init__(self, colour: Colour, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.colour = colour

    def render(self) -> Content:
        return flag_line(self.table, self.colour)
