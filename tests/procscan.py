"""Find processes anywhere on this machine by a unique argument.

A remote command whose wrapper dies is re-parented to PID 1 (or a subreaper), so a leak
test that searched only sshd's descendants would pass while leaking: scan every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from pathlib import Path


def unique_marker(prefix: str = "bgtest") -> str:
    """An argument no other process on the machine has (other tests run in parallel)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def processes_with(needle: str) -> list[int]:
    """PIDs of every live process on the machine whose command line contains ``needle``.

    Zombies (already dead, waiting to be reaped) do not count: they run nothing.
    """
    found = []
    own = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle.encode() in cmdline.replace(b"\0", b" "):
            found.append(int(entry.name))
    return found


async def gone(needle: str, within: float = 5.0) -> bool:
    """Whether every process carrying ``needle`` ends within ``within`` seconds."""
    deadline = time.monotonic() + within
    while processes_with(needle):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def appears(needle: str, within: float = 5.0) -> bool:
    """Whether a process carrying ``needle`` runs within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not processes_with(needle):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def describe(needle: str) -> str:
    """The leftover processes, for an assertion message."""
    rows = []
    for pid in processes_with(needle):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1]
        except OSError:
            continue
        rows.append(f"pid {pid} (parent {ppid}): {cmd.strip()}")
    return "; ".join(rows) or "none"


def kill_leftovers(needle: str) -> None:
    """SIGKILL what a failed test left: the processes carrying ``needle`` and their children."""
    for pid in processes_with(needle):
        for victim in [*_children_of(pid), pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.extend([*_children_of(int(entry.name)), int(entry.name)])
    return found
