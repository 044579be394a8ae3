"""A newcomer's first minute: ``./scripts/demo`` from a fresh copy to the first full frame.

Exports the repository's HEAD commit into a temp dir (no ``.venv``), then runs
``./scripts/demo`` there in a detached tmux session, twice:

- **cold**: no virtualenv yet, so it creates one and installs bgconsole (pip's download
  cache is used as on any machine that installed Python packages before);
- **warm**: the same copy again; the install stamp is current, so nothing is installed.

Each run is timed from launching the command to the first *complete* dashboard on the
terminal, read with ``tmux capture-pane`` every 20 ms: the live colour in the header, the
router's colour, the agent's heartbeat, both colours' probes and both colours' flags. The
console is then quit with ``q`` and the run must exit (the sandbox stops and cleans up).

    .venv/bin/python bench/first_minute.py [--size 120x35] [--warm-runs 3]

Needs tmux and redis-server (or the ``demo`` extra's bundled one).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLD_TARGET = 30.0
WARM_TARGET = 3.0
_POLL = 0.02
_TIMEOUT = 120.0
_EXITED = "__first_minute_exit__"


@dataclass(frozen=True, slots=True)
class Run:
    """One start: seconds to the first complete frame, and that frame."""

    label: str
    seconds: float
    frame: str


def complete(frame: str) -> bool:
    """Whether a captured screen is a complete dashboard (every panel has real data).

    Any one of these still missing means the newcomer is looking at a partial screen:
    the header before the first status, a panel before its first probe, flags before
    their first read, or an agent that has not heartbeated yet.
    """
    wanted = ("LIVE BLUE", "♥", "hosts up", "uploads")
    missing_data = ("connecting…", "waiting for the first probe", "NO AGENT")
    return (
        all(w in frame for w in wanted)
        and re.search(r"router (builtin )?→ BLUE", frame) is not None  # narrow: no kind
        and frame.count("hosts up") >= 2
        and frame.count("uploads") >= 2
        and not any(m in frame for m in missing_data)
    )


class Tmux:
    """A private tmux server (its own socket name), killed on close."""

    def __init__(self, name: str) -> None:
        self.name = name
        # A session that outlives the runs, so killing a run's session never stops the
        # server while the next run's new-session connects to it.
        self.run("new-session", "-d", "-s", "keep", "sleep 86400")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.name, *args],
            capture_output=True,
            text=True,
            check=check,
            env=clean_env(),  # the server (started by the first call) passes it on
        )

    def capture(self, history: int = 0) -> str:
        """The visible screen, with ``history`` lines of scrollback before it."""
        return self.run(
            "capture-pane", "-p", "-t", "bench", "-S", str(-history), check=False
        ).stdout

    def close(self) -> None:
        self.run("kill-server", check=False)


def copy_repo(target: Path) -> None:
    """The committed tree (what a fresh clone has): never the working tree's edits."""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def clean_env() -> dict[str, str]:
    """The environment of a newcomer's shell: no venv of ours, no config of ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "BGCONSOLE_CONFIG")}
    venv_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.pop("TMUX", None)
    return env


def start_once(tmux: Tmux, workdir: Path, label: str, size: tuple[int, int]) -> Run:
    """Launch ./scripts/demo, wait for the first complete frame, quit, wait for the exit."""
    # Textual draws on stderr, so neither stream can be redirected. The shell stays after
    # the demo ends, printing its exit status, so a failed start leaves its error on the
    # screen for the report.
    command = f"./scripts/demo; echo {_EXITED} $?; sleep 3600"
    started = time.perf_counter()
    tmux.run(
        "new-session", "-d", "-s", "bench", "-x", str(size[0]), "-y", str(size[1]),
        "-c", str(workdir), command,
    )  # fmt: skip
    try:
        frame = ""
        while not complete(frame):
            elapsed = time.perf_counter() - started
            if elapsed > _TIMEOUT or _EXITED in frame:
                raise SystemExit(
                    f"bench: {label}: no complete frame after {elapsed:.1f} s\n{tmux.capture(50)}"
                )
            time.sleep(_POLL)
            frame = tmux.capture()
        seconds = time.perf_counter() - started
        tmux.run("send-keys", "-t", "bench", "q")
        deadline = time.monotonic() + 30
        while f"{_EXITED} 0" not in (screen := tmux.capture()):
            if time.monotonic() > deadline or _EXITED in screen:
                raise SystemExit(f"bench: {label}: the demo did not exit cleanly after q\n{screen}")
            time.sleep(0.1)
    finally:
        tmux.run("kill-session", "-t", "bench", check=False)
    return Run(label, seconds, frame)


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=parse_size, default=(120, 35), help="terminal WxH")
    parser.add_argument("--warm-runs", type=int, default=3, help="warm starts to time")
    parser.add_argument("--show-frame", action="store_true", help="print the first full frame")
    parser.add_argument(
        "--here", action="store_true", help="warm starts of this checkout only (no copy, no cold)"
    )
    args = parser.parse_args(argv)
    if shutil.which("tmux") is None:
        sys.exit("bench: tmux not installed (apt-get install tmux)")

    load_before = _load()
    root = Path(tempfile.mkdtemp(prefix="bgfm"))
    tmux = Tmux(f"bgfm{os.getpid()}")
    cold: Run | None = None
    try:
        workdir = REPO if args.here else root / "bgconsole"
        if not args.here:
            copy_repo(workdir)
            cold = start_once(tmux, workdir, "cold", args.size)
        warm = [start_once(tmux, workdir, f"warm{i}", args.size) for i in range(args.warm_runs)]
    finally:
        tmux.close()
        shutil.rmtree(root, ignore_errors=True)

    if args.show_frame:
        print(warm[-1].frame)
    median = statistics.median(r.seconds for r in warm)
    print(f"first minute: ./scripts/demo to the first complete dashboard ({args.size[0]}x"
          f"{args.size[1]}, tmux)")  # fmt: skip
    print(f"load average before / after: {load_before} / {_load()} (figures grow with the load)")
    print("| start | measured | target | result |")
    print("|---|---|---|---|")
    if cold is not None:
        print(_row("cold (new venv + pip install)", cold.seconds, COLD_TARGET))
    runs = ", ".join(f"{r.seconds:.2f}" for r in warm)
    print(_row(f"warm, median of {len(warm)} ({runs})", median, WARM_TARGET))
    return 0


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _row(what: str, seconds: float, target: float) -> str:
    verdict = "met" if seconds <= target else "MISSED"
    return f"| {what} | {seconds:.2f} s | ≤ {target:.0f} s | {verdict} |"


if __name__ == "__main__":
    sys.exit(main())
