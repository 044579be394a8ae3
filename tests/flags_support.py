"""Helpers for the feature-flag tests: a config whose colours use real Redis servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from console.core.config import Config, parse_config

APP = "flagtest"

FLAGS: dict[str, dict[str, Any]] = {
    "uploads": {"description": "Recent uploads list"},
    "new_checkout": {"description": "The new checkout flow"},
    "maintenance": {"description": "Maintenance page", "kill_switch": True},
    "beta": {"description": "Custom storage", "key": "app:beta", "on": "1", "off": "0"},
}


def flag_config_data(
    blue_url: str | None,
    green_url: str | None,
    control_url: str,
    flags: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The TOML data of a minimal config: each colour's flags in the given Redis URL."""
    env: dict[str, Any] = {}
    for colour, url, port in (("blue", blue_url, 9), ("green", green_url, 10)):
        env[colour] = {"url": f"http://127.0.0.1:{port}"}
        if url is not None:
            env[colour]["flags_redis"] = url
    return {
        "console": {"name": APP},
        "control": {"redis": control_url, "timeout": 1.0},
        "router": {"kind": "builtin"},
        "env": env,
        "flags": FLAGS if flags is None else flags,
    }


def flag_config(
    blue_url: str | None, green_url: str | None, control_url: str, **kwargs: Any
) -> Config:
    """A parsed config (see :func:`flag_config_data`)."""
    return parse_config(flag_config_data(blue_url, green_url, control_url, **kwargs))


def write_flag_config(
    path: Path, blue_url: str | None, green_url: str | None, control_url: str, **kwargs: Any
) -> Path:
    """Render the config as TOML at ``path`` (for CLI subprocess tests)."""
    path.write_text(tomli_w.dumps(flag_config_data(blue_url, green_url, control_url, **kwargs)))
    return path


def db(url: str, number: int) -> str:
    """The same Redis URL on another database number."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{number}"
