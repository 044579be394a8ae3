"""Themes: the built-in bgconsole-dark/-light, the themes/*.toml loader, domain variables."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

DOMAIN_VARIABLES: dict[str, str] = {
    "env-blue": "#4C8DFF",
    "env-green": "#2BB673",
    "status-ok": "#2BB673",
    "status-degraded": "#F5A623",
    "status-down": "#F0544F",
    "flag-on": "#2BB673",
    "flag-off": "#5C6773",
}
"""The console's own colour variables and their fallbacks (used by any theme lacking them,
e.g. Textual's built-in ones)."""

BGCONSOLE_DARK = Theme(
    name="bgconsole-dark",
    dark=True,
    primary="#4C8DFF",
    secondary="#2BB673",
    accent="#F5A623",
    warning="#F5A623",
    error="#F0544F",
    success="#2BB673",
    background="#0F1419",
    surface="#161C23",
    panel="#1E2630",
    foreground="#D8DEE9",
    variables=dict(DOMAIN_VARIABLES),
)

BGCONSOLE_LIGHT = Theme(
    name="bgconsole-light",
    dark=False,
    primary="#1F5FD1",
    secondary="#17864F",
    accent="#B36B00",
    warning="#B36B00",
    error="#C62828",
    success="#17864F",
    background="#F7F9FB",
    surface="#FFFFFF",
    panel="#E8EDF2",
    foreground="#1B2430",
    variables={
        "env-blue": "#1F5FD1",
        "env-green": "#17864F",
        "status-ok": "#17864F",
        "status-degraded": "#B36B00",
        "status-down": "#C62828",
        "flag-on": "#17864F",
        "flag-off": "#8A96A3",
    },
)

BUILTIN_THEMES: tuple[Theme, ...] = (BGCONSOLE_DARK, BGCONSOLE_LIGHT)

_THEME_FIELDS = {f.name for f in dataclasses.fields(Theme)} - {"variables"}
_COLOUR_FIELDS = {
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
}


@dataclass(frozen=True, slots=True)
class ThemeLoadResult:
    """Themes read from files, and one line per file that could not be used."""

    themes: tuple[Theme, ...]
    errors: tuple[str, ...]


def theme_dirs() -> tuple[Path, ...]:
    """Where theme files live: the packaged copy (console/themes) and the repo's themes/."""
    package = Path(__file__).resolve().parent
    return (package / "themes", package.parent / "themes")


def theme_from_toml(path: Path) -> Theme:
    """Read one theme file: Theme fields at the top level plus a ``[variables]`` table.

    Raises:
        ValueError: the file is unreadable, not TOML, or names unknown fields/bad colours.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e
    variables = data.pop("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ValueError(f"{path}: [variables] must map names to colour strings")
    unknown = sorted(set(data) - _THEME_FIELDS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(data.get("name"), str) or not isinstance(data.get("primary"), str):
        raise ValueError(f"{path}: needs name and primary (strings)")
    for key in _COLOUR_FIELDS & set(data):
        _check_colour(path, key, data[key])
    for key, value in variables.items():
        _check_colour(path, f"variables.{key}", value)
    try:
        return Theme(**data, variables={**DOMAIN_VARIABLES, **variables})
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from e


def _check_colour(path: Path, key: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{path}: {key} must be a colour string")
    try:
        Color.parse(value)
    except ColorParseError as e:
        raise ValueError(f"{path}: {key} = {value!r} is not a colour") from e


def load_theme_files(dirs: Iterable[Path] | None = None) -> ThemeLoadResult:
    """Every ``*.toml`` theme in ``dirs`` (default :func:`theme_dirs`); errors collected.

    A name seen twice keeps the first (the packaged copy wins over the repo's).
    """
    themes: dict[str, Theme] = {}
    errors: list[str] = []
    for directory in dirs if dirs is not None else theme_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = theme_from_toml(path)
            except ValueError as e:
                errors.append(str(e))
                continue
            themes.setdefault(theme.name, theme)
    return ThemeLoadResult(tuple(themes.values()), tuple(errors))
