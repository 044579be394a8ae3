"""SQLite files declared as data: readable on each host, and how each table's rows are told
apart when ``bgconsole migrate --strategy rows`` copies them.

Row identity is the declared primary key, else a unique key whose columns are NOT NULL,
else the whole row (never rowid: two databases number their rows independently). A table
with no key can still be copied, but an updated row looks like a new one and duplicates
are ambiguous, which is worth knowing before the first migration, not during it.
"""

from __future__ import annotations

import asyncio
import json
import shlex

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from console.core.config import Config, HostConfig, redact_url
from console.core.doctor.model import Check, fail, ok, warn
from console.core.doctor.redis_hint import redis_fix
from console.core.errors import ConsoleError
from console.core.models import Colour
from console.core.ssh import SshPool

# Run on the host with its python3 (read-only: the database is opened with mode=ro).
_SCRIPT = r"""
import json, sqlite3, sys
out = {}
for path in sys.argv[1:]:
    try:
        db = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=2)
        tables = [r[0] for r in db.execute(
            "select name from sqlite_master where type='table' and name not like 'sqlite_%'")]
        keys = {}
        for t in tables:
            q = '"' + t.replace('"', '""') + '"'
            cols = db.execute("pragma table_info(" + q + ")").fetchall()
            pk = [c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5] > 0]
            notnull = {c[1] for c in cols if c[3] or c[5] > 0}
            key = ["primary key (" + ", ".join(pk) + ")"] if pk else []
            if not key:
                for idx in db.execute("pragma index_list(" + q + ")").fetchall():
                    if idx[2]:
                        n = '"' + idx[1].replace('"', '""') + '"'
                        names = [r[2] for r in db.execute("pragma index_info(" + n + ")")]
                        if names and all(c in notnull for c in names):
                            key = ["unique not null (" + ", ".join(names) + ")"]
                            break
            keys[t] = key[0] if key else None
        out[path] = {"tables": keys}
    except Exception as e:
        out[path] = {"error": str(e)}
print(json.dumps(out))
"""


async def check_data(config: Config, pool: SshPool) -> list[Check]:
    """Every host with ``[data] sqlite`` and an ssh target; hosts concurrently."""
    jobs = [
        _host(pool, _subject(colour, host, len(config.env(colour).hosts)), host)
        for colour, host in config.all_hosts()
        if host.data.sqlite and host.ssh is not None
    ]
    redis_urls: dict[str, str] = {}
    for colour, host in config.all_hosts():
        if host.data.redis:
            redis_urls.setdefault(
                host.data.redis, _subject(colour, host, len(config.env(colour).hosts))
            )
    results = await asyncio.gather(*jobs)
    redis_checks = await asyncio.gather(
        *(_redis(url, subject, config.control.timeout) for url, subject in redis_urls.items())
    )
    return [check for checks in results for check in checks] + list(redis_checks)


async def _redis(url: str, subject: str, limit: float) -> Check:
    """A ``[data] redis`` answers (its keys are migrated with ``--strategy redis``)."""
    key = f"env.{subject.split('/')[0]}.data.redis"
    client = aioredis.Redis.from_url(url, socket_timeout=limit, socket_connect_timeout=limit)
    try:
        async with asyncio.timeout(limit * 2):
            await client.ping()
    except TimeoutError:
        error = f"{redact_url(url)} did not answer within {limit:g} s"
        return fail("data", subject, error, redis_fix(error, key))
    except (RedisError, OSError) as e:
        error = f"{redact_url(url)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        return fail("data", subject, error, redis_fix(error, key))
    finally:
        await client.aclose()
    return ok("data", subject, f"data Redis {redact_url(url)} answers")


def _subject(colour: Colour, host: HostConfig, hosts: int) -> str:
    return colour.value if hosts == 1 else f"{colour.value}/{host.name}"


async def _host(pool: SshPool, subject: str, host: HostConfig) -> list[Check]:
    paths = list(host.data.sqlite)
    command = shlex.join(["python3", "-c", _SCRIPT, *paths])
    try:
        result = await pool.run(host, command, timeout=15.0)
    except ConsoleError as e:
        return [fail("data", subject, f"SQLite files not checked: {e}", "see the ssh check")]
    if result.exit_status != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return [
            warn(
                "data",
                subject,
                f"SQLite files not checked: python3 on the host failed ({last})",
                "install python3 on the host (migrations need it too)",
            )
        ]
    try:
        found: dict[str, dict[str, object]] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [fail("data", subject, "SQLite check printed no result", "run doctor again")]
    checks: list[Check] = []
    for path in paths:
        info = found.get(path, {})
        error = info.get("error")
        if error is not None:
            checks.append(
                fail(
                    "data",
                    subject,
                    f"{path}: cannot open it read-only: {error}",
                    "correct data.sqlite, or make the file readable by the ssh user",
                )
            )
            continue
        tables = info.get("tables")
        keys: dict[str, str | None] = tables if isinstance(tables, dict) else {}
        keyless = sorted(t for t, key in keys.items() if key is None)
        if keyless:
            checks.append(
                warn(
                    "data",
                    subject,
                    f"{path}: table(s) {', '.join(keyless)} have no primary key and no unique "
                    "NOT NULL key: rows migrations match them as whole rows (an updated row "
                    "looks new, duplicates are ambiguous)",
                    "add a primary key (or a unique NOT NULL column) to those tables",
                )
            )
        else:
            n = len(keys)
            checks.append(
                ok("data", subject, f"{path}: {n} table{'s' if n != 1 else ''}, each with a key")
            )
    return checks
