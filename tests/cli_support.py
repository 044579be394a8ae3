"""Running ``bgconsole`` as a user would: a subprocess of this checkout, no terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bgconsole(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m console ARGS`` from the repository root; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
