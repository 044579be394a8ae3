"""Declared flags against each colour's Redis: the keys exist and hold on/off values.

An existing app names its flags its own way (``RECENT``, ``features:uploads``); a
declared key that is missing reads as off everywhere, silently. So a missing key is
reported with the keys of that Redis whose names resemble the flag.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from console.core.config import Config, FlagConfig, redact_url
from console.core.doctor.model import Check, fail, ok, warn
from console.core.doctor.redis_hint import redis_fix
from console.core.models import Colour

SCAN_LIMIT = 20_000
"""Keys looked at when hunting for candidates: enough for an app's flags, bounded."""
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower())) - {"flag", "flags", "feature", "features", "ff"}


def resembles(flag: str, key: str) -> bool:
    """A key whose name could be the flag's (``RECENT`` for ``recent_uploads``)."""
    flag_words, key_words = _words(flag), _words(key)
    if flag_words & key_words:
        return True
    a, b = re.sub(r"[^a-z0-9]", "", flag.lower()), re.sub(r"[^a-z0-9]", "", key.lower())
    if a and b and (a in b or b in a):
        return True
    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.75


async def check_flags(config: Config) -> list[Check]:
    """Each colour's flags Redis, then every declared flag's key in it."""
    if not config.flags:
        return [ok("flags", "flags", "none declared")]
    colours = list(Colour)
    found = await asyncio.gather(*(_colour(config, c) for c in colours))
    checks: list[Check] = []
    readable: dict[Colour, dict[str, tuple[str | None, list[str]]]] = {}
    for colour, (check, keys) in zip(colours, found, strict=True):
        checks.append(check)
        if keys is not None:
            readable[colour] = keys
    for flag in config.flags.values():
        checks.append(_flag(flag, readable))
    return checks


async def _colour(
    config: Config, colour: Colour
) -> tuple[Check, dict[str, tuple[str | None, list[str]]] | None]:
    url = config.env(colour).flags_redis
    key = f"env.{colour}.flags_redis"
    if url is None:
        return (
            fail("flags", f"{colour} flags", "no flags Redis", f"set {key} = redis://..."),
            None,
        )
    timeout = config.control.timeout
    client = aioredis.Redis.from_url(
        url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        async with asyncio.timeout(timeout * 4):
            await client.ping()
            values = await _read(client, list(config.flags.values()))
    except TimeoutError:
        error = f"{redact_url(url)} did not answer within {timeout:g} s"
        return fail("flags", f"{colour} flags", error, redis_fix(error, key)), None
    except (RedisError, OSError) as e:
        error = f"{redact_url(url)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        return fail("flags", f"{colour} flags", error, redis_fix(error, key)), None
    finally:
        await client.aclose()
    return ok("flags", f"{colour} flags", f"{redact_url(url)} answers"), values


async def _read(
    client: aioredis.Redis, flags: list[FlagConfig]
) -> dict[str, tuple[str | None, list[str]]]:
    """flag name -> (its value, or None when missing; candidate keys when missing)."""
    pipe = client.pipeline(transaction=False)
    for flag in flags:
        pipe.type(flag.key)
    types: list[Any] = await pipe.execute()
    result: dict[str, tuple[str | None, list[str]]] = {}
    missing: list[FlagConfig] = []
    for flag, kind in zip(flags, types, strict=True):
        if kind == "none":
            missing.append(flag)
        elif kind != "string":
            result[flag.name] = (f"<a {kind}, not a string>", [])
        else:
            value = await client.get(flag.key)
            result[flag.name] = (None if value is None else str(value), [])
    if missing:
        keys: list[str] = []
        async for key in client.scan_iter(count=1000):
            keys.append(key)
            if len(keys) >= SCAN_LIMIT:
                break
        for flag in missing:
            like = sorted(k for k in keys if resembles(flag.name, k) or resembles(flag.key, k))
            result[flag.name] = (None, like[:5])
    return result


def _flag(
    flag: FlagConfig, readable: dict[Colour, dict[str, tuple[str | None, list[str]]]]
) -> Check:
    subject = f"flag {flag.name}"
    if not readable:
        return fail("flags", subject, "not checked: no flags Redis answered", "see above")
    values = {c: readable[c][flag.name] for c in readable}
    missing = [c for c, (value, _) in values.items() if value is None]
    odd = [
        f"{c}: {value!r}"
        for c, (value, _) in values.items()
        if value is not None and value not in (flag.on, flag.off)
    ]
    candidates = sorted({k for _, like in values.values() for k in like})
    if missing:
        where = "every colour" if len(missing) == len(values) else ", ".join(map(str, missing))
        if candidates:
            fix = (
                f"if the app reads one of {', '.join(candidates)}, set "
                f"[flags.{flag.name}] key = {candidates[0]!r}"
            )
        else:
            fix = (
                f"check which key the app reads and set [flags.{flag.name}] key; or create "
                f"it: bgconsole flag set {flag.name} off --env both --yes"
            )
        return warn(
            "flags",
            subject,
            f"key {flag.key!r} is missing in {where} (reads as off there)",
            fix,
        )
    if odd:
        return warn(
            "flags",
            subject,
            f"key {flag.key!r} holds {'; '.join(odd)}, neither {flag.on!r} nor {flag.off!r} "
            "(reads as off)",
            f"set [flags.{flag.name}] on = ... and off = ... to the values the app uses",
        )
    shown = ", ".join(f"{c} {value}" for c, (value, _) in values.items())
    return ok("flags", subject, f"key {flag.key!r}: {shown}")
