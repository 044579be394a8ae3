"""The builtin router's keys in ``[router]``: parsed, defaulted, each value checked."""

from __future__ import annotations

from typing import Any

import pytest
from configs import config_data

from console.core.config import parse_config
from console.core.errors import ConfigError


def router(**keys: Any) -> dict[str, Any]:
    data = config_data(
        redis_url="redis://127.0.0.1:1/0",
        blue_url="http://127.0.0.1:2",
        green_url="http://127.0.0.1:3",
        router={"kind": "builtin", "listen": "127.0.0.1:1", **keys},
    )
    return data


def test_defaults_and_values() -> None:
    assert parse_config(router()).router.max_connections == 0
    config = parse_config(
        router(
            head_timeout=2,
            first_byte_timeout=5.5,
            max_connections=100,
            max_head=8192,
            trusted_proxies=["10.0.0.0/8", "127.0.0.1"],
            ws_drain=0,
            tls_cert="c.pem",
            tls_key="k.pem",
        )
    ).router
    assert config.head_timeout == 2.0
    assert config.first_byte_timeout == 5.5
    assert config.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert config.ws_drain == 0.0


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"head_timeout": float("inf")}, "router.head_timeout: must be a finite number"),
        ({"body_timeout": 0}, "router.body_timeout: must be greater than 0"),
        ({"first_byte_timeout": -1}, "router.first_byte_timeout: must be greater than 0"),
        ({"idle_timeout": 10**9}, "router.idle_timeout: must be at most"),
        ({"max_connections": -1}, "router.max_connections: must be at least 0"),
        ({"max_head": 10}, "router.max_head: must be at least 1024"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "router.trusted_proxies[0]: not an IP"),
        ({"tls_cert": "c.pem"}, "router.tls_key: missing"),
        ({"ws_drain": "soon"}, "router.ws_drain: expected a number of seconds"),
    ],
)
def test_bad_values_name_the_key(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(router(**keys))
