"""What a running app offers bgconsole, found by probing it (``bgconsole init --detect``).

The usual health paths, then a version in the answer's headers or JSON, or at
``/version``. What is found goes into the starter; what is not is said in its comments.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from console.core.doctor.health import COMMON_PATHS, LARGE_BODY, version_candidates
from console.core.errors import BackendError, UsageError
from console.core.health import PROBE_HEADERS

TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Detection:
    """What probing the app found."""

    url: str
    health_path: str | None
    """The first of ``COMMON_PATHS`` answering 200 (``/`` only when nothing else does)."""
    version: str | None
    """A ``version`` value that reads a version from the app, if one was found."""
    notes: tuple[str, ...] = field(default=())
    """What was found and what was not, for the starter's comments."""


def _base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--detect {url!r}: not an http(s) URL (e.g. http://10.0.0.1:3000)")
    return url.rstrip("/")


async def detect(url: str) -> Detection:
    """Probe the app at ``url``.

    Raises:
        UsageError: ``url`` is not an http(s) URL.
        BackendError: nothing answers there at all.
    """
    base = _base(url)
    notes: list[str] = []
    async with httpx.AsyncClient(
        headers=PROBE_HEADERS, timeout=httpx.Timeout(TIMEOUT), follow_redirects=False
    ) as client:
        answers = await asyncio.gather(*(_get(client, base + p) for p in COMMON_PATHS))
        by_path = dict(zip(COMMON_PATHS, answers, strict=True))
        if all(isinstance(a, str) for a in answers):
            raise BackendError(f"{base}: {answers[0]}; start the app or correct the URL")
        answered = {p: a for p, a in by_path.items() if isinstance(a, tuple)}
        good = [p for p, a in answered.items() if a[0].status_code == 200 and p != "/"]
        health: str | None = None
        if good:
            health = good[0]
            response, took = answered[health]
            size = len(response.content)
            notes.append(f"health: {health} answers 200 ({size} bytes, {took * 1000:.0f} ms)")
            if size > LARGE_BODY:
                notes.append(f"health: {health} answers {size // 1024} KB: make it a few bytes")
        elif "/" in answered and answered["/"][0].status_code == 200:
            health = "/"
            home, took = answered["/"]
            others = ", ".join(p for p in COMMON_PATHS if p != "/")
            notes.append(
                f"health: none of {others} answers 200, so / is used "
                f"({len(home.content) // 1024} KB, {took * 1000:.0f} ms): add a light "
                "/health to the app and change health_path"
            )
        else:
            notes.append(
                f"health: none of {', '.join(COMMON_PATHS)} answers 200: add a light "
                "/health to the app"
            )
        version = _version(answered, health)
        if version is None:
            version = await _version_path(client, base)
        if version is not None:
            notes.append(f"version: {version}")
        else:
            notes.append(
                "version: none found (no X-Version-like header, no version field, no "
                "/version): expose the git commit and set version, or deploys say "
                "'version unknown'"
            )
    return Detection(base, health, version, tuple(notes))


async def _get(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, float] | str:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT):
            response = await client.get(url)
    except TimeoutError:
        return f"no answer within {TIMEOUT:g} s"
    except httpx.HTTPError as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return response, time.perf_counter() - started


def _version(answered: dict[str, tuple[httpx.Response, float]], health: str | None) -> str | None:
    order = ([health] if health else []) + [p for p in answered if p != health]
    for path in order:
        response = answered[path][0] if path in answered else None
        if response is None or response.status_code != 200:
            continue
        # A json: field is read from the health answer only (that is what gets probed).
        usable = [
            f for f in version_candidates(response) if f.startswith("header:") or path == health
        ]
        if usable:
            return usable[0]
    return None


async def _version_path(client: httpx.AsyncClient, base: str) -> str | None:
    answer = await _get(client, base + "/version")
    if isinstance(answer, tuple):
        response = answer[0]
        text = response.text.strip()
        if response.status_code == 200 and text and len(text) <= 64 and "\n" not in text:
            return "path:/version"
    return None
