"""``bgconsole migrate`` as a real subprocess against real sshd, SQLite and redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from migrate_support import APP, config_data, content, count, make_db, rows, write_config
from servers import RedisServer, SshServer

from console.core.control import ControlPlane
from console.core.models import Colour
from console.demo.sandbox import Sandbox

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(
    ssh_server: SshServer, redis_server: RedisServer, tmp_path: Path
) -> tuple[Path, Path, Path]:
    """(config path, blue db, green db) with green holding three rows blue lacks."""
    (tmp_path / "blue").mkdir()
    (tmp_path / "green").mkdir()
    blue_db, green_db = tmp_path / "blue" / "app.db", tmp_path / "green" / "app.db"
    make_db(blue_db, [(1, "a", "blue")])
    make_db(green_db, [(1, "a", "blue"), (2, "b", "green"), (3, "c", "green"), (4, "d", "green")])
    path = tmp_path / "bg.toml"
    write_config(path, config_data(ssh_server, redis_server.url, blue_db, green_db))
    return path, blue_db, green_db


async def bgconsole(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dry_run_then_migrate_text_and_json(setup: tuple[Path, Path, Path]) -> None:
    path, blue_db, green_db = setup
    code, out, err = await bgconsole("migrate", "--from", "green", "--to", "blue", "--dry-run",
                                     "--table", "uploads", "-c", str(path))  # fmt: skip
    assert code == 0, err
    assert "uploads" in out
    assert "rows dry run green -> blue: ok; 3 to copy, 0 conflicting" in out
    assert count(blue_db, "uploads") == 1
    code, out, err = await bgconsole("migrate", "--from", "green", "--to", "blue", "--json",
                                     "-c", str(path))  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["copied"] == 3
    assert all(item["verified"] for item in report["items"])
    assert rows(blue_db, "uploads") == rows(green_db, "uploads")
    assert "apply: " in err  # plain progress lines when not on a terminal


async def test_live_target_refused_without_yes(
    setup: tuple[Path, Path, Path], redis_server: RedisServer
) -> None:
    path, blue_db, _ = setup
    control = ControlPlane(redis_server.url, APP)
    try:
        await control.ensure_active(Colour.BLUE)
    finally:
        await control.aclose()
    code, _, err = await bgconsole("migrate", "--from", "green", "--to", "blue", "-c", str(path))
    assert code == 2
    assert err.strip().splitlines() == [
        "bgconsole: blue is live: migrating into it needs confirmation; pass --yes in scripts"
    ]
    assert count(blue_db, "uploads") == 1
    code, _, err = await bgconsole(
        "migrate", "--from", "green", "--to", "blue", "--yes", "-c", str(path)
    )
    assert code == 0, err
    assert count(blue_db, "uploads") == 4


async def test_bad_input_is_one_line(setup: tuple[Path, Path, Path]) -> None:
    path, _, _ = setup
    code, _, err = await bgconsole("migrate", "--from", "green", "--to", "purple", "-c", str(path))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--to" in err
    code, _, err = await bgconsole("migrate", "--from", "green", "--to", "blue", "--table", "nope",
                                   "-c", str(path))  # fmt: skip
    assert code == 1
    assert err.strip().splitlines() == [
        f"bgconsole: {Colour.GREEN.value}:{setup[2]}: inspect failed: no table nope"
    ]


async def test_conflict_exit_status(setup: tuple[Path, Path, Path]) -> None:
    path, blue_db, _ = setup
    with contextlib.closing(sqlite3.connect(blue_db)) as db, db:
        db.execute("INSERT INTO uploads (id, name, colour) VALUES (2, 'mine', 'blue')")
    code, out, err = await bgconsole("migrate", "--from", "green", "--to", "blue", "-c", str(path))
    assert code == 1
    assert "conflicts in blue:" in out, err
    assert "[2]" in out
    assert "left as they are" in err
    assert count(blue_db, "uploads") == 4  # 3 and 4 copied; 2 kept as blue's


async def test_ctrl_c_mid_migration(setup: tuple[Path, Path, Path]) -> None:
    path, blue_db, green_db = setup
    with contextlib.closing(sqlite3.connect(green_db)) as db, db:
        db.executemany(
            "INSERT INTO notes (body, n) VALUES (?, ?)", [(f"n{i}", i) for i in range(3000)]
        )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "migrate", "--from", "green", "--to", "blue",
        "--table", "notes", "--throttle", "0.005", "-c", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, "migration ended before the apply started"
        if line.startswith(b"apply:"):
            break
    await asyncio.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert "migration cancelled" in err.decode()
    # Committed slices stay; nothing is committed once the client has gone.
    partial = count(blue_db, "notes")
    await asyncio.sleep(1.0)
    assert count(blue_db, "notes") == partial < 3000
    code, out, err2 = await bgconsole("migrate", "--from", "green", "--to", "blue", "--table",
                                      "notes", "--json", "-c", str(path))  # fmt: skip
    assert code == 0, err2
    report = json.loads(out)
    assert report["copied"] == 3000 - partial  # whole-row identity: each row exactly once
    assert count(blue_db, "notes") == 3000


def host_processes(marker: str) -> list[int]:
    """Every process on this machine whose command line mentions ``marker``: a remote
    command whose wrapper died is re-parented to PID 1, so only a full scan finds it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


async def no_host_processes(marker: str, within: float = 6.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while host_processes(marker):
        assert asyncio.get_running_loop().time() < deadline, (
            f"host-side processes outlived their client: {host_processes(marker)}"
        )
        await asyncio.sleep(0.1)


async def test_sigkill_at_random_points_then_the_rerun_copies_each_row_once(
    setup: tuple[Path, Path, Path], redis_server: RedisServer
) -> None:
    path, blue_db, green_db = setup
    with contextlib.closing(sqlite3.connect(green_db)) as db, db:
        # No key and duplicates (each row three times): the multiset identity.
        db.executemany("INSERT INTO notes (body, n) VALUES (?, ?)",
                       [(f"n{i % 400}", i % 400) for i in range(1200)])  # fmt: skip
    work = str(blue_db.parent.parent / "work")
    control = ControlPlane(redis_server.url, APP)
    rng = random.Random(12)
    try:
        for _ in range(3):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "console", "migrate", "--from", "green", "--to", "blue",
                "--throttle", "0.002", "-c", str(path),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=REPO,
            )  # fmt: skip
            await asyncio.sleep(rng.uniform(0.5, 4.0))
            proc.kill()
            await proc.wait()
            await no_host_processes(work)
            with contextlib.closing(sqlite3.connect(blue_db)) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            # Only rows of the source ever arrive (no half rows, nothing twice).
            assert Counter(content(blue_db, "notes")) <= Counter(content(green_db, "notes"))
            # The killed run's lock is visibly stale (holder named) until it expires;
            # expire it now rather than wait its TTL.
            lock = await control.lock_info("migrate")
            if lock is not None:
                assert lock.holder
                expiry = aioredis.Redis.from_url(redis_server.url)
                try:
                    await expiry.pexpire(f"bg:{APP}:lock:migrate", 1)
                finally:
                    await expiry.aclose()
                await asyncio.sleep(0.05)
        before = count(blue_db, "notes")
        code, out, err = await bgconsole("migrate", "--from", "green", "--to", "blue", "--json",
                                         "-c", str(path))  # fmt: skip
        assert code == 0, err
        report = json.loads(out)
        notes = next(i for i in report["items"] if i["item"].endswith(" notes"))
        assert notes["copied"] == 1200 - before
        assert content(blue_db, "notes") == content(green_db, "notes")
        assert rows(blue_db, "uploads", "id")[1:] == rows(green_db, "uploads", "id")[1:]
    finally:
        await control.aclose()


async def test_demo_sandbox_uploads_on_green_come_back_to_blue(tmp_path: Path) -> None:
    """The demo's story: uploads written while green was live end up on blue's page."""
    async with Sandbox(tmp_path / "sandbox", traffic=False) as sandbox:
        green, blue = sandbox.hosts["green"], sandbox.hosts["blue"]
        async with httpx.AsyncClient(timeout=5.0) as client:
            # Both colours took writes (blue before the flip, green after): the merge must
            # keep both without conflicts, which the demo's per-colour id ranges make true.
            response = await client.post(f"{blue.url}/uploads", json={"name": "bird.png"})
            assert response.status_code < 300
            for name in ("cat.png", "dog.png"):
                response = await client.post(f"{green.url}/uploads", json={"name": name})
                assert response.status_code < 300
            code, out, err = await bgconsole("migrate", "--from", "green", "--to", "blue",
                                             "--yes", "-c", str(sandbox.config_path))  # fmt: skip
            assert code == 0, err
            assert "2 copied, 0 conflicting" in out
            page = (await client.get(f"{blue.url}/")).text
        assert "cat.png" in page
        assert "dog.png" in page
        assert "bird.png" in page


async def test_mirror_setup_lag_teardown_verbs(setup: tuple[Path, Path, Path]) -> None:
    path, _, green_db = setup
    base = ("migrate", "mirror", "--from", "green", "--to", "blue", "-c", str(path))
    code, out, err = await bgconsole(*base, "--lag")
    assert code == 0, err
    assert out.strip() == "mirror: change capture not set up"
    code, out, err = await bgconsole(*base, "--setup")
    assert code == 0, err
    assert out.strip() == "change capture installed on 2 table(s) of green"
    with contextlib.closing(sqlite3.connect(green_db)) as db, db:
        db.execute("INSERT INTO notes VALUES ('late', 4)")
    code, out, err = await bgconsole(*base, "--lag", "--json")
    assert code == 0, err
    assert json.loads(out)["pending"] == 1
    # status shows the mirror and that it is behind: the go/no-go before a switch.
    _, out, err = await bgconsole("status", "--json", "-c", str(path))
    report = json.loads(out)
    assert (
        report["control"]["mirror"]
        == "green -> blue: mirror: 1 change(s) behind, "
        + (report["control"]["mirror"].rsplit(", ", 1)[1])
    )
    assert report["control"]["mirror_behind"] is True
    code, out, err = await bgconsole(*base, "--teardown")
    assert code == 0, err
    assert out.startswith("change capture removed")
    _, out, err = await bgconsole("status", "--json", "-c", str(path))
    assert json.loads(out)["control"]["mirror"] is None
    code, _, err = await bgconsole("migrate", "--from", "green", "--to", "blue", "--setup",
                                   "-c", str(path))  # fmt: skip
    assert code == 2
    assert "mirror strategy only" in err
