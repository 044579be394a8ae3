"""Build test configurations pointing at fixture servers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomli_w

from console.core.config import Config, load_config


def config_data(
    *, redis_url: str, blue_url: str, green_url: str, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A minimal valid configuration as TOML data; ``sections`` are merged in (one level)."""
    data: dict[str, Any] = {
        "console": {"name": "test"},
        "control": {"redis": redis_url, "timeout": 1.0},
        "router": {"kind": "builtin", "listen": "127.0.0.1:1"},
        "failover": {"interval": 0.1, "timeout": 0.5, "fall": 2, "rise": 2, "min_dwell": 0},
        "ssh": {"use_config": False, "use_agent": False},
        "env": {
            "blue": {"url": blue_url, "version": "json:version"},
            "green": {"url": green_url, "version": "json:version"},
        },
    }
    for name, values in sections.items():
        merged = copy.deepcopy(data.get(name, {}))
        merged.update(values)
        data[name] = merged
    return data


def write_config(path: Path, data: dict[str, Any]) -> Config:
    """Write the TOML file and load it back (so tests also exercise the loader)."""
    path.write_text(tomli_w.dumps(data))
    return load_config(path)
